"""Evaluation metrics against hand-computed values, the patient bootstrap, McNemar, DVC plots."""

import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import confusion_cells, rows_are_actual_and_columns_predicted

from cxr.report import evaluation, mcnemar

CLASSES = ["A", "B", "C"]


def frame(actual, predicted, patients=None, probabilities=None):
    n = len(actual)
    if probabilities is None:
        probabilities = np.array([[0.8 if name == guess else 0.1 for name in CLASSES] for guess in predicted])
    rows = pd.DataFrame(
        {
            "image_id": [f"i{k}" for k in range(n)],
            "patient_id": patients or [f"p{k}" for k in range(n)],
            "source": "s",
            "class": actual,
        }
    )
    return evaluation.predictions_frame(rows, CLASSES, np.asarray(probabilities))


def test_report_matches_hand_computed_values():
    table = frame(["A", "A", "B", "B", "C", "C"], ["A", "B", "B", "B", "C", "A"])
    report = evaluation.report(table, CLASSES)
    assert report["accuracy"] == pytest.approx(4 / 6)
    assert report["sensitivity"] == pytest.approx({"A": 0.5, "B": 1.0, "C": 0.5})
    assert report["ppv"] == pytest.approx({"A": 0.5, "B": 2 / 3, "C": 1.0})
    f1 = {"A": 0.5, "B": 0.8, "C": 2 / 3}
    assert report["macro_f1"] == pytest.approx(sum(f1.values()) / 3)
    assert report["classification_report"]["B"]["f1-score"] == pytest.approx(0.8)
    assert report["classification_report"]["weighted avg"]["support"] == 6
    assert report["confusion_matrix"]["matrix"] == [[1, 1, 0], [0, 2, 0], [1, 0, 1]]
    assert report["never_predicted"] == []
    assert "macro avg" in evaluation.report_text(table, CLASSES)


def test_one_vs_rest_auc_by_hand():
    probabilities = [[0.9, 0.05, 0.05], [0.4, 0.3, 0.3], [0.6, 0.2, 0.2], [0.1, 0.8, 0.1]]
    table = frame(["A", "A", "B", "C"], ["A", "A", "A", "B"], probabilities=probabilities)
    aucs = evaluation.roc_auc(table, CLASSES)
    # A's scores: positives 0.9, 0.4; negatives 0.6, 0.1 -> 3 of 4 pairs ranked right.
    assert aucs["A"] == pytest.approx(0.75)
    assert aucs["C"] == pytest.approx(1 / 3)


def test_a_model_predicting_one_class_is_evaluated():
    table = frame(["A", "B", "C", "C"], ["A", "A", "A", "A"])
    report = evaluation.report(table, CLASSES)
    assert report["never_predicted"] == ["B", "C"]
    assert report["ppv"]["B"] is None and report["sensitivity"]["B"] == 0.0
    assert report["macro_f1"] == pytest.approx((2 * 0.25 / 1.25) / 3)
    intervals = evaluation.patient_bootstrap(table, CLASSES, resamples=50, seed=0)
    # 0 of 2: not the point [0, 0] the bootstrap gives, but the exact interval [0, 1 - 0.025^(1/2)].
    sensitivity = intervals["sensitivity_C"]
    assert sensitivity["low"] == 0.0 and sensitivity["high"] == pytest.approx(1 - 0.025**0.5)


def test_bootstrap_resamples_patients_not_images():
    one_patient = frame(["A"] * 10, ["A"] * 5 + ["B"] * 5, patients=["p"] * 10)
    interval = evaluation.patient_bootstrap(one_patient, CLASSES, resamples=200, seed=0)["accuracy"]
    # One patient: every resample is the same, so the interval is the exact one on its 10 images.
    assert interval["value"] == 0.5 and interval["method"].startswith("Clopper-Pearson")
    assert interval["low"] == pytest.approx(0.187, abs=1e-3) and interval["high"] == pytest.approx(0.813, abs=1e-3)

    two_patients = frame(["A"] * 20, ["A"] * 10 + ["B"] * 10, patients=["right"] * 10 + ["wrong"] * 10)
    groups = [group.index.to_numpy() for _, group in two_patients.groupby("patient_id")]
    rng = np.random.default_rng(0)
    accuracies = {
        evaluation.headline(two_patients.loc[np.concatenate([groups[i] for i in rng.integers(0, 2, 2)])], CLASSES)[
            "accuracy"
        ]
        for _ in range(100)
    }
    assert accuracies == {0.0, 0.5, 1.0}
    interval = evaluation.patient_bootstrap(two_patients, CLASSES, resamples=400, seed=1)["accuracy"]
    assert interval["low"] == 0.0 and interval["high"] == 1.0


