"""McNemar's test: two models compared on the same test images (McNemar, Psychometrika 1947).

Exact binomial test on the discordant pairs when there are fewer than 25 of them, the chi-square
test with continuity correction otherwise.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats


@dataclass(frozen=True)
class McNemar:
    """Paired comparison on the same images: b = only A right, c = only B right."""

    b: int
    c: int
    statistic: float
    p_value: float
    method: str


def mcnemar(correct_a: np.ndarray, correct_b: np.ndarray) -> McNemar:
    """Exact binomial McNemar test when b + c < 25, else chi-square with continuity correction."""
    correct_a, correct_b = np.asarray(correct_a, bool), np.asarray(correct_b, bool)
    b = int((correct_a & ~correct_b).sum())
    c = int((~correct_a & correct_b).sum())
    if b + c == 0:
        return McNemar(b, c, 0.0, 1.0, "no discordant pairs")
    if b + c < 25:
        p_value = float(stats.binomtest(min(b, c), b + c, 0.5).pvalue)
        return McNemar(b, c, float(min(b, c)), min(p_value, 1.0), "exact binomial")
    statistic = (abs(b - c) - 1) ** 2 / (b + c)
    return McNemar(b, c, float(statistic), float(stats.chi2.sf(statistic, 1)), "chi-square, continuity corrected")


def pairwise_mcnemar(predictions: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """McNemar between every two models, on the images both were tested on."""
    names = list(predictions)
    rows = []
    for i, first in enumerate(names):
        for second in names[i + 1 :]:
            joined = predictions[first].merge(predictions[second], on="image_id", suffixes=("_a", "_b"))
            result = mcnemar(joined["actual_a"] == joined["predicted_a"], joined["actual_b"] == joined["predicted_b"])
            rows.append(
                {
                    "model_a": first,
                    "model_b": second,
                    "images": len(joined),
                    "only_a_correct": result.b,
                    "only_b_correct": result.c,
                    "statistic": result.statistic,
                    "p_value": result.p_value,
                    "method": result.method,
                }
            )
    return pd.DataFrame(rows)
