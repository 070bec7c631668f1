"""The audit's measurements of one backbone: the source probe, the lungs-hidden classifier, the
classifier on the external source, each scored with patient-bootstrap intervals against what
chance or the source alone would give; :func:`summary` is ``reports/audit/<backbone>.json``."""

from __future__ import annotations

import math
from pathlib import Path

import keras
import numpy as np
import pandas as pd

from cxr.core.backbones import Backbone
from cxr.core.config import Config
from cxr.core.schema import split_part
from cxr.data.split import source_confound
from cxr.learn import training
from cxr.learn.lungs import HiddenRegion
from cxr.report import evaluation
from cxr.report.audit import gradcam


def within_class_source_accuracy(table: pd.DataFrame, *, resamples: int, seed: int) -> dict:
    """The probe's balanced accuracy at telling sources apart among images of the same class.

    ``table`` holds the probe's test predictions: ``actual`` and ``predicted`` are sources,
    ``class`` is the image's task class. For every class with test images from two or more
    sources: the mean over those sources of the probe's sensitivity, with a patient-bootstrap 95%
    interval and the images of each source it rests on. These are averaged over classes, each
    weighted by its smallest source's image count (the evidence the class holds), so a class
    with one image of a source does not count as much as one with twenty. A rule that sees only
    the class scores exactly 1/sources: more means the sources look different.
    """
    per_class, weights = {}, {}
    for name, rows in table.groupby("class", sort=True):
        counts = rows["actual"].value_counts().sort_index()
        if len(counts) < 2:
            continue
        interval = evaluation.patient_bootstrap(
            rows.reset_index(drop=True), list(counts.index), resamples=resamples, seed=seed
        )["balanced_accuracy"]
        per_class[name] = {
            "balanced_accuracy": interval["value"],
            "balanced_accuracy_low": interval["low"],
            "balanced_accuracy_high": interval["high"],
            "images": {source: int(count) for source, count in counts.items()},
        }
        weights[name] = int(counts.min())
    n_sources = table["actual"].nunique()
    scores = [result["balanced_accuracy"] for result in per_class.values()]
    return {
        "value": float(np.average(scores, weights=list(weights.values()))) if scores else math.nan,
        "per_class": per_class,
        "smallest_source_images": weights,
        "chance": 1.0 / n_sources if n_sources else math.nan,
    }


def class_only_source_accuracy(split: pd.DataFrame) -> float:
    """Test accuracy of guessing the source from the class alone (each class's most common
    training source): what the plain probe accuracy must be compared with."""
    train, test = split_part(split, "train"), split_part(split, "test")
    rule = train.groupby("class")["source"].agg(lambda sources: sources.value_counts().idxmax())
    return float((test["class"].map(rule) == test["source"]).mean())


def scored(table: pd.DataFrame, classes: list[str], resamples: int, seed: int) -> dict:
    """Accuracy, macro F1 and sensitivity per class of a predictions table, with patient-bootstrap 95%
    intervals, flattened (``accuracy``, ``accuracy_low``, ...); NaN (a class absent) -> None."""
    return without_nan(
        evaluation.flat_intervals(evaluation.patient_bootstrap(table, classes, resamples=resamples, seed=seed))
    )


def predicted_table(
    model: keras.Model,
    rows: pd.DataFrame,
    classes: list[str],
    size: int,
    config: Config,
    hidden: HiddenRegion | None = None,
) -> pd.DataFrame:
    """A model's predictions for ``rows``: one row per image, actual, predicted and ``p_<class>``.

    Parameters
    ----------
    model : keras.Model
        The classifier.
    rows : pandas.DataFrame
        The images to predict (split-table rows).
    classes : list of str
        The classes, in output order.
    size : int
        The input side, in pixels.
    config : Config
        The configuration (``train``: batch size, cache).
    hidden : HiddenRegion or None, optional
        When given, that region of each image is blanked first.

    Returns
    -------
    pandas.DataFrame
        The predictions table (:func:`cxr.report.evaluation.predictions_frame`).
    """
    probabilities = evaluation.predict(model, rows, classes, size, config.train, hidden)
    return evaluation.predictions_frame(rows, classes, probabilities)


def source_probe(backbone: Backbone, split: pd.DataFrame, size: int, config: Config, work_dir: Path) -> pd.DataFrame:
    """Train the backbone and head to predict each image's source; its test predictions.

    Parameters
    ----------
    backbone : Backbone
        The backbone's registry entry.
    split : pandas.DataFrame
        The split table; its ``source`` column is the target.
    size : int
        The input side, in pixels.
    config : Config
        The configuration (``train``, ``seed``).
    work_dir : Path
        The fit's checkpoint folder.

    Returns
    -------
    pandas.DataFrame
        One row per test image, with ``actual``/``predicted`` sources, ``p_<source>`` and the
        image's task ``class``.
    """
    sources = sorted(split["source"].unique())
    as_sources = split.assign(**{"class": split["source"]})
    model, _ = training.train_classifier(backbone, as_sources, sources, size, config.train, config.seed, work_dir)
    test = split_part(as_sources, "test")
    return predicted_table(model, test, sources, size, config).assign(
        **{"class": split_part(split, "test")["class"].to_numpy()}
    )


