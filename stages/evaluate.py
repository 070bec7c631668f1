"""DVC stage `evaluate`: every trained model on the test split, compared with uncertainty.

Writes reports/eval/models/<model>/ (predictions, classification report, confusion matrix and
ROC figures), reports/eval/confusion/<model>.csv (DVC confusion plots), the comparison table
(comparison.md/.csv/.png), McNemar tests (mcnemar.csv), all training curves side by side, and
two DVC metrics files: reports/eval/headline.json (accuracy and macro-F1 with intervals, what
`dvc exp show` leads with) and reports/eval/metrics.json (every statistic). Test metrics and
reports are added to each model's MLflow training run, and the headline to the pipeline's parent
run; one `evaluate` run holds the comparison. The evaluated release candidate becomes @champion.
"""

import mlflow
import pandas as pd

from cxr.core import figures, registry, runs, tracking
from cxr.core.config import load
from cxr.core.outputs import output_set, write_csv, write_json, write_text
from cxr.core.schema import split_part
from cxr.core.spec import HISTORY_FILE, MODEL_FILE
from cxr.core.stage import arguments, run
from cxr.learn.model_files import load_model
from cxr.report import evaluation


def main() -> None:
    args = arguments(__doc__, "split", "models", "out")
    config = load()
    tracking.require_tracking_store()
    out, models = args.out, args.models
    test = split_part(pd.read_csv(args.split), "test").reset_index(drop=True)
    names = [*config.backbones, "finetuned"]
    predictions, reports, rows, histories, metrics, specs = {}, {}, [], {}, {}, {}
    # Every report is written to a staging folder and moved into place together, or none is.
    with output_set(out) as staging:
        for name in names:
            model, spec = load_model(models / name)
            specs[name] = spec
            classes = spec.classes
            probabilities = evaluation.predict(model, test, classes, spec.image_size, config.train)
            table = evaluation.predictions_frame(test, classes, probabilities)
            report = evaluation.report(table, classes)
            intervals = evaluation.patient_bootstrap(
                table, classes, resamples=config.evaluate.bootstrap_resamples, seed=config.evaluate.bootstrap_seed
            )
            folder = staging / "models" / name
            write_csv(folder / "predictions.csv", table)
            write_json(folder / "report.json", report | {"intervals": intervals})
            write_text(folder / "report.txt", evaluation.report_text(table, classes))
            figures.confusion(report["confusion_matrix"]["matrix"], classes, name).savefig(folder / "confusion.png")
            figures.roc(table, classes, report["roc_auc"], name).savefig(folder / "roc.png")
            write_csv(staging / "confusion" / f"{name}.csv", table[["actual", "predicted"]])
            predictions[name], reports[name] = table, report
            histories[name] = pd.read_csv(models / name / HISTORY_FILE)
            rows.append(evaluation.comparison_row(name, report, intervals, classes))
            metrics[name] = {
                key: None if value != value else value
                for key, value in rows[-1].items()
                if key not in ("model", "never_predicted")
            }
        comparison = pd.DataFrame(rows)
        tests = evaluation.pairwise_mcnemar(predictions)
        note = tracking.SYNTHETIC_NOTE if config.sources.origin == "synthetic" else f"Data: {config.sources.origin}."
        write_csv(staging / "comparison.csv", comparison)
        write_csv(staging / "mcnemar.csv", tests)
        unchanged = {name: spec.finetuned_from for name, spec in specs.items() if spec.unchanged_from_base}
        write_text(
            staging / "comparison.md",
            evaluation.comparison_markdown(comparison, config.class_names(), tests, note, unchanged),
        )
        figures.comparison_bars(comparison, ["accuracy", "macro_f1"]).savefig(staging / "comparison.png")
        figures.curves_side_by_side(histories).savefig(staging / "training_curves.png")
        write_json(staging / "headline.json", evaluation.lead_metrics(metrics))
        write_json(staging / "metrics.json", metrics)

    split_md5 = tracking.file_md5(args.split)
    for name in names:
        run_id = registry.find_model_run(config.task, models / name / MODEL_FILE)
        if run_id is None:
            print(
                f"warning: no MLflow run is tagged with the md5 of {models / name / 'model.keras'}; "
                "its test metrics are in reports/eval only"
            )
            continue
        matrix = reports[name]["confusion_matrix"]
        confusion = pd.DataFrame(matrix["matrix"], columns=matrix["labels"], index=matrix["labels"])
        tracking.log_evaluation(
            run_id,
            {f"test_{key}": value for key, value in metrics[name].items()},
            out / "models" / name,
            confusion.reset_index(names="actual"),
        )
        release = name == "finetuned"
        version = registry.describe_version(
            registry.model_name(config.task, None if release else name),
            run_id,
            tags={
                f"test.{statistic}": evaluation.interval_text(metrics[name], statistic)
                for statistic in evaluation.LEAD_STATISTICS
            }
            | {"test.split_md5": split_md5},
            alias=registry.CHAMPION if release else None,
        )
        if release and version is not None:
            print(f"{registry.model_name(config.task)} version {version} is @{registry.CHAMPION}")
    with runs.stage_run(config, "evaluate", args.split, config.backbone):
        mlflow.log_metrics(
            {
                f"{name}.{key}": value
                for name, values in metrics.items()
                for key, value in values.items()
                if value is not None
            }
        )
        runs.log_headline_metrics(evaluation.lead_metrics(metrics))
        mlflow.log_table(comparison, "comparison.json")
        for artifact in ("comparison.md", "comparison.csv", "comparison.png", "mcnemar.csv", "training_curves.png"):
            mlflow.log_artifact(str(out / artifact))
    print((out / "comparison.md").read_text())


if __name__ == "__main__":
    run(main)
