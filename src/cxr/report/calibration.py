"""Calibration: are the model's probabilities frequencies? Temperature scaling fitted on the
validation split, and the expected calibration error (ECE), Brier score and reliability table that
show it, before and after.

Temperature scaling (Guo, Pleiss, Sun & Weinberger, "On Calibration of Modern Neural Networks",
ICML 2017) divides the logits by one number T > 0 fitted to minimise the negative log-likelihood
on held-out images: T > 1 softens an over-confident model, T < 1 sharpens an under-confident one,
and the predicted class never changes. The logits are taken as ``log(p + 1e-12)`` of the model's
softmax output, exactly as scikit-learn's ``CalibratedClassifierCV(method="temperature")`` takes
them (log-probabilities differ from the logits by a per-image constant, which the softmax
ignores). That class itself is not used: it refits by cross-validation, needs at least
``n_folds`` images of every class and drops a class the validation split lacks; ``netcal`` brings
PyTorch. The fit is scipy's bounded scalar minimiser on scikit-learn's ``log_loss``, and a test
checks it against scikit-learn's temperature where both apply.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from scipy.optimize import minimize_scalar
from scipy.special import softmax
from sklearn.metrics import brier_score_loss, log_loss

# Equal-width bins of the top-label confidence for the ECE and the reliability diagram (Guo et al. use 15).
ECE_BINS = 15
LOG_EPS = 1e-12  # as scikit-learn's _convert_to_logits
METHOD = "temperature scaling (Guo et al. 2017), fitted on the validation split by minimising the log-loss"


def apply_temperature(probabilities: np.ndarray, temperature: float) -> np.ndarray:
    """``softmax(log(p + 1e-12) / temperature)`` row by row: shape (n, classes) in and out."""
    logits = np.log(np.asarray(probabilities, dtype=np.float64) + LOG_EPS)
    return softmax(logits / temperature, axis=1)


def fit_temperature(probabilities: np.ndarray, actual: np.ndarray) -> float:
    """The temperature T in [0.05, 20] minimising the log-loss of :func:`apply_temperature` on
    these images. ``probabilities``: (n, classes); ``actual``: (n,) class indices. Raises
    ValueError when there are no images."""
    probabilities, actual = np.asarray(probabilities, dtype=np.float64), np.asarray(actual, dtype=int)
    if len(actual) == 0:
        raise ValueError("no images to fit a temperature on")
    labels = list(range(probabilities.shape[1]))

    def loss(log_temperature: float) -> float:
        return log_loss(actual, apply_temperature(probabilities, math.exp(log_temperature)), labels=labels)

    found = minimize_scalar(loss, bounds=(math.log(0.05), math.log(20.0)), method="bounded", options={"xatol": 1e-6})
    return float(math.exp(found.x))


def _binned(probabilities: np.ndarray, actual: np.ndarray, bins: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per confidence bin ((b/bins, (b+1)/bins]): images, summed top-label confidence, right answers."""
    probabilities, actual = np.asarray(probabilities, dtype=np.float64), np.asarray(actual, dtype=int)
    if len(actual) == 0:
        return np.zeros(bins), np.zeros(bins), np.zeros(bins)
    confidence = probabilities.max(axis=1)
    right = (probabilities.argmax(axis=1) == actual).astype(float)
    # A confidence is never 0 (it is at least 1/classes), so ceil(c * bins) - 1 is its bin.
    index = np.clip(np.ceil(np.round(confidence * bins, 9)).astype(int) - 1, 0, bins - 1)
    return (
        np.bincount(index, minlength=bins).astype(float),
        np.bincount(index, weights=confidence, minlength=bins),
        np.bincount(index, weights=right, minlength=bins),
    )


def expected_calibration_error(probabilities: np.ndarray, actual: np.ndarray, bins: int = ECE_BINS) -> float:
    """Top-label ECE: the images binned by their highest probability into ``bins`` equal-width bins
    of (0, 1]; the mean over bins, weighted by their share of images, of |accuracy - mean
    confidence| (Naeini et al. 2015; Guo et al. 2017). 0 is perfectly calibrated; NaN with no images."""
    images, confidence, right = _binned(probabilities, actual, bins)
    if images.sum() == 0:
        return math.nan
    return float(np.abs(right - confidence).sum() / images.sum())


def brier_score(probabilities: np.ndarray, actual: np.ndarray) -> float:
    """The multiclass Brier score (scikit-learn): the mean over images of the summed squared
    difference between the probabilities and the one-hot truth, from 0 (perfect) to 2."""
    probabilities = np.asarray(probabilities, dtype=np.float64)
    return float(brier_score_loss(actual, probabilities, labels=list(range(probabilities.shape[1]))))


def reliability(probabilities: np.ndarray, actual: np.ndarray, bins: int = ECE_BINS) -> pd.DataFrame:
    """One row per confidence bin: ``bin_low``, ``bin_high``, ``confidence`` (mean top-label
    probability), ``accuracy`` (share whose top label is right; NaN for an empty bin), ``images``."""
    images, confidence, right = _binned(probabilities, actual, bins)
    edges = np.linspace(0, 1, bins + 1)
    filled = np.where(images > 0, images, np.nan)
    return pd.DataFrame(
        {
            "bin_low": edges[:-1],
            "bin_high": edges[1:],
            "confidence": confidence / filled,
            "accuracy": right / filled,
            "images": images.astype(int),
        }
    )


def scores(probabilities: np.ndarray, actual: np.ndarray) -> dict[str, float]:
    """``{"ece", "brier"}`` of these probabilities."""
    return {"ece": expected_calibration_error(probabilities, actual), "brier": brier_score(probabilities, actual)}
