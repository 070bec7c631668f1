"""The `evaluate` stage's work: every model on the test split, its reports, the comparison, and
what goes to MLflow (test metrics on each training run, version tags, ``@candidate`` and
``@champion``).

Per model (:func:`evaluate_model`): calibrated predictions (the temperature its ``register``
stage fitted on the validation split), sklearn's report, patient-bootstrap intervals
(:mod:`cxr.report.evaluation`), ECE and Brier score before and after calibration, and the test
numbers at its operating point. Across models (:func:`write_comparison`): the comparison table,
McNemar tests, the selection and release gate, the figures, headline.json and metrics.json, written
into one staging folder that the caller moves into place as a set.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np
import pandas as pd

from cxr.core import figures, tracking
from cxr.core.config import Config
from cxr.core.outputs import write_csv, write_json, write_text
from cxr.core.spec import ModelSpec
from cxr.report import calibration, evaluation, mcnemar, operating_point, release

FINETUNED = "finetuned"  # the fine-tuned model's folder under models/


@dataclass
class ModelResult:
    """One model's test results: ``table`` one row per test image (actual, predicted, calibrated
    p_<class>); ``report`` :func:`cxr.report.evaluation.report`'s dict; ``intervals`` the bootstrap's;
    ``metrics`` the comparison row's numbers (NaN as None), what metrics.json holds; ``assessment``
    what its ``register`` stage wrote (calibration, operating point, validation, release gate);
    ``calibration`` the test ECE and Brier score before and after, with intervals, and the reliability
    tables; ``operating_point`` the threshold with its test numbers."""

    name: str
    spec: ModelSpec
    table: pd.DataFrame
    report: dict
    intervals: dict
    row: dict
    metrics: dict[str, float | None]
    assessment: dict
    calibration: dict
    operating_point: dict


def calibration_on_test(raw: np.ndarray, calibrated: np.ndarray, table: pd.DataFrame, classes, config: Config) -> dict:
    """ECE and Brier score of the softmax output (``raw``) and the calibrated one on the test images
    of ``table``, with patient-bootstrap intervals, and both reliability tables: ``{"intervals":
    {ece_softmax, ece, brier_softmax, brier: interval dict}, "reliability": {"softmax", "calibrated"}}``."""
    actual = table["actual"].map(classes.index).to_numpy()

    def statistics(rows: pd.DataFrame) -> dict[str, float]:
        index = rows.index.to_numpy()
        before = calibration.scores(raw[index], actual[index])
        after = calibration.scores(calibrated[index], actual[index])
        return {
            "ece_softmax": before["ece"],
            "ece": after["ece"],
            "brier_softmax": before["brier"],
            "brier": after["brier"],
        }

    return {
        "intervals": evaluation.bootstrap(
            table, statistics, resamples=config.evaluate.bootstrap_resamples, seed=config.evaluate.bootstrap_seed
        ),
        "reliability": {
            "softmax": calibration.reliability(raw, actual),
            "calibrated": calibration.reliability(calibrated, actual),
        },
    }


def evaluate_model(
    name: str, model: keras.Model, spec: ModelSpec, test: pd.DataFrame, assessment: dict, config: Config
) -> ModelResult:
    """Predict, calibrate and measure one model on the test split.

    ``test`` (the split's test rows) is predicted with ``model``, the probabilities calibrated with
    the temperature in ``assessment`` (its ``reports/register/<name>.json``) and measured, at its
    operating point too; intervals are from a bootstrap over patients.

    Parameters
    ----------
    name : str
        The model's name (its folder).
    model : keras.Model
        The model.
    spec : ModelSpec
        What it is (classes, input size).
    test : pandas.DataFrame
        The test rows of the split.
    assessment : dict
        Its ``register`` stage's result (:func:`cxr.serve.register.assess`).
    config : Config
        The configuration (``train``, ``evaluate``).

    Returns
    -------
    ModelResult
        The predictions table, report, intervals, comparison row, metrics, assessment, calibration
        scores and operating point.
    """
    classes = spec.classes
    raw = np.asarray(evaluation.predict(model, test, classes, spec.image_size, config.train), dtype=np.float64)
    calibrated = calibration.apply_temperature(raw, assessment["calibration"]["temperature"])
    table = evaluation.predictions_frame(test, classes, calibrated)
    report = evaluation.report(table, classes)
    intervals = evaluation.patient_bootstrap(
        table, classes, resamples=config.evaluate.bootstrap_resamples, seed=config.evaluate.bootstrap_seed
    )
    calibrated_scores = calibration_on_test(raw, calibrated, table, classes, config)
    row = evaluation.comparison_row(name, report, intervals | calibrated_scores["intervals"], classes)
    metrics = {
        key: None if value != value else value for key, value in row.items() if key not in ("model", "never_predicted")
    }
    point = operating_point.measure(assessment["operating_point"], table)
    return ModelResult(name, spec, table, report, intervals, row, metrics, assessment, calibrated_scores, point)


def write_model_reports(result: ModelResult, staging: Path) -> None:
    """Write one model's reports under ``staging``.

    ``models/<name>/`` (predictions.csv, report.json/.txt, confusion.png, roc.png, reliability.png),
    ``confusion/<name>.csv``, ``roc/<name>.csv`` and ``reliability/<name>.csv`` (the DVC plots' rows).

    Parameters
    ----------
    result : ModelResult
        The model's test results.
    staging : Path
        The folder to write to.

    Raises
    ------
    OSError
        When a file cannot be written.
    """
    classes, name = result.spec.classes, result.name
    folder = staging / "models" / name
    write_csv(folder / "predictions.csv", result.table)
    reliability = result.calibration["reliability"]
    write_json(
        folder / "report.json",
        result.report
        | {
            "intervals": result.intervals,
            "calibration": {
                "method": result.assessment["calibration"]["method"],
                "temperature": result.assessment["calibration"]["temperature"],
                "ece_bins": calibration.ECE_BINS,
                "test": result.calibration["intervals"],
                "validation": result.assessment["calibration"]["validation"],
            },
            "operating_point": result.operating_point,
            "validation": result.assessment["validation"],
            "release": result.assessment["release"],
        },
    )
    write_text(folder / "report.txt", evaluation.report_text(result.table, classes))
    figures.confusion(result.report["confusion_matrix"]["matrix"], classes, name).savefig(folder / "confusion.png")
    figures.roc(result.table, classes, result.report["roc_auc"], name).savefig(folder / "roc.png")
    figures.reliability(reliability, f"{name}: test split").savefig(folder / "reliability.png")
    write_csv(staging / "confusion" / f"{name}.csv", result.table[["actual", "predicted"]])
    positive = result.assessment["operating_point"]["positive_class"]
    write_csv(staging / "roc" / f"{name}.csv", operating_point.roc_table(result.table, positive))
    calibrated = reliability["calibrated"]
    write_csv(
        staging / "reliability" / f"{name}.csv",
        calibrated[calibrated["images"] > 0][["confidence", "accuracy", "images"]],
    )


def selection(results: list[ModelResult], select_by: str) -> dict:
    """:func:`cxr.report.release.rank` of the evaluated models; a fine-tuned model that fine-tuning
    left unchanged does not compete (it is its base)."""
    return release.rank(
        {
            result.name: {
                "validation": result.assessment["validation"],
                "release": result.assessment["release"],
                "competes": not (result.name == FINETUNED and result.spec.unchanged_from_base),
            }
            for result in results
        },
        select_by,
    )


def calibration_markdown(results: list[ModelResult]) -> list[str]:
    """comparison.md's calibration section: per model the temperature, and the test ECE and Brier
    score of the softmax output and of the calibrated one, with intervals."""
    lines = [
        "## Calibration",
        "",
        f"Temperature scaling fitted on the validation split; test ECE (top-label, {calibration.ECE_BINS} equal-width "
        "bins; 0 is perfect) and Brier score (0 is perfect, 2 the worst) before and after, with 95% patient-bootstrap "
        "intervals. T > 1 softens an over-confident model.",
        "",
        "| model | temperature | ECE softmax | ECE calibrated | Brier softmax | Brier calibrated | n |",
        "|---|---|---|---|---|---|---|",
    ]
    for result in results:
        values = evaluation.flat_intervals(result.calibration["intervals"])
        cells = [evaluation.interval_text(values, key) for key in ("ece_softmax", "ece", "brier_softmax", "brier")]
        temperature = result.assessment["calibration"]["temperature"]
        lines.append(f"| {result.name} | {temperature:.2f} | " + " | ".join(cells) + f" | {len(result.table)} |")
    return lines


def selection_markdown(results: list[ModelResult], chosen: dict) -> list[str]:
    """comparison.md's release section: the ranking on validation, each model's gate, the aliases."""
    by_name = {result.name: result for result in results}
    lines = [
        "## Release",
        "",
        f"Models ranked by validation {chosen['select_by']} (`release.select_by`); test numbers are not used to "
        "choose. @candidate is the first; @champion the first that passes the release gate (`release` in "
        "params.yaml), which judges the shortcut audit.",
        "",
        f"| rank | model | validation {chosen['select_by']} | release gate |",
        "|---|---|---|---|",
    ]
    for rank, name in enumerate(chosen["ranking"], start=1):
        result = by_name[name]
        value = result.assessment["validation"][chosen["select_by"]]
        lines.append(f"| {rank} | {name} | {value:.3f} | {result.assessment['release']['summary']} |")
    for result in results:
        if result.name not in chosen["ranking"]:
            lines.append(f"| - | {result.name} | - | does not compete: fine-tuning left its base unchanged |")
    champion = chosen["champion"]
    lines += [
        "",
        f"@candidate: {chosen['candidate'] or 'none'}. @champion: "
        + (champion if champion else "none: no model passed the release gate, so none is released."),
    ]
    return lines


def write_comparison(
    results: list[ModelResult], histories: dict[str, pd.DataFrame], staging: Path, config: Config
) -> pd.DataFrame:
    """Write the comparison of every model under ``staging``.

    comparison.csv/.md/.png, mcnemar.csv (pairwise McNemar tests), training_curves.png,
    headline.json, metrics.json and release.json (the selection).

    Parameters
    ----------
    results : list of ModelResult
        Every model's test results.
    histories : dict of str to pandas.DataFrame
        Each model's training history (one row per epoch).
    staging : Path
        The folder to write to.
    config : Config
        The configuration (``sources.origin``, classes, ``release.select_by``).

    Returns
    -------
    pandas.DataFrame
        The comparison table, one row per model.

    Raises
    ------
    OSError
        When a file cannot be written.
    """
    comparison = pd.DataFrame([result.row for result in results])
    tests = mcnemar.pairwise_mcnemar({result.name: result.table for result in results})
    metrics = {result.name: result.metrics for result in results}
    note = tracking.SYNTHETIC_NOTE if config.sources.origin == "synthetic" else f"Data: {config.sources.origin}."
    write_csv(staging / "comparison.csv", comparison)
    write_csv(staging / "mcnemar.csv", tests)
    unchanged = {result.name: result.spec.finetuned_from for result in results if result.spec.unchanged_from_base}
    markdown = evaluation.comparison_markdown(comparison, config.class_names(), tests, note, unchanged)
    points = {result.name: result.operating_point for result in results}
    chosen = selection(results, config.release.select_by)
    sections = [operating_point.markdown(points), calibration_markdown(results), selection_markdown(results, chosen)]
    write_text(staging / "comparison.md", markdown + "".join("\n" + "\n".join(lines) + "\n" for lines in sections))
    write_json(staging / "release.json", chosen)
    figures.comparison_bars(comparison, ["accuracy", "macro_f1"]).savefig(staging / "comparison.png")
    figures.curves_side_by_side(histories).savefig(staging / "training_curves.png")
    write_json(staging / "headline.json", evaluation.lead_metrics(metrics, config.positive_class))
    write_json(staging / "metrics.json", metrics)
    return comparison
