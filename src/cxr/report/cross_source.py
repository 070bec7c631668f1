"""One model's scores on each test source: the test split (in-distribution: the sources it was trained
on) and every held-out source (``sources.external``), the cells of one row of a cross-source matrix.

DeGrave, Janizek & Lee, "AI for radiographic COVID-19 detection selects shortcuts over signal",
Nature Machine Intelligence 3, 610-619 (2021), train on one combination of sources and test on the
sources left out: a model that learned the disease keeps its score off the diagonal, one that learned
the source loses it. Counts travel with the rates, so that the matrix report can pool seeds.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from cxr.report.operating_point import proportion

IN_DISTRIBUTION = "test"
STATISTICS = ("accuracy", "sensitivity", "specificity")


def row_label(sources: list[str]) -> str:
    """A training-source combination as one name: the sources, sorted, joined by ``+``."""
    return "+".join(sorted(sources))


def source_scores(predictions: pd.DataFrame, positive: str) -> dict:
    """Accuracy, and the positive class's sensitivity and specificity, of one test set.

    Decisions are the predicted classes (the highest probability), as in the headline metrics.

    Parameters
    ----------
    predictions : pandas.DataFrame
        :func:`cxr.report.evaluation.predictions_frame`'s table: ``actual`` and ``predicted``.
    positive : str
        The positive class (``positive_class``).

    Returns
    -------
    dict
        ``images``, ``patients``, ``counts`` (``correct``, ``tp``, ``fn``, ``tn``, ``fp``), and
        ``accuracy``, ``sensitivity``, ``specificity``, each None where the set holds no image, no
        positive or no negative image.
    """
    actual = predictions["actual"].to_numpy() == positive
    decided = predictions["predicted"].to_numpy() == positive
    counts = {
        "correct": int((predictions["actual"] == predictions["predicted"]).sum()),
        "tp": int((decided & actual).sum()),
        "fn": int((~decided & actual).sum()),
        "tn": int((~decided & ~actual).sum()),
        "fp": int((decided & ~actual).sum()),
    }
    return {
        "images": len(predictions),
        "patients": int(predictions["patient_id"].nunique()),
        "counts": counts,
        **rates(counts, len(predictions)),
    }


def rates(counts: dict[str, int], images: int) -> dict[str, float | None]:
    """``accuracy``, ``sensitivity`` and ``specificity`` from :func:`source_scores`' counts (summed
    over seeds, for a pooled estimate); None where a denominator is 0."""
    return {
        "accuracy": proportion(counts["correct"], images)["value"],
        "sensitivity": proportion(counts["tp"], counts["tp"] + counts["fn"])["value"],
        "specificity": proportion(counts["tn"], counts["tn"] + counts["fp"])["value"],
    }


def successes(counts: dict[str, int], images: int, statistic: str) -> tuple[int, int]:
    """(successes, trials) of one of :data:`STATISTICS` from the counts."""
    if statistic == "accuracy":
        return counts["correct"], images
    if statistic == "sensitivity":
        return counts["tp"], counts["tp"] + counts["fn"]
    if statistic == "specificity":
        return counts["tn"], counts["tn"] + counts["fp"]
    raise ValueError(f"unknown statistic {statistic!r}; known: {STATISTICS}")


def scores(
    test: pd.DataFrame, held_out: pd.DataFrame, *, trained_on: list[str], positive: str, seed: int, backbone: str
) -> dict:
    """The row of the cross-source matrix for one trained model (``reports/eval/cross_source.json``).

    Parameters
    ----------
    test : pandas.DataFrame
        Predictions on the test split (the training sources' held-back patients).
    held_out : pandas.DataFrame
        Predictions on the external test set (``source`` names the held-out source of each image);
        may be empty.
    trained_on : list of str
        The training sources (``sources.use``).
    positive : str
        The positive class.
    seed : int
        The training seed (``seed``).
    backbone : str
        The model's backbone.

    Returns
    -------
    dict
        ``backbone``, ``trained_on``, ``seed``, ``positive_class`` and ``tests``: ``test`` and one entry
        per held-out source, each :func:`source_scores`' dict.
    """
    tests = {IN_DISTRIBUTION: source_scores(test, positive)}
    for source in sorted(held_out["source"].unique()) if not held_out.empty else []:
        tests[str(source)] = source_scores(held_out[held_out["source"] == source], positive)
    return {
        "backbone": backbone,
        "trained_on": sorted(trained_on),
        "seed": int(seed),
        "positive_class": positive,
        "tests": tests,
    }


def text(row: dict) -> str:
    """One line per test set of a matrix row, for the stage's log.

    Parameters
    ----------
    row : dict
        :func:`scores`' dict.

    Returns
    -------
    str
        ``<test set> (<n> images): accuracy ..., sensitivity ..., specificity ...`` lines.
    """
    lines = []
    for name, entry in row["tests"].items():
        shown = ", ".join(
            f"{statistic} {entry[statistic]:.3f}" if entry[statistic] is not None else f"{statistic} -"
            for statistic in STATISTICS
        )
        lines.append(f"{name} ({entry['images']} images): {shown}")
    return "\n".join(lines)


def mean_sd(values: list[float | None]) -> tuple[float | None, float | None]:
    """Mean and sample standard deviation (ddof 1; None for one value) of the values that exist."""
    present = np.array([value for value in values if value is not None], float)
    if present.size == 0:
        return None, None
    return float(present.mean()), (float(present.std(ddof=1)) if present.size > 1 else None)


def table(rows: list[dict]) -> pd.DataFrame:
    """One line per training sources, test set and statistic: mean and SD over seeds, and the pooled
    estimate (every seed's counts summed) with its Clopper-Pearson 95% interval.

    The pooled interval counts each image once per seed, and seeds share the images: it is narrower
    than an interval over independent images would be, and says how precisely the average is known
    on these test images, not across data sets.

    Parameters
    ----------
    rows : list of dict
        :func:`gather`'s rows.

    Returns
    -------
    pandas.DataFrame
        ``trained_on``, ``test``, ``in_distribution`` (bool), ``statistic``, ``seeds``, ``mean``,
        ``sd``, ``pooled``, ``low``, ``high``, ``images`` (per seed), sorted by those keys.

    Raises
    ------
    ValueError
        When ``rows`` is empty.
    """
    if not rows:
        raise ValueError("no finished experiment to report: run the queued ones first (dvc queue start)")
    lines = []
    cells: dict[tuple[str, str], list[dict]] = {}
    for row in rows:
        for test, entry in row["tests"].items():
            cells.setdefault((row_label(row["trained_on"]), test), []).append(entry)
    for (trained_on, test), entries in sorted(cells.items()):
        images = sum(entry["images"] for entry in entries)
        counts = {key: sum(entry["counts"][key] for entry in entries) for key in entries[0]["counts"]}
        for statistic in STATISTICS:
            mean, sd = mean_sd([entry[statistic] for entry in entries])
            pooled = proportion(*successes(counts, images, statistic))
            lines.append(
                {
                    "trained_on": trained_on,
                    "test": test,
                    "in_distribution": test == IN_DISTRIBUTION,
                    "statistic": statistic,
                    "seeds": len(entries),
                    "mean": mean,
                    "sd": sd,
                    "pooled": pooled["value"],
                    "low": pooled["low"],
                    "high": pooled["high"],
                    "images": entries[0]["images"],
                }
            )
    return pd.DataFrame(lines)


def drops(frame: pd.DataFrame, statistic: str = "accuracy") -> dict[str, dict[str, dict]]:
    """Per training sources, how far ``statistic`` falls from the test split to each held-out source.

    Parameters
    ----------
    frame : pandas.DataFrame
        :func:`table`'s table.
    statistic : str, optional
        One of :data:`STATISTICS`.

    Returns
    -------
    dict
        ``{trained_on: {held-out source: {"drop", "apart"}}}``: ``drop`` the in-distribution mean minus
        the held-out mean (None where either is missing); ``apart`` True when the held-out pooled
        interval lies wholly below the in-distribution one (a drop beyond the test images' noise).
    """
    chosen = frame[frame["statistic"] == statistic]
    result = {}
    for trained_on, group in chosen.groupby("trained_on"):
        inside = group[group["in_distribution"]]
        base = inside.iloc[0] if len(inside) and pd.notna(inside.iloc[0]["mean"]) else None
        result[str(trained_on)] = {
            str(line.test): {
                "drop": None if base is None or pd.isna(line.mean) else float(base["mean"] - line.mean),
                "apart": bool(base is not None and pd.notna(line.high) and line.high < base["low"]),
            }
            for line in group[~group["in_distribution"]].itertuples()
        }
    return result
