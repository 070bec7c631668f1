"""Test-set evaluation: predictions, the study's reports, and the uncertainty it lacked.

With ~136 test images, 0.84 vs 0.86 accuracy is noise. Confidence intervals come from a
bootstrap over *patients* (images of one patient are not independent), and two models are
compared on the same images with McNemar's test.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats
from sklearn.metrics import classification_report, confusion_matrix, f1_score, roc_auc_score

from cxr.core.sections import Train
from cxr.report.metrics import shown

CI_LEVEL = 0.95


def predictions_frame(rows: pd.DataFrame, classes: list[str], probabilities: np.ndarray) -> pd.DataFrame:
    """One row per image, in the order of ``rows``: ids, actual and predicted class, probabilities.

    Parameters
    ----------
    rows, classes, probabilities
        The images (split-table rows); the classes in output order; the model's outputs (images, classes).

    Returns
    -------
    pandas.DataFrame
        ``image_id``, ``patient_id``, ``source``, ``actual``, ``predicted`` (most probable), ``p_<class>``.
    """
    frame = rows[["image_id", "patient_id", "source"]].reset_index(drop=True).copy()
    frame["actual"] = rows["class"].to_numpy()
    frame["predicted"] = np.asarray(classes)[np.argmax(probabilities, axis=1)]
    for index, name in enumerate(classes):
        frame[f"p_{name}"] = probabilities[:, index]
    return frame


def report(predictions: pd.DataFrame, classes: list[str]) -> dict:
    """sklearn's classification report plus confusion, sensitivity, PPV and one-vs-rest AUC.

    Classes a model never predicts have no defined precision (PPV); they count as 0 in the
    averages, as sklearn's ``zero_division=0`` does, and are listed under ``never_predicted``.
    """
    actual, predicted = predictions["actual"], predictions["predicted"]
    sklearn_report = classification_report(actual, predicted, labels=classes, output_dict=True, zero_division=0)
    matrix = confusion_matrix(actual, predicted, labels=classes)
    predicted_counts, actual_counts = matrix.sum(axis=0), matrix.sum(axis=1)
    return {
        "classification_report": sklearn_report,
        "accuracy": float((actual == predicted).mean()),
        "macro_f1": float(f1_score(actual, predicted, labels=classes, average="macro", zero_division=0)),
        "confusion_matrix": {"labels": classes, "matrix": matrix.tolist()},
        "sensitivity": {name: _ratio(matrix[i, i], actual_counts[i]) for i, name in enumerate(classes)},
        "ppv": {name: _ratio(matrix[i, i], predicted_counts[i]) for i, name in enumerate(classes)},
        "roc_auc": roc_auc(predictions, classes),
        "never_predicted": [name for i, name in enumerate(classes) if predicted_counts[i] == 0],
        "support": int(len(predictions)),
    }


def report_text(predictions: pd.DataFrame, classes: list[str]) -> str:
    return classification_report(
        predictions["actual"], predictions["predicted"], labels=classes, digits=3, zero_division=0
    )


def _ratio(numerator: int, denominator: int) -> float | None:
    return float(numerator / denominator) if denominator else None


def roc_auc(predictions: pd.DataFrame, classes: list[str]) -> dict[str, float | None]:
    """One-vs-rest ROC AUC per class; None when the test set lacks positives or negatives."""
    result = {}
    for name in classes:
        positive = (predictions["actual"] == name).to_numpy()
        result[name] = (
            float(roc_auc_score(positive, predictions[f"p_{name}"])) if 0 < positive.sum() < len(positive) else None
        )
    return result


def headline(predictions: pd.DataFrame, classes: list[str]) -> dict[str, float]:
    """The statistics that get confidence intervals: accuracy, macro F1, sensitivity and specificity
    per class (one class against the rest), and balanced accuracy (mean sensitivity over the classes
    present; chance is 1/classes)."""
    actual, predicted = predictions["actual"].to_numpy(), predictions["predicted"].to_numpy()
    values = {
        "accuracy": float((actual == predicted).mean()),
        "macro_f1": float(f1_score(actual, predicted, labels=classes, average="macro", zero_division=0)),
    }
    for name in classes:
        mask = actual == name
        values[f"sensitivity_{name}"] = float((predicted[mask] == name).mean()) if mask.any() else math.nan
        values[f"specificity_{name}"] = float((predicted[~mask] != name).mean()) if (~mask).any() else math.nan
    sensitivities = [values[f"sensitivity_{name}"] for name in classes if not math.isnan(values[f"sensitivity_{name}"])]
    values["balanced_accuracy"] = float(np.mean(sensitivities)) if sensitivities else math.nan
    return values


def bootstrap(predictions: pd.DataFrame, statistics, *, resamples: int, seed: int) -> dict:
    """95% percentile-bootstrap intervals over patients of ``statistics(rows) -> {name: value}``:
    ``{name: {"value", "low", "high", "method"}}``. Each resample draws as many patients as
    ``predictions`` holds (its ``patient_id`` column), with replacement, and takes all images of
    each drawn patient (images of one patient are not independent)."""
    groups = [group.index.to_numpy() for _, group in predictions.groupby("patient_id", sort=True)]
    rng = np.random.default_rng(seed)
    samples = []
    for _ in range(resamples):
        chosen = rng.integers(0, len(groups), len(groups))
        samples.append(statistics(predictions.loc[np.concatenate([groups[i] for i in chosen])]))
    table, alpha = pd.DataFrame(samples), (1 - CI_LEVEL) / 2
    return {
        name: {
            "value": value,
            "low": float(np.nanquantile(table[name], alpha)),
            "high": float(np.nanquantile(table[name], 1 - alpha)),
            "method": "patient bootstrap (percentile)",
        }
        for name, value in statistics(predictions).items()
    }


def patient_bootstrap(predictions: pd.DataFrame, classes: list[str], *, resamples: int, seed: int) -> dict:
    """95% intervals of :func:`headline`: ``{statistic: {"value", "low", "high", "method"}}``.

    :func:`bootstrap` over patients. A proportion (accuracy, sensitivity of a class) whose every
    resample gives the same value, as one at 0 or 1 does, would get a zero-width interval that
    reads as certainty: it gets the exact Clopper-Pearson interval on its images instead (Clopper &
    Pearson, Biometrika 1934; ``scipy.stats.binomtest(...).proportion_ci(method="exact")``), e.g.
    14 of 14 -> [0.77, 1.00]. ``method`` says which.
    """
    intervals = bootstrap(predictions, lambda rows: headline(rows, classes), resamples=resamples, seed=seed)
    counts = proportion_counts(predictions, classes)
    for name, interval in intervals.items():
        if interval["low"] == interval["high"] and name in counts and counts[name][1] > 0:
            exact = stats.binomtest(*counts[name]).proportion_ci(confidence_level=CI_LEVEL, method="exact")
            interval.update(
                low=float(exact.low), high=float(exact.high), method="Clopper-Pearson (bootstrap degenerate)"
            )
    return intervals


def proportion_counts(predictions: pd.DataFrame, classes: list[str]) -> dict[str, tuple[int, int]]:
    """(successes, trials) of the :func:`headline` statistics that are proportions of images:
    ``accuracy`` and ``sensitivity_<class>``."""
    actual, predicted = predictions["actual"].to_numpy(), predictions["predicted"].to_numpy()
    counts = {"accuracy": (int((actual == predicted).sum()), len(actual))}
    for name in classes:
        mask = actual == name
        counts[f"sensitivity_{name}"] = (int((predicted[mask] == name).sum()), int(mask.sum()))
    return counts


def predict(model, rows: pd.DataFrame, classes: list[str], size: int, params: Train, hidden=None) -> np.ndarray:
    """Class probabilities for ``rows``, in order, through the same input pipeline as training.

    Parameters
    ----------
    model, rows, classes, size, params, hidden
        The classifier; the images (split-table rows); the classes in output order; the input side in
        pixels; ``train`` (batch size, image cache); when given, the region to blank in each image
        (:class:`cxr.learn.lungs.HiddenRegion`).

    Returns
    -------
    numpy.ndarray
        Shape (images, classes), float32.
    """
    from cxr.learn import images

    dataset = images.image_dataset(
        rows, classes, size, params.cache, hidden, params.cache_memory_limit_mb, Path(params.cache_dir)
    )
    dataset = dataset.map(lambda image, label: image).batch(params.batch_size)
    return model.predict(dataset, verbose=0)


def flat_intervals(intervals: dict) -> dict:
    """``{stat: {value, low, high}}`` -> ``{stat, stat_low, stat_high}`` (table and metrics form)."""
    return {
        f"{statistic}{end}": interval[key]
        for statistic, interval in intervals.items()
        for end, key in (("", "value"), ("_low", "low"), ("_high", "high"))
    }


def interval_text(values, statistic: str) -> str:
    """``value [low, high]`` from flat statistics (a dict or a table row); ``-`` when missing."""
    value = values.get(statistic)
    if value is None or pd.isna(value):
        return "-"
    return f"{value:.2f} [{values[f'{statistic}_low']:.2f}, {values[f'{statistic}_high']:.2f}]"


def lead_metrics(metrics: dict[str, dict], positive_class: str) -> dict[str, dict]:
    """The registry's ``lead`` metrics (:mod:`cxr.report.metrics`) from every model's metrics: what
    ``dvc exp show`` and the pipeline's parent run show, rounded to three decimals.

    The values come first, then their 95% intervals' ends, so that a terminal too narrow for every
    column (``dvc exp show`` hides the middle ones) still shows each model's values.

    Parameters
    ----------
    metrics : dict of str to dict
        ``{model: metrics}`` (the comparison rows' numbers).
    positive_class : str
        The class whose sensitivity and specificity lead (``config.positive_class``).

    Returns
    -------
    dict of str to dict
        ``{model: {accuracy, macro_f1, sensitivity_<positive>, specificity_<positive>, accuracy_low,
        accuracy_high, macro_f1_low, ...}}`` (None where missing or undefined).
    """
    statistics = [key for key, _ in shown("lead", [positive_class])]
    keys = [*statistics, *(f"{statistic}{end}" for statistic in statistics for end in ("_low", "_high"))]
    return {model: {key: rounded(values.get(key)) for key in keys} for model, values in metrics.items()}


def rounded(value: float | None, digits: int = 3) -> float | None:
    """``value`` rounded for display; None for a missing or undefined (NaN) one."""
    return None if value is None or math.isnan(value) else round(float(value), digits)


def comparison_row(name: str, model_report: dict, intervals: dict, classes: list[str]) -> dict:
    """The study's table row for one model, with intervals and AUC."""
    row = {"model": name, **flat_intervals(intervals)}
    aucs = [value for value in model_report["roc_auc"].values() if value is not None]
    row["roc_auc_macro"] = float(np.mean(aucs)) if aucs else math.nan
    for name_ in classes:
        row[f"ppv_{name_}"] = model_report["ppv"][name_]
    row["never_predicted"] = ", ".join(model_report["never_predicted"])
    return row


def comparison_markdown(
    table: pd.DataFrame,
    classes: list[str],
    tests: pd.DataFrame,
    note: str,
    unchanged_from: dict[str, str] | None = None,
) -> str:
    """``comparison.md``: one row per model with 95% intervals, then the McNemar table.

    ``unchanged_from`` maps a model to the model whose weights it kept (a fine-tune whose best
    epoch was 0): its row is marked, so an identical model is not read as a second result.
    """
    unchanged_from = unchanged_from or {}
    columns = shown("table", classes)
    statistics = [key for key, _ in columns]
    header = ["model", *[label for _, label in columns], "ROC AUC (macro)"]
    lines = [
        "# Test-set comparison",
        "",
        note,
        "",
        "Values are point estimates with 95% intervals from a bootstrap over patients; a proportion every resample "
        "gives alike (0 or 1, or one patient) has the exact Clopper-Pearson interval on its images instead.",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
    ]
    for _, row in table.iterrows():
        name = row["model"] + (f" (= {unchanged_from[row['model']]})" if row["model"] in unchanged_from else "")
        cells = [name, *[interval_text(row, statistic) for statistic in statistics], f"{row['roc_auc_macro']:.2f}"]
        lines.append("| " + " | ".join(cells) + " |")
    for model, base in unchanged_from.items():
        lines += [
            "",
            f"{model}: no fine-tuning epoch improved on the validation loss of {base} (best epoch 0), so "
            f"{model} keeps {base}'s weights; its row repeats {base}'s, it is not a second result.",
        ]
    never = table[table["never_predicted"] != ""]
    if len(never):
        lines += [
            "",
            "Classes never predicted (precision undefined, counted as 0): "
            + "; ".join(f"{row['model']}: {row['never_predicted']}" for _, row in never.iterrows()),
        ]
    lines += [
        "",
        "## Paired comparisons (McNemar, same test images)",
        "",
        "| model A | model B | only A right | only B right | p-value | test |",
        "|---|---|---|---|---|---|",
    ]
    for _, test in tests.iterrows():
        lines.append(
            f"| {test['model_a']} | {test['model_b']} | {test['only_a_correct']} | "
            f"{test['only_b_correct']} | {test['p_value']:.3g} | {test['method']} |"
        )
    return "\n".join(lines) + "\n"
