"""The decision threshold for ``positive_class``: chosen on the validation split by a declared
rule, then measured on the test split (sensitivity, specificity, PPV, NPV with intervals).

A model's softmax output ranks images; a clinician-researcher acts on a yes/no. The threshold
on p(positive_class) is chosen where it may be (validation), never on the test split, and the
rule that chose it travels with every number measured at it.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from scipy import stats
from sklearn.metrics import roc_curve

from cxr.report.evaluation import CI_LEVEL

RULES = ("target_sensitivity", "youden")


def choose_threshold(scores: np.ndarray, positive: np.ndarray, rule: str, target: float) -> float | None:
    """The threshold t (decide positive when score >= t) that ``rule`` picks on these images.

    ``scores``: p(positive_class), shape (n,); ``positive``: bool (n,), the truth.
    ``target_sensitivity``: the highest t whose sensitivity reaches ``target`` (the k-th highest
    positive score, k = ceil(target * positives)). ``youden``: the t of sklearn's ROC curve that
    maximises sensitivity + specificity - 1 (Youden, Cancer 1950). None when the images hold no
    positive (or, for youden, no negative). Raises ValueError for another rule.
    """
    scores, positive = np.asarray(scores, float), np.asarray(positive, bool)
    if rule not in RULES:
        raise ValueError(f"operating point rule {rule!r}; known: {RULES}")
    if not positive.any() or (rule == "youden" and positive.all()):
        return None
    if rule == "target_sensitivity":
        ranked = np.sort(scores[positive])[::-1]
        # round() first: 0.55 * 100 is 55.000000000000007 in floating point, whose ceiling is 56.
        return float(ranked[math.ceil(round(target * len(ranked), 9)) - 1])
    false_positive_rate, true_positive_rate, thresholds = roc_curve(positive, scores)
    finite = np.isfinite(thresholds)
    best = np.argmax((true_positive_rate - false_positive_rate)[finite])
    return float(thresholds[finite][best])


def proportion(successes: int, trials: int) -> dict:
    """``{"value", "low", "high", "n"}``: successes / trials with its exact Clopper-Pearson 95%
    interval (scipy); value and bounds None when ``trials`` is 0."""
    if trials == 0:
        return {"value": None, "low": None, "high": None, "n": 0}
    interval = stats.binomtest(successes, trials).proportion_ci(confidence_level=CI_LEVEL, method="exact")
    return {"value": successes / trials, "low": float(interval.low), "high": float(interval.high), "n": trials}


def at_threshold(scores: np.ndarray, positive: np.ndarray, threshold: float) -> dict:
    """Sensitivity, specificity, PPV and NPV of deciding positive at ``scores >= threshold``, each
    :func:`proportion`'s dict (``n`` the images it rests on), plus the counts tp, fp, tn, fn."""
    decided, positive = np.asarray(scores) >= threshold, np.asarray(positive, bool)
    tp, fp = int((decided & positive).sum()), int((decided & ~positive).sum())
    tn, fn = int((~decided & ~positive).sum()), int((~decided & positive).sum())
    return {
        "sensitivity": proportion(tp, tp + fn),
        "specificity": proportion(tn, tn + fp),
        "ppv": proportion(tp, tp + fp),
        "npv": proportion(tn, tn + fn),
        "counts": {"tp": tp, "fp": fp, "tn": tn, "fn": fn},
    }


def choose(val: pd.DataFrame, positive_class: str, rule: str, target: float) -> dict:
    """The threshold for ``positive_class`` chosen on ``val`` (a prediction table: ``actual`` and
    ``p_<class>`` columns). Returns ``{"positive_class", "rule", "target_sensitivity", "threshold",
    "validation"}``, the last :func:`at_threshold`'s dict; ``threshold`` and ``validation`` None when
    the validation split holds no image of the class."""
    column, positive = f"p_{positive_class}", (val["actual"] == positive_class).to_numpy()
    threshold = choose_threshold(val[column].to_numpy(), positive, rule, target)
    result = {"positive_class": positive_class, "rule": rule, "target_sensitivity": target, "threshold": threshold}
    validation = None if threshold is None else at_threshold(val[column].to_numpy(), positive, threshold)
    return result | {"validation": validation}


