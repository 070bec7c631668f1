"""The `evaluate` stage's work: every model on the test split, its reports, the comparison, and
what goes to MLflow (test metrics on each training run, version tags, ``@champion``).

Per model (:func:`evaluate_model`): predictions, sklearn's report, patient-bootstrap intervals
(:mod:`cxr.report.evaluation`). Across models (:func:`write_comparison`): the comparison table,
McNemar tests, the figures and the two DVC metrics files, written into one staging folder that
the caller moves into place as a set.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import keras
import pandas as pd

from cxr.core import figures, registry, tracking
from cxr.core.config import Config
from cxr.core.outputs import write_csv, write_json, write_text
from cxr.core.spec import MODEL_FILE, ModelSpec
from cxr.report import evaluation, operating_point

RELEASE = "finetuned"  # the model folder registered as cxr-<task>, the release candidate


@dataclass
class ModelResult:
    """One model's test results: ``table`` one row per test image (actual, predicted, p_<class>);
    ``report`` :func:`cxr.report.evaluation.report`'s dict; ``intervals`` the bootstrap's;
    ``metrics`` the comparison row's numbers (NaN as None), what metrics.json holds."""

    name: str
    spec: ModelSpec
    table: pd.DataFrame
    report: dict
    intervals: dict
    row: dict
    metrics: dict[str, float | None]
    operating_point: dict


def evaluate_model(
    name: str, model: keras.Model, spec: ModelSpec, val: pd.DataFrame, test: pd.DataFrame, config: Config
) -> ModelResult:
    """Predict ``test`` (the split's test rows) with ``model`` and measure it; the operating point
    for ``positive_class`` is chosen on ``val`` (the validation rows)."""
    classes = spec.classes
    probabilities = evaluation.predict(model, test, classes, spec.image_size, config.train)
    table = evaluation.predictions_frame(test, classes, probabilities)
    val_table = evaluation.predictions_frame(
        val, classes, evaluation.predict(model, val, classes, spec.image_size, config.train)
    )
    point = operating_point.operating_point(
        val_table, table, config.positive_class, config.evaluate.operating_point, config.evaluate.target_sensitivity
    )
    report = evaluation.report(table, classes)
    intervals = evaluation.patient_bootstrap(
        table, classes, resamples=config.evaluate.bootstrap_resamples, seed=config.evaluate.bootstrap_seed
    )
    row = evaluation.comparison_row(name, report, intervals, classes)
    metrics = {
        key: None if value != value else value for key, value in row.items() if key not in ("model", "never_predicted")
    }
    return ModelResult(name, spec, table, report, intervals, row, metrics, point)


def write_model_reports(result: ModelResult, staging: Path) -> None:
    """``models/<name>/`` (predictions.csv, report.json/.txt, confusion.png, roc.png) and
    ``confusion/<name>.csv`` (the DVC confusion plot's rows) under ``staging``."""
    classes, name = result.spec.classes, result.name
    folder = staging / "models" / name
    write_csv(folder / "predictions.csv", result.table)
    write_json(
        folder / "report.json",
        result.report | {"intervals": result.intervals, "operating_point": result.operating_point},
    )
    write_text(folder / "report.txt", evaluation.report_text(result.table, classes))
    figures.confusion(result.report["confusion_matrix"]["matrix"], classes, name).savefig(folder / "confusion.png")
    figures.roc(result.table, classes, result.report["roc_auc"], name).savefig(folder / "roc.png")
    write_csv(staging / "confusion" / f"{name}.csv", result.table[["actual", "predicted"]])


def write_comparison(
    results: list[ModelResult], histories: dict[str, pd.DataFrame], staging: Path, config: Config
) -> pd.DataFrame:
    """comparison.csv/.md/.png, mcnemar.csv, training_curves.png, headline.json and metrics.json
    under ``staging``; returns the comparison table (one row per model)."""
    comparison = pd.DataFrame([result.row for result in results])
    tests = evaluation.pairwise_mcnemar({result.name: result.table for result in results})
    metrics = {result.name: result.metrics for result in results}
    note = tracking.SYNTHETIC_NOTE if config.sources.origin == "synthetic" else f"Data: {config.sources.origin}."
    write_csv(staging / "comparison.csv", comparison)
    write_csv(staging / "mcnemar.csv", tests)
    unchanged = {result.name: result.spec.finetuned_from for result in results if result.spec.unchanged_from_base}
    markdown = evaluation.comparison_markdown(comparison, config.class_names(), tests, note, unchanged)
    points = {result.name: result.operating_point for result in results}
    write_text(staging / "comparison.md", markdown + "\n" + "\n".join(operating_point.markdown(points)) + "\n")
    figures.comparison_bars(comparison, ["accuracy", "macro_f1"]).savefig(staging / "comparison.png")
    figures.curves_side_by_side(histories).savefig(staging / "training_curves.png")
    write_json(staging / "headline.json", evaluation.lead_metrics(metrics))
    write_json(staging / "metrics.json", metrics)
    return comparison


def log_to_training_runs(
    results: list[ModelResult], models: Path, reports: Path, config: Config, split_md5: str
) -> None:
    """Each model's test metrics and reports (``reports/models/<name>``) into the run that trained
    it, its registered version tagged with the lead statistics; the release candidate's version
    becomes ``@champion``. A model no run holds is named in a warning and skipped."""
    for result in results:
        name = result.name
        run_id = registry.find_model_run(config.task, models / name / MODEL_FILE)
        if run_id is None:
            print(
                f"warning: no MLflow run is tagged with the md5 of {models / name / MODEL_FILE}; "
                "its test metrics are in reports/eval only"
            )
            continue
        matrix = result.report["confusion_matrix"]
        confusion = pd.DataFrame(matrix["matrix"], columns=matrix["labels"], index=matrix["labels"])
        tracking.log_evaluation(
            run_id,
            {f"test_{key}": value for key, value in result.metrics.items()},
            reports / "models" / name,
            confusion.reset_index(names="actual"),
        )
        release = name == RELEASE
        version = registry.describe_version(
            registry.model_name(config.task, None if release else name),
            run_id,
            tags={
                f"test.{statistic}": evaluation.interval_text(result.metrics, statistic)
                for statistic in evaluation.LEAD_STATISTICS
            }
            | operating_point_tags(result.operating_point)
            | {"test.split_md5": split_md5},
            alias=registry.CHAMPION if release else None,
        )
        if release and version is not None:
            print(f"{registry.model_name(config.task)} version {version} is @{registry.CHAMPION}")


def operating_point_tags(point: dict) -> dict[str, str]:
    """Registry version tags of the operating point: its threshold and rule, and the test numbers
    at it as ``value [low, high] (n=...)``."""
    if point["threshold"] is None:
        return {"operating_point": f"none: no {point['positive_class']} image in the validation split"}
    rule = point["rule"] + (f" {point['target_sensitivity']:g}" if point["rule"] == "target_sensitivity" else "")
    return {
        "operating_point": f"p({point['positive_class']}) >= {point['threshold']:.4f} ({rule}, chosen on validation)",
        **{
            f"test.{key}_at_operating_point": operating_point.interval(point["test"][key])
            for key in ("sensitivity", "specificity", "ppv", "npv")
        },
    }