def test_mcnemar_on_known_tables():
    exact = mcnemar.mcnemar([True] * 10 + [False] * 2 + [True] * 5, [False] * 10 + [True] * 2 + [True] * 5)
    assert (exact.b, exact.c) == (10, 2)
    assert exact.p_value == pytest.approx(2 * (1 + 12 + 66) / 4096)
    large = mcnemar.mcnemar([True] * 30 + [False] * 10, [False] * 30 + [True] * 10)
    assert large.statistic == pytest.approx(361 / 40)
    assert large.p_value == pytest.approx(0.002663, rel=1e-3)
    assert mcnemar.mcnemar([True, False], [True, False]).p_value == 1.0


def test_pairwise_mcnemar_uses_shared_images():
    first = frame(["A", "B", "C"], ["A", "B", "A"])
    second = frame(["A", "B", "C"], ["B", "B", "C"])
    [row] = mcnemar.pairwise_mcnemar({"m1": first, "m2": second}).to_dict(orient="records")
    assert (row["model_a"], row["model_b"], row["images"], row["only_a_correct"], row["only_b_correct"]) == (
        "m1",
        "m2",
        3,
        1,
        1,
    )


def test_confusion_file_renders_with_its_counts_rows_actual_columns_predicted(tmp_path):
    """The project's DVC template (.dvc/plots/confusion_counts.json, as dvc.yaml uses it) draws every
    cell's count, zeros included, with actual classes on the rows and predicted on the columns."""
    import json

    import vl_convert

    env_bin = Path(sys.executable).parent
    table = frame(["A", "A", "A", "B", "C"], ["A", "A", "B", "B", "C"])
    (tmp_path / "eval").mkdir()
    table[["actual", "predicted"]].to_csv(tmp_path / "eval" / "model.csv", index=False)
    (tmp_path / "dvc.yaml").write_text(
        "plots:\n  - eval/model.csv:\n      template: confusion_counts\n      x: predicted\n      y: actual\n"
    )
    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True)
    subprocess.run([env_bin / "dvc", "init", "-q"], cwd=tmp_path, check=True)
    template = Path(__file__).resolve().parents[1] / ".dvc/plots/confusion_counts.json"
    (tmp_path / ".dvc/plots").mkdir()
    (tmp_path / ".dvc/plots/confusion_counts.json").write_bytes(template.read_bytes())
    result = subprocess.run([env_bin / "dvc", "plots", "show", "--json"], cwd=tmp_path, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    [plot] = json.loads(result.stdout)["data"]["eval/model.csv"]
    encoding = plot["content"]["spec"]["encoding"]
    assert (encoding["x"]["field"], encoding["y"]["field"]) == ("predicted", "actual")
    cells = confusion_cells(vl_convert.vegalite_to_svg(plot["content"]))
    expected = {(actual, predicted): 0 for actual in "ABC" for predicted in "ABC"}
    expected |= {("A", "A"): 2, ("A", "B"): 1, ("B", "B"): 1, ("C", "C"): 1}
    assert {cell: count for cell, (_, _, count) in cells.items()} == expected
    assert rows_are_actual_and_columns_predicted(cells)
    assert cells[("A", "A")][1] < cells[("B", "A")][1] < cells[("C", "A")][1]  # rows top to bottom A, B, C


def test_comparison_markdown_has_one_row_per_model_with_intervals():
    table = frame(["A", "A", "B", "C"], ["A", "B", "B", "C"])
    report = evaluation.report(table, CLASSES)
    intervals = evaluation.patient_bootstrap(table, CLASSES, resamples=20, seed=0)
    rows = pd.DataFrame([evaluation.comparison_row(name, report, intervals, CLASSES) for name in ("m1", "m2")])
    tests = mcnemar.pairwise_mcnemar({"m1": table, "m2": table})
    text = evaluation.comparison_markdown(rows, CLASSES, tests, "note")
    model_rows = [line for line in text.splitlines() if line.startswith(("| m1 ", "| m2 "))]
    assert len(model_rows) == 3  # two models and one McNemar row
    assert f"{intervals['accuracy']['value']:.2f} [{intervals['accuracy']['low']:.2f}," in model_rows[0]
    assert not math.isnan(rows.loc[0, "roc_auc_macro"])
    marked = evaluation.comparison_markdown(rows, CLASSES, tests, "note", unchanged_from={"m2": "m1"})
    assert "| m2 (= m1) | " in marked and "m2 keeps m1's weights" in marked and "| m2 (= m1)" not in text


def test_a_proportion_at_one_gets_an_exact_interval_not_a_point():
    """14 of 14 COVID images found: the percentile bootstrap collapses to [1, 1]; Clopper-Pearson
    gives [0.768, 1] (alpha 0.05: (alpha/2)^(1/14) = 0.768). Statistics that vary keep the bootstrap."""
    rows = [("COVID", "COVID")] * 14 + [("NORMAL", "NORMAL")] * 10 + [("NORMAL", "COVID")] * 6
    table = pd.DataFrame(
        {
            "patient_id": [f"p{index}" for index in range(len(rows))],
            "actual": [actual for actual, _ in rows],
            "predicted": [predicted for _, predicted in rows],
        }
    )
    intervals = evaluation.patient_bootstrap(table, ["COVID", "NORMAL"], resamples=200, seed=0)
    covid = intervals["sensitivity_COVID"]
    assert covid["value"] == 1.0 and covid["high"] == 1.0
    assert covid["low"] == pytest.approx(0.025 ** (1 / 14), abs=1e-6) and covid["low"] < 0.8
    assert covid["method"].startswith("Clopper-Pearson")
    normal = intervals["sensitivity_NORMAL"]
    assert normal["method"] == "patient bootstrap (percentile)" and normal["low"] < 0.625 < normal["high"]
    assert evaluation.proportion_counts(table, ["COVID", "NORMAL"]) == {
        "accuracy": (24, 30),
        "sensitivity_COVID": (14, 14),
        "sensitivity_NORMAL": (10, 16),
    }


def test_the_threshold_rule_reaches_its_target_on_validation():
    from cxr.report import operating_point

    rng = np.random.default_rng(0)
    positive = np.array([True] * 40 + [False] * 60)
    scores = np.where(positive, rng.uniform(0.3, 1.0, 100), rng.uniform(0.0, 0.7, 100))
    threshold = operating_point.choose_threshold(scores, positive, "target_sensitivity", 0.95)
    reached = operating_point.at_threshold(scores, positive, threshold)
    assert reached["sensitivity"]["value"] >= 0.95 and reached["sensitivity"]["n"] == 40
    # The highest such threshold: one step up loses the target.
    above = np.min(scores[positive][scores[positive] > threshold])
    assert operating_point.at_threshold(scores, positive, above)["sensitivity"]["value"] < 0.95
    youden = operating_point.choose_threshold(scores, positive, "youden", 0.95)
    at_youden = operating_point.at_threshold(scores, positive, youden)
    j = at_youden["sensitivity"]["value"] + at_youden["specificity"]["value"] - 1
    for candidate in np.unique(scores):
        other = operating_point.at_threshold(scores, positive, candidate)
        assert other["sensitivity"]["value"] + other["specificity"]["value"] - 1 <= j + 1e-12
    assert operating_point.choose_threshold(scores, np.zeros(100, bool), "target_sensitivity", 0.95) is None
    with pytest.raises(ValueError, match="operating point rule 'f1'"):
        operating_point.choose_threshold(scores, positive, "f1", 0.95)


def test_numbers_at_the_operating_point_have_exact_intervals_and_their_n():
    from cxr.report import operating_point

    scores = np.array([0.9] * 14 + [0.8] * 2 + [0.1] * 8)
    positive = np.array([True] * 14 + [False] * 10)
    numbers = operating_point.at_threshold(scores, positive, 0.5)
    assert numbers["counts"] == {"tp": 14, "fp": 2, "tn": 8, "fn": 0}
    assert numbers["sensitivity"]["value"] == 1.0 and numbers["sensitivity"]["low"] == pytest.approx(0.025 ** (1 / 14))
    assert numbers["specificity"] == pytest.approx({"value": 0.8, "low": 0.4439, "high": 0.9748, "n": 10}, abs=1e-4)
    assert operating_point.interval(numbers["ppv"]) == "0.88 [0.62, 0.98] (n=16)"
    assert operating_point.proportion(0, 0) == {"value": None, "low": None, "high": None, "n": 0}


def test_the_roc_table_runs_from_no_positive_call_to_all_and_is_empty_without_both_classes():
    from cxr.report.operating_point import roc_table

    predictions = pd.DataFrame(
        {"actual": ["COVID", "NORMAL", "COVID", "VIRAL", "NORMAL"], "p_COVID": [0.9, 0.8, 0.7, 0.2, 0.1]}
    )
    table = roc_table(predictions, "COVID")
    assert list(table.columns) == ["false_positive_rate", "sensitivity", "threshold"]
    points = table[["false_positive_rate", "sensitivity"]].values.tolist()
    assert table.iloc[0].tolist() == [0.0, 0.0, 1.0] and points[-1] == [1.0, 1.0]
    # The NORMAL image at 0.8 ranks between the two COVID ones: half the positives before the first false one.
    assert [0.0, 0.5] in points
    assert roc_table(predictions[predictions["actual"] != "COVID"], "COVID").empty
    assert roc_table(predictions[predictions["actual"] == "COVID"], "COVID").empty
