"""The cross-source matrix's arithmetic and report: one model's scores per test source, and the table over seeds."""

import pandas as pd
import pytest

from cxr import matrix
from cxr.report import cross_source


def predictions(actual: list[str], predicted: list[str], source: str = "a") -> pd.DataFrame:
    return pd.DataFrame(
        {
            "image_id": [f"{source}/{index}" for index in range(len(actual))],
            "patient_id": [f"{source}:{index // 2}" for index in range(len(actual))],
            "source": source,
            "actual": actual,
            "predicted": predicted,
        }
    )


def test_source_scores_count_the_positive_class_decisions():
    scores = cross_source.source_scores(
        predictions(["COVID", "COVID", "COVID", "NORMAL", "NORMAL"], ["COVID", "NORMAL", "COVID", "COVID", "NORMAL"]),
        "COVID",
    )
    assert scores["counts"] == {"correct": 3, "tp": 2, "fn": 1, "tn": 1, "fp": 1}
    assert scores["accuracy"] == pytest.approx(0.6) and scores["sensitivity"] == pytest.approx(2 / 3)
    assert scores["specificity"] == pytest.approx(0.5) and scores["patients"] == 3
    only_normal = cross_source.source_scores(predictions(["NORMAL", "NORMAL"], ["NORMAL", "COVID"]), "COVID")
    assert only_normal["sensitivity"] is None and only_normal["specificity"] == 0.5


def row(trained_on: list[str], seed: int, test: tuple[int, int], held_out: dict[str, tuple[int, int]]) -> dict:
    """A matrix row whose test sets hold 10 COVID and 10 NORMAL images: (COVID right, NORMAL right)."""

    def scored(right: tuple[int, int], source: str) -> dict:
        actual = ["COVID"] * 10 + ["NORMAL"] * 10
        predicted = ["COVID"] * right[0] + ["NORMAL"] * (10 - right[0]) + ["NORMAL"] * right[1]
        predicted += ["COVID"] * (10 - right[1])
        return cross_source.source_scores(predictions(actual, predicted, source), "COVID")

    tests = {"test": scored(test, "x"), **{name: scored(right, name) for name, right in held_out.items()}}
    return {"backbone": "vgg16", "trained_on": trained_on, "seed": seed, "positive_class": "COVID", "tests": tests}


def test_the_table_gives_mean_sd_and_the_pooled_interval_per_cell():
    rows = [
        row(["k", "c"], 1, (10, 10), {"m": (10, 0)}),
        row(["c", "k"], 2, (9, 9), {"m": (10, 2)}),
        row(["m"], 1, (8, 8), {"c": (8, 7), "k": (0, 8)}),
    ]
    table = cross_source.table(rows)
    cell = table[(table["trained_on"] == "c+k") & (table["test"] == "m") & (table["statistic"] == "accuracy")].iloc[0]
    assert cell["seeds"] == 2 and cell["mean"] == pytest.approx(0.55) and cell["sd"] == pytest.approx(0.0707, abs=1e-4)
    assert cell["pooled"] == pytest.approx(22 / 40) and cell["low"] < 22 / 40 < cell["high"]
    held = table[(table["trained_on"] == "m") & (table["test"] == "k") & (table["statistic"] == "sensitivity")]
    assert held.iloc[0]["mean"] == 0.0 and pd.isna(held.iloc[0]["sd"])
    drops = cross_source.drops(table)
    assert drops["c+k"]["m"]["drop"] == pytest.approx(0.95 - 0.55) and drops["c+k"]["m"]["apart"]
    assert drops["m"]["c"]["drop"] == pytest.approx(0.8 - 0.75) and not drops["m"]["c"]["apart"]
    text = matrix.markdown(table, "xs", ["xs-m-seed2: no reports/eval/cross_source.json (Failed)"], "COVID")
    assert "| c+k | 0.950 ± 0.071 (0.950 [" in text and "- accuracy, c+k: m +0.400 (apart)" in text
    assert "(Failed)" in text and "## COVID sensitivity" in text
    assert "- c+k 0.950 against m alone 0.800: +0.150" in text
    with pytest.raises(ValueError, match="no finished experiment"):
        cross_source.table([])
