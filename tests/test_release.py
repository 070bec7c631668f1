"""Calibration, the release gate and the champion's selection, on constructed numbers."""

import dataclasses

import numpy as np
import pytest
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.calibration import CalibratedClassifierCV
from sklearn.frozen import FrozenEstimator
from sklearn.model_selection import KFold

from cxr.core.sections import Release
from cxr.report import calibration, release
from cxr.serve.classify import Decision

PARAMS = Release(
    max_lungs_hidden_above_chance=0.15,
    max_within_class_probe=0.7,
    max_external_drop=0.2,
    min_images=5,
    select_by="macro_f1",
)


def over_confident(n: int = 2000, classes: int = 4, sharpen: float = 4.0, seed: int = 0):
    """Labels drawn from softmax(z), and a model that reports softmax(sharpen * z): over-confident."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(size=(n, classes)) * 1.5
    truth = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    actual = np.array([rng.choice(classes, p=row) for row in truth])
    reported = np.exp(sharpen * logits)
    return reported / reported.sum(axis=1, keepdims=True), actual


def test_temperature_scaling_lowers_the_ece_of_an_over_confident_model():
    probabilities, actual = over_confident()
    fit, held_out = slice(0, 1000), slice(1000, None)
    temperature = calibration.fit_temperature(probabilities[fit], actual[fit])
    # The model's logits are 4x the true ones: the fitted temperature undoes that.
    assert temperature == pytest.approx(4.0, rel=0.15)
    before = calibration.expected_calibration_error(probabilities[held_out], actual[held_out])
    calibrated = calibration.apply_temperature(probabilities[held_out], temperature)
    after = calibration.expected_calibration_error(calibrated, actual[held_out])
    assert before > 0.15 and after < 0.05 and after < before / 3
    brier_before = calibration.brier_score(probabilities[held_out], actual[held_out])
    assert calibration.brier_score(calibrated, actual[held_out]) < brier_before
    # The predicted class never changes.
    assert (calibrated.argmax(axis=1) == probabilities[held_out].argmax(axis=1)).all()


class Scores(ClassifierMixin, BaseEstimator):
    """A classifier whose input is its own predicted probabilities (to hand them to scikit-learn)."""

    def fit(self, X, y=None):
        self.classes_ = np.arange(X.shape[1])
        return self

    def predict_proba(self, X):
        return np.asarray(X, dtype=float)

    def predict(self, X):
        return np.asarray(X).argmax(axis=1)


def test_the_temperature_is_scikit_learns_where_both_apply():
    probabilities, actual = over_confident(n=800, seed=1)
    reference = CalibratedClassifierCV(
        FrozenEstimator(Scores().fit(probabilities)), method="temperature", cv=KFold(2)
    ).fit(probabilities, actual)
    beta = reference.calibrated_classifiers_[0].calibrators[0].beta_
    temperature = calibration.fit_temperature(probabilities, actual)
    assert temperature == pytest.approx(1 / beta, rel=1e-3)
    np.testing.assert_allclose(
        calibration.apply_temperature(probabilities, temperature), reference.predict_proba(probabilities), atol=1e-4
    )


def test_ece_and_reliability_by_hand():
    # Two bins used: confidence 0.9 (2 images, 1 right) and 0.6 (2 images, both right).
    probabilities = np.array([[0.9, 0.1], [0.9, 0.1], [0.6, 0.4], [0.4, 0.6]])
    actual = np.array([0, 1, 0, 1])
    table = calibration.reliability(probabilities, actual, bins=10)
    used = table[table["images"] > 0]
    assert list(used["images"]) == [2, 2]
    assert list(used["accuracy"]) == [1.0, 0.5]
    # ECE = 2/4 * |1.0 - 0.6| + 2/4 * |0.5 - 0.9| = 0.4
    assert calibration.expected_calibration_error(probabilities, actual, bins=10) == pytest.approx(0.4)
    assert calibration.brier_score(np.eye(2)[actual], actual) == 0.0


def audit(hidden=0.3, probe=0.55, probe_images=10, internal=0.9, external=0.85):
    return {
        "classifier": {"sensitivity_COVID": internal},
        "lungs_hidden": {"balanced_accuracy": hidden},
        "source_probe": {"within_class_accuracy": probe, "within_class_evidence": probe_images},
        "external": {"sensitivity_COVID": external},
    }


def test_the_gate_passes_a_model_whose_audit_finds_no_shortcut():
    result = release.gate(audit(), PARAMS, 4, "COVID", test_images=80, external_positives=12)
    assert result["passed"] and result["summary"] == "passed"
    assert [criterion["passed"] for criterion in result["criteria"]] == [True, True, True]


def test_the_gate_fails_on_each_criterion_and_says_which_in_words():
    result = release.gate(audit(hidden=0.47, probe=0.9), PARAMS, 4, "COVID", test_images=80, external_positives=12)
    assert not result["passed"]
    assert [criterion["passed"] for criterion in result["criteria"]] == [False, False, True]
    assert result["summary"].startswith("failed: with the lungs hidden the model still scores balanced accuracy 0.47")
    assert "tells the sources apart within a class with balanced accuracy 0.90 (limit 0.70)" in result["summary"]
    dropped = release.gate(audit(external=0.5), PARAMS, 4, "COVID", test_images=80, external_positives=12)
    assert not dropped["passed"] and "COVID sensitivity is 0.50 on the external source" in dropped["summary"]


def test_a_score_on_too_few_images_is_marked_and_not_used():
    result = release.gate(
        audit(probe=1.0, probe_images=1, external=0.0), PARAMS, 4, "COVID", test_images=80, external_positives=2
    )
    probe, external = result["criteria"][1], result["criteria"][2]
    assert probe["passed"] is None and "not interpretable, it rests on 1 image(s)" in probe["text"]
    assert external["passed"] is None and external["n"] == 2
    assert result["passed"]
    missing = dict(audit(), source_probe={"within_class_accuracy": None, "within_class_evidence": 0})
    unscored = release.gate(missing, PARAMS, 4, "COVID", test_images=80, external_positives=12)["criteria"][1]
    assert unscored["passed"] is None and "not scorable" in unscored["text"]


def entry(macro_f1, passed, competes=True):
    return {"validation": {"macro_f1": macro_f1}, "release": {"passed": passed}, "competes": competes}


def test_the_champion_is_the_best_on_validation_that_passes_not_the_configured_backbone():
    models = {
        "xception": entry(0.80, True),  # the configured `backbone`, listed first
        "vgg16": entry(0.90, True),
        "nasnetlarge": entry(0.95, False),
        "finetuned": entry(0.99, True, competes=False),  # fine-tuning left xception unchanged
    }
    chosen = release.rank(models, "macro_f1")
    assert chosen["ranking"] == ["nasnetlarge", "vgg16", "xception"]
    assert chosen["candidate"] == "nasnetlarge" and chosen["champion"] == "vgg16"
    nobody = release.rank({name: dict(value, release={"passed": False}) for name, value in models.items()}, "macro_f1")
    assert nobody["candidate"] == "nasnetlarge" and nobody["champion"] is None


def test_a_decision_calibrates_and_thresholds_the_positive_class():
    decision = Decision(temperature=2.0, positive_class="COVID", threshold=0.5, release="passed the release gate")
    probabilities = np.array([[0.9, 0.1], [0.2, 0.8]])
    calibrated = decision.calibrated(probabilities)
    assert calibrated[0, 0] == pytest.approx(0.75, abs=1e-6)  # sqrt(0.9) / (sqrt(0.9) + sqrt(0.1))
    assert [decision.label(row, ["COVID", "OTHER"]) for row in calibrated] == ["COVID", "not COVID"]
    assert Decision().label(calibrated[0], ["COVID", "OTHER"]) == ""
    assert dataclasses.replace(decision, temperature=1.0).calibrated(probabilities) is probabilities