def measure(point: dict, test: pd.DataFrame) -> dict:
    """``point`` (:func:`choose`'s dict) with ``"test"``: :func:`at_threshold` on ``test``, None
    without a threshold."""
    if point["threshold"] is None:
        return point | {"test": None}
    column = f"p_{point['positive_class']}"
    positive = (test["actual"] == point["positive_class"]).to_numpy()
    return point | {"test": at_threshold(test[column].to_numpy(), positive, point["threshold"])}


def interval(entry: dict) -> str:
    """``0.93 [0.80, 0.99] (n=14)``, or ``- (n=0)``."""
    if entry["value"] is None:
        return "- (n=0)"
    return f"{entry['value']:.2f} [{entry['low']:.2f}, {entry['high']:.2f}] (n={entry['n']})"


def markdown(points: dict[str, dict]) -> list[str]:
    """The comparison's section: one row per model, threshold and the four test numbers."""
    first = next(iter(points.values()))
    rule = (
        f"the highest threshold reaching sensitivity {first['target_sensitivity']:g} on validation"
        if first["rule"] == "target_sensitivity"
        else "Youden's J (sensitivity + specificity - 1) on validation"
    )
    lines = [
        f"## Operating point for {first['positive_class']}",
        "",
        f"Decide {first['positive_class']} when p({first['positive_class']}) >= threshold, the threshold chosen by "
        f"{rule} (`evaluate.operating_point`); test numbers at it, with exact 95% intervals and the images each "
        "rests on.",
        "",
        "| model | threshold | sensitivity | specificity | PPV | NPV |",
        "|---|---|---|---|---|---|",
    ]
    for name, point in points.items():
        if point["threshold"] is None:
            lines.append(f"| {name} | - (no {point['positive_class']} image in validation) | - | - | - | - |")
            continue
        test = point["test"]
        cells = [interval(test[key]) for key in ("sensitivity", "specificity", "ppv", "npv")]
        lines.append(f"| {name} | {point['threshold']:.3f} | " + " | ".join(cells) + " |")
    return lines


def tags(point: dict) -> dict[str, str]:
    """Registry version tags of the operating point: its threshold and rule, and the test numbers
    at it as ``value [low, high] (n=...)``."""
    if point["threshold"] is None:
        return {"operating_point": f"none: no {point['positive_class']} image in the validation split"}
    rule = point["rule"] + (f" {point['target_sensitivity']:g}" if point["rule"] == "target_sensitivity" else "")
    return {
        "operating_point": f"p({point['positive_class']}) >= {point['threshold']:.4f} ({rule}, chosen on validation)",
        **{
            f"test.{key}_at_operating_point": interval(point["test"][key])
            for key in ("sensitivity", "specificity", "ppv", "npv")
        },
    }


def roc_table(predictions: pd.DataFrame, positive: str) -> pd.DataFrame:
    """The ROC curve of class ``positive`` against the rest (sklearn's ``roc_curve``).

    Parameters
    ----------
    predictions : pandas.DataFrame
        One row per image: ``actual`` and ``p_<positive>`` (a probability).
    positive : str
        The positive class.

    Returns
    -------
    pandas.DataFrame
        One row per threshold: ``false_positive_rate`` (1 - specificity), ``sensitivity`` and
        ``threshold`` (the p(positive) at or above which an image is called positive; 1.0 for the
        curve's first point, where sklearn's is infinite). No rows when the test split holds only
        positive or only negative images (no curve is defined).
    """
    is_positive = predictions["actual"] == positive
    if is_positive.all() or not is_positive.any():  # a curve needs both positives and negatives
        return pd.DataFrame(columns=["false_positive_rate", "sensitivity", "threshold"], dtype=float)
    false_positive, sensitivity, thresholds = roc_curve(is_positive, predictions[f"p_{positive}"])
    return pd.DataFrame(
        {"false_positive_rate": false_positive, "sensitivity": sensitivity, "threshold": np.minimum(thresholds, 1.0)}
    )