def summary(
    tables: dict[str, pd.DataFrame],
    saliency_table: pd.DataFrame,
    split: pd.DataFrame,
    classes: list[str],
    size: int,
    config: Config,
    *,
    layer: tuple[str | None, int, int],
    region: dict,
    masked_table: pd.DataFrame,
) -> dict:
    """The audit's metrics for one backbone (``reports/audit/<backbone>.json``).

    From its prediction tables (``classifier``, ``source_probe``, ``lungs_hidden``, ``external``) and
    saliency table; intervals are from a bootstrap over patients (``evaluate.bootstrap_resamples``,
    ``evaluate.bootstrap_seed``). NaN values are written as None.

    Parameters
    ----------
    tables : dict of str to pandas.DataFrame
        Prediction tables: ``classifier``, ``source_probe``, ``lungs_hidden`` and optionally
        ``external``.
    saliency_table : pandas.DataFrame
        :func:`cxr.report.audit.gradcam.saliency`'s table.
    split : pandas.DataFrame
        The split table.
    classes : list of str
        The task's classes.
    size : int
        The input side, in pixels.
    config : Config
        The configuration (``evaluate``, ``audit.lung_box``).
    layer : tuple of (str or None, int, int)
        The layer Grad-CAM read (None: the base's output), its map's side and the last feature
        map's side (:func:`cxr.report.audit.gradcam.gradcam_layer`).
    region : dict
        What the lungs-hidden classifier blanked (:func:`cxr.report.audit.hidden.region_report`).
    masked_table : pandas.DataFrame
        :func:`cxr.report.audit.gradcam.saliency`'s table for every test image with a real lung mask.

    Returns
    -------
    dict
        ``classifier`` (its scores), ``source_probe`` (``accuracy``, ``class_only_accuracy``,
        ``within_class_accuracy``, ``within_class_chance``, ``within_class_evidence``,
        ``within_class`` and its scores), ``lungs_hidden`` (its scores, ``source_only_accuracy``,
        ``majority_class_accuracy``, ``region``), ``saliency`` (:func:`shares` of the
        overlay sample: ``lung_share``, mean Grad-CAM mass inside each image's lungs, real mask or
        box, ``lung_area_share``, the lungs' mean share of the image, ``lung_box_share``, the box
        measure, ``images``, ``empty_maps``; ``regions``: images measured with a real mask and with
        the box; ``real_mask``: :func:`shares` of every test image with a real mask; ``per_class``,
        ``uniform_share`` (the box's even share), ``layer``, ``map_side``, ``last_map_side``) and,
        with an external table, ``external`` (``images`` and
        its scores).
    """
    resamples, seed = config.evaluate.bootstrap_resamples, config.evaluate.bootstrap_seed
    probe = tables["source_probe"]
    within = within_class_source_accuracy(probe, resamples=resamples, seed=seed)
    confound = source_confound(split)
    masked = saliency_table[saliency_table["region"] == "mask"]
    name, side, last_side = layer
    return without_nan(
        {
            "classifier": scored(tables["classifier"], classes, resamples, seed),
            "source_probe": {
                "accuracy": float((probe["actual"] == probe["predicted"]).mean()),
                "class_only_accuracy": class_only_source_accuracy(split),
                "within_class_accuracy": within["value"],
                "within_class_chance": within["chance"],
                "within_class_evidence": sum(within["smallest_source_images"].values()),
                "within_class": within["per_class"],
                **scored(probe, sorted(split["source"].unique()), resamples, seed),
            },
            "lungs_hidden": {
                **scored(tables["lungs_hidden"], classes, resamples, seed),
                "source_only_accuracy": confound["source_only_accuracy"],
                "majority_class_accuracy": confound["majority_class_accuracy"],
                "region": region,
            },
            "saliency": {
                **shares(saliency_table),
                "regions": {"mask": len(masked), "box": len(saliency_table) - len(masked)},
                "real_mask": shares(masked_table),
                "per_class": saliency_table.groupby("class")["lung_share"].mean().to_dict(),
                "uniform_share": gradcam.even_share(size, config.audit.lung_box),
                "layer": name or "base output",
                "map_side": side,
                "last_map_side": last_side,
            },
            **(
                {
                    "external": {
                        "images": len(tables["external"]),
                        **scored(tables["external"], classes, resamples, seed),
                    }
                }
                if "external" in tables
                else {}
            ),
        }
    )


def shares(table: pd.DataFrame) -> dict:
    """Mean Grad-CAM shares of a saliency table over the images whose map is not empty.

    An empty map (no positive evidence for the predicted class at the layer) has no share; the
    lungs' and the box's shares are averaged over the same images as the map's, so the two compare.

    Parameters
    ----------
    table : pandas.DataFrame
        :func:`cxr.report.audit.gradcam.saliency`'s table.

    Returns
    -------
    dict
        ``images``, ``empty_maps``, and the means ``lung_share``, ``lung_area_share`` and
        ``lung_box_share`` (NaN when every map is empty).
    """
    shown = table[table["lung_share"].notna()]
    return {
        "images": len(table),
        "empty_maps": len(table) - len(shown),
        **{column: float(shown[column].mean()) for column in ("lung_share", "lung_area_share", "lung_box_share")},
    }


def without_nan(value):
    """``value`` with every NaN float replaced by None (JSON and DVC metrics have no NaN)."""
    if isinstance(value, dict):
        return {key: without_nan(item) for key, item in value.items()}
    return None if isinstance(value, float) and math.isnan(value) else value
