"""DVC stage `cross_source`: the ${backbone} model on each test source, the cross-source matrix's row.

Scores the model trained on sources.use on the test split (in-distribution) and on each held-out
source of the external test set (sources.external): accuracy and the positive class's sensitivity
and specificity, with their counts. Writes reports/eval/cross_source.json (what `cxr-recipe
cross_source --report` gathers from the finished experiments) and logs the numbers to an MLflow run
`cross_source`.
"""

import mlflow
import pandas as pd

from cxr.core import runs, tracking
from cxr.core.config import load
from cxr.core.outputs import write_json
from cxr.core.schema import split_part
from cxr.core.stage import arguments, run
from cxr.learn import runtime
from cxr.learn.model_files import load_model
from cxr.report import cross_source, evaluation


def main() -> None:
    args = arguments(__doc__, "split", "external", "model", "out")
    config = load()
    tracking.require_tracking_store()
    runtime.configure_runtime(config.train, config.seed, workers=False)
    model, spec = load_model(args.model)
    test = split_part(pd.read_csv(args.split), "test").reset_index(drop=True)
    external = pd.read_csv(args.external)

    def predicted(rows: pd.DataFrame) -> pd.DataFrame:
        probabilities = evaluation.predict(model, rows, spec.classes, spec.image_size, config.train)
        return evaluation.predictions_frame(rows, spec.classes, probabilities)

    row = cross_source.scores(
        predicted(test),
        predicted(external) if not external.empty else external,
        trained_on=list(config.sources.use),
        positive=config.positive_class,
        seed=config.seed,
        backbone=config.backbone,
    )
    write_json(args.out, row)
    with runs.stage_run(config, "cross_source", args.split, config.backbone):
        mlflow.log_metrics(
            {
                f"{name}.{statistic}": entry[statistic]
                for name, entry in row["tests"].items()
                for statistic in cross_source.STATISTICS
                if entry[statistic] is not None
            }
        )
        mlflow.log_dict(row, "cross_source.json")
    print(cross_source.text(row))


if __name__ == "__main__":
    run(main)
