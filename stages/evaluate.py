"""DVC stage `evaluate`: every trained model on the test split, compared with uncertainty.

Writes reports/eval/models/<model>/ (predictions, classification report, confusion matrix and
ROC figures), reports/eval/confusion/<model>.csv (DVC confusion plots), the comparison table
(comparison.md/.csv/.png), McNemar tests (mcnemar.csv), all training curves side by side, and
reports/eval/headline.json, the pipeline's one DVC metrics file (per model: accuracy, macro-F1, and
the positive class's sensitivity and specificity, then their intervals: what `dvc exp show`
compares), and reports/eval/metrics.json (every statistic). Test metrics and
reports are added to each model's MLflow training run, and the headline to the pipeline's parent
run; one `evaluate` run holds the comparison. Probabilities are calibrated with the temperature each
model's `register` stage fitted on the validation split (reports/register/<model>.json), and
comparison.md reports ECE and Brier before and after, the operating point, and the release: the
models ranked on validation, @candidate the first, @champion the first that passed the gate
(reports/eval/release.json).
"""

import json

import mlflow
import pandas as pd

from cxr.core import runs, tracking
from cxr.core.config import load
from cxr.core.outputs import output_set
from cxr.core.schema import split_part
from cxr.core.spec import HISTORY_FILE
from cxr.core.stage import arguments, run
from cxr.learn.model_files import load_model
from cxr.report import comparison, evaluation, mlflow_log


def main() -> None:
    args = arguments(__doc__, "split", "models", "register", "out")
    config = load()
    tracking.require_tracking_store()
    split = pd.read_csv(args.split)
    test = split_part(split, "test").reset_index(drop=True)
    results, histories = [], {}
    # Every report is written to a staging folder and moved into place together, or none is.
    with output_set(args.out) as staging:
        for name in [*config.backbones, comparison.FINETUNED]:
            model, spec = load_model(args.models / name)
            assessment = json.loads((args.register / f"{name}.json").read_text())
            results.append(comparison.evaluate_model(name, model, spec, test, assessment, config))
            comparison.write_model_reports(results[-1], staging)
            histories[name] = pd.read_csv(args.models / name / HISTORY_FILE)
        table = comparison.write_comparison(results, histories, staging, config)
    mlflow_log.log_to_training_runs(results, args.models, args.out, config, tracking.file_md5(args.split))
    metrics = {result.name: result.metrics for result in results}
    with runs.stage_run(config, "evaluate", args.split, config.backbone):
        runs.log_headline_metrics(evaluation.lead_metrics(metrics, config.positive_class))
        mlflow.log_table(table, "comparison.json")
        for artifact in ("comparison.md", "comparison.csv", "comparison.png", "mcnemar.csv", "training_curves.png"):
            mlflow.log_artifact(str(args.out / artifact))
    print((args.out / "comparison.md").read_text())


if __name__ == "__main__":
    run(main)
