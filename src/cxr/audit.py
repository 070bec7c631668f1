"""The shortcut audit: is a classifier reading the lungs, or recognising where the image came from?

When every COVID image comes from one collection and most other images from another, a model
can score well by recognising the collection (DeGrave et al. 2021; Maguolo & Nanni 2021). Four
measurements, each compared with what chance or the source alone would give:

- a **source probe**: the same backbone and head trained to predict the source, scored within
  each class (so it cannot use the class as a proxy for the source; chance is 1/sources);
- the classifier retrained and tested with the **lungs hidden** (the central square blanked);
- **Grad-CAM** saliency on a fixed sample of test images: the share of its mass in the lung box;
- an **external** test source never trained on.
"""

from __future__ import annotations

import math
from pathlib import Path

import keras
import numpy as np
import pandas as pd
import tensorflow as tf

from cxr import evaluation, images, training
from cxr.backbones import Backbone
from cxr.config import Config
from cxr.model import base_of, build_classifier
from cxr.split import source_confound


def within_class_source_accuracy(table: pd.DataFrame, *, resamples: int, seed: int) -> dict:
    """The probe's balanced accuracy at telling sources apart among images of the same class.

    ``table`` holds the probe's test predictions: ``actual`` and ``predicted`` are sources,
    ``class`` is the image's task class. For every class with test images from two or more
    sources: the mean over those sources of the probe's recall, with a patient-bootstrap 95%
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
        interval = evaluation.patient_bootstrap(rows.reset_index(drop=True), list(counts.index),
                                                resamples=resamples, seed=seed)["balanced_accuracy"]
        per_class[name] = {"balanced_accuracy": interval["value"], "balanced_accuracy_low": interval["low"],
                           "balanced_accuracy_high": interval["high"],
                           "images": {source: int(count) for source, count in counts.items()}}
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
    train, test = split[split["split"] == "train"], split[split["split"] == "test"]
    rule = train.groupby("class")["source"].agg(lambda sources: sources.value_counts().idxmax())
    return float((test["class"].map(rule) == test["source"]).mean())


def saliency_sample(test: pd.DataFrame, per_class: int, seed: int) -> pd.DataFrame:
    """A fixed sample of test images, ``per_class`` of each class (fewer if a class has fewer)."""
    parts = [rows.sample(n=min(per_class, len(rows)), random_state=np.random.default_rng([seed, index]))
             for index, (_, rows) in enumerate(test.groupby("class", sort=True))]
    return pd.concat(parts).sort_values(["class", "image_id"], ignore_index=True)


def gradcam(model: keras.Model, batch: np.ndarray, class_indices: np.ndarray, layer: str | None) -> np.ndarray:
    """Grad-CAM maps (n, height, width) in [0, 1] for the given class of each image.

    ``model`` is a classifier built by :func:`cxr.model.build_classifier` (preprocess -> base ->
    pool -> head). The map is ReLU(sum_k a_k A_k) of the base's feature maps A at ``layer``
    (None: the base's output), where a_k is the mean gradient of the class score over A_k,
    resized to the input size and scaled so each image's maximum is 1 (all zero if none is
    positive).
    """
    base = base_of(model)
    target = base.get_layer(layer).output if layer else base.output
    inner = keras.Model(base.inputs, [target, base.output])
    inputs = tf.convert_to_tensor(batch, tf.float32)
    with tf.GradientTape() as tape:
        feature_maps, features = inner(model.get_layer("preprocess")(inputs), training=False)
        probabilities = model.get_layer("head")(model.get_layer("pool")(features), training=False)
        scores = tf.gather(tf.cast(probabilities, tf.float32), class_indices, axis=1, batch_dims=1)
    gradients = tf.cast(tape.gradient(scores, feature_maps), tf.float32)
    weights = tf.reduce_mean(gradients, axis=(1, 2))
    maps = tf.nn.relu(tf.einsum("bhwc,bc->bhw", tf.cast(feature_maps, tf.float32), weights))
    maps = tf.image.resize(maps[..., None], inputs.shape[1:3], method="bilinear")[..., 0].numpy()
    peak = maps.reshape(len(maps), -1).max(axis=1)
    return np.divide(maps, peak[:, None, None], out=np.zeros_like(maps), where=peak[:, None, None] > 0)


def box_share(maps: np.ndarray, fraction: float) -> np.ndarray:
    """Per map, the share of its mass inside the central square of side ``fraction`` (NaN if empty).

    A map spread evenly over the image gives about ``fraction ** 2``.
    """
    box = images.center_box(maps.shape[1], fraction)
    total = maps.sum(axis=(1, 2))
    inside = maps[:, box, box].sum(axis=(1, 2))
    return np.divide(inside, total, out=np.full_like(total, np.nan), where=total > 0)


def even_share(size: int, fraction: float) -> float:
    """The lung-box share of a saliency map spread evenly over a ``size`` x ``size`` image."""
    return float(box_share(np.ones((1, size, size)), fraction)[0])


def scored(table: pd.DataFrame, classes: list[str], resamples: int, seed: int) -> dict:
    """Accuracy, macro F1 and recall per class of a predictions table, with patient-bootstrap 95%
    intervals, flattened (``accuracy``, ``accuracy_low``, ...); NaN (a class absent) -> None."""
    return without_nan(evaluation.flat_intervals(
        evaluation.patient_bootstrap(table, classes, resamples=resamples, seed=seed)))


def retrain(backbone: Backbone, split: pd.DataFrame, classes: list[str], size: int, config: Config,
            work_dir: Path, hidden_center: float | None = None) -> keras.Model:
    """A fresh classifier of ``backbone`` trained exactly as ``train@`` trains it, on ``classes``."""
    model = build_classifier(backbone, size, len(classes), config.train.head, config.train.weights)
    training.train_frozen(model, split, classes, size, config.train, config.seed, work_dir,
                          hidden_center=hidden_center)
    return model


def predicted_table(model: keras.Model, rows: pd.DataFrame, classes: list[str], size: int, config: Config,
                     hidden_center: float | None = None) -> pd.DataFrame:
    probabilities = evaluation.predict(model, rows, classes, size, config.train, hidden_center)
    return evaluation.predictions_frame(rows, classes, probabilities)


def source_probe(backbone: Backbone, split: pd.DataFrame, size: int, config: Config, work_dir: Path) -> pd.DataFrame:
    """Train the backbone and head to predict each image's source; its test predictions, with
    ``actual``/``predicted`` sources and the image's task ``class``."""
    sources = sorted(split["source"].unique())
    as_sources = split.assign(**{"class": split["source"]})
    model = retrain(backbone, as_sources, sources, size, config, work_dir)
    test = as_sources[as_sources["split"] == "test"]
    return predicted_table(model, test, sources, size, config).assign(
        **{"class": split.loc[split["split"] == "test", "class"].to_numpy()})


def lungs_hidden(backbone: Backbone, split: pd.DataFrame, classes: list[str], size: int, config: Config,
                 work_dir: Path) -> pd.DataFrame:
    """Train and test the classifier on images whose lung box is blanked; its test predictions."""
    box = config.audit.lung_box
    model = retrain(backbone, split, classes, size, config, work_dir, hidden_center=box)
    return predicted_table(model, split[split["split"] == "test"], classes, size, config, hidden_center=box)


def map_side(model: keras.Model, layer: str | None) -> int:
    """The side of the feature map Grad-CAM reads: its resolution before upsampling."""
    base = base_of(model)
    return int((base.get_layer(layer).output if layer else base.output).shape[1])


def saliency(model: keras.Model, backbone: Backbone, sample: pd.DataFrame, classes: list[str], size: int,
             box: float) -> tuple[np.ndarray, np.ndarray, pd.DataFrame]:
    """Grad-CAM of the predicted class for each sampled image: (images, maps, one row per image)."""
    batch = np.stack([images.decode_resize(tf.constant(path), size, int(orientation)).numpy()
                      for path, orientation in zip(sample["path"], images.orientations(sample))])
    predicted = np.argmax(model.predict(batch, verbose=0), axis=1)
    maps = gradcam(model, batch, predicted, backbone.gradcam_layer)
    table = sample[["image_id", "source", "class"]].reset_index(drop=True).assign(
        predicted=np.asarray(classes)[predicted], lung_box_share=box_share(maps, box))
    return batch, maps, table


def summary(tables: dict[str, pd.DataFrame], saliency_table: pd.DataFrame, split: pd.DataFrame,
            classes: list[str], size: int, config: Config, *, layer: str | None, map_side: int) -> dict:
    """The audit's metrics for one backbone (``reports/audit/<backbone>.json``) from its prediction
    tables (``classifier``, ``source_probe``, ``lungs_hidden``, ``external``) and saliency table."""
    resamples, seed = config.evaluate.bootstrap_resamples, config.evaluate.bootstrap_seed
    probe = tables["source_probe"]
    within = within_class_source_accuracy(probe, resamples=resamples, seed=seed)
    confound = source_confound(split)
    return without_nan({
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
        },
        "saliency": {
            "lung_box_share": float(saliency_table["lung_box_share"].mean()),
            "per_class": saliency_table.groupby("class")["lung_box_share"].mean().to_dict(),
            "uniform_share": even_share(size, config.audit.lung_box),
            "layer": layer or "base output",
            "map_side": map_side,
            "images": len(saliency_table),
        },
        "external": {"images": len(tables["external"]), **scored(tables["external"], classes, resamples, seed)},
    })


def without_nan(value):
    """``value`` with every NaN float replaced by None (JSON and DVC metrics have no NaN)."""
    if isinstance(value, dict):
        return {key: without_nan(item) for key, item in value.items()}
    return None if isinstance(value, float) and math.isnan(value) else value


# Thresholds the verdict uses; audit.md states them next to the numbers.
PROBE_MARGIN = 0.2  # within-class probe accuracy this far above chance: the sources look different
SALIENCY_MARGIN = 0.05  # lung-box share of saliency this far below an even spread: it looks elsewhere
EXTERNAL_DROP = 0.2  # COVID recall this much lower on the external source than on the test split


def evidence(metrics: dict, n_classes: int) -> dict[str, bool]:
    """Which of the four tests point at a source shortcut, for one backbone's audit metrics."""
    probe, hidden, saliency = metrics["source_probe"], metrics["lungs_hidden"], metrics["saliency"]
    external, internal = metrics.get("external", {}), metrics["classifier"]
    return {
        "probe": (probe["within_class_accuracy"] or 0) >= probe["within_class_chance"] + PROBE_MARGIN,
        "lungs_hidden": (hidden["balanced_accuracy_low"] or 0) > 1 / n_classes,
        "saliency": saliency["lung_box_share"] is not None
        and saliency["lung_box_share"] <= saliency["uniform_share"] - SALIENCY_MARGIN,
        "external": external.get("recall_COVID") is not None and internal.get("recall_COVID") is not None
        and external["recall_COVID"] <= internal["recall_COVID"] - EXTERNAL_DROP,
    }


def evidence_text(metrics: dict | None, n_classes: int) -> str:
    """The audit's tests that point at a source shortcut, for a registered version's tag."""
    if metrics is None:
        return "not audited"
    found = [name for name, shown in evidence(metrics, n_classes).items() if shown]
    return ", ".join(found) if found else "none of the four tests"


def verdict(backbone: str, metrics: dict, n_classes: int) -> str:
    """One paragraph, generated from the numbers, on whether the COVID result is COVID detection."""
    found = evidence(metrics, n_classes)
    probe, hidden, saliency = metrics["source_probe"], metrics["lungs_hidden"], metrics["saliency"]
    internal = metrics["classifier"]
    if probe["within_class_accuracy"] is None:
        probe_sentence = (f"No class has test images from two sources, so the source probe cannot be scored within "
                          f"a class (its plain accuracy, {probe['accuracy']:.2f}, is no evidence: the class alone "
                          f"gives {probe['class_only_accuracy']:.2f}).")
    else:
        probe_sentence = (f"The source probe tells the sources apart among images of the same class with balanced "
                          f"accuracy {probe['within_class_accuracy']:.2f} (chance {probe['within_class_chance']:.2f}; "
                          f"{within_class_text(probe.get('within_class', {}))})"
                          + (": the sources look different whatever the diagnosis." if found["probe"] else
                             ", so the sources are hard to tell apart."))
    sentences = [
        probe_sentence,
        f"With the lungs hidden, the classifier still reaches a balanced accuracy of "
        f"{evaluation.interval_text(hidden, 'balanced_accuracy')} (chance {1 / n_classes:.2f}) and a COVID recall of "
        f"{_number(hidden.get('recall_COVID'))}.",
        f"Grad-CAM puts {_number(saliency['lung_box_share'])} of its mass inside the lung box "
        f"({saliency['uniform_share']:.2f} if it were spread evenly; {_map(saliency)}).",
    ]
    if "external" in metrics:
        sentences.append(f"On the external source, COVID recall is {_number(metrics['external'].get('recall_COVID'))}"
                         f" against {_number(internal.get('recall_COVID'))} on the test split.")
    others = [name for name in ("lungs_hidden", "saliency", "external") if found[name]]
    if found["probe"] and others:
        conclusion = ("The COVID result is not evidence of COVID detection: the model can recognise the "
                      f"source, and {_listing(others)} show{'s' if len(others) == 1 else ''} it does.")
    elif found["probe"]:
        conclusion = ("The sources differ visibly, so the model could use them; the other tests do not show "
                      "that it does, but they do not rule it out.")
    elif others:
        conclusion = (f"{_listing(others)[0].upper()}{_listing(others)[1:]} point{'s' if len(others) == 1 else ''} "
                      "away from the lungs: read the COVID result with care.")
    else:
        conclusion = "These tests find no sign that the model relies on the source of the image."
    return f"**{backbone}.** " + " ".join(sentences) + " " + conclusion


def within_class_text(per_class: dict) -> str:
    """``BACTERIA 0.92 [0.75, 1.00] on 3 covid_chestxray + 41 kermany images; ...`` (what each score rests on)."""
    return "; ".join(
        f"{name} {evaluation.interval_text(result, 'balanced_accuracy')} on "
        + " + ".join(f"{count} {source}" for source, count in result["images"].items()) + " images"
        for name, result in per_class.items()
    ) or "no class has two sources"


LABELS = {"lungs_hidden": "the lungs-hidden classifier", "saliency": "the saliency maps",
          "external": "the external source"}


def _listing(names: list[str]) -> str:
    labels = [LABELS[name] for name in names]
    return labels[0] if len(labels) == 1 else ", ".join(labels[:-1]) + " and " + labels[-1]


def _map(saliency: dict) -> str:
    side = saliency.get("map_side")
    return "map size unknown" if side is None else f"a {side}x{side} feature map"


def _number(value) -> str:
    return "-" if value is None else f"{value:.2f}"


def audit_markdown(results: dict[str, dict], confound: dict, external: dict | None, classes: list[str],
                   note: str) -> str:
    """``reports/eval/audit.md``: the source x class table, one row of numbers per backbone,
    the generated verdicts, and what each number means."""
    class_header = " | ".join(classes)
    lines = ["# Shortcut audit: COVID, or the source of the image?", "", note, "",
             "## How much the source alone gives away", "",
             f"| source | {class_header} |", "|---|" + "---|" * len(classes)]
    for source, counts in confound["images_per_source_class"].items():
        lines.append(f"| {source} | " + " | ".join(str(counts.get(name, 0)) for name in classes) + " |")
    rule = ", ".join(f"{source} -> {name}" for source, name in confound["source_only_rule"].items())
    lines += ["", f"Predicting the class from the source alone (each source's most common training class: "
              f"{rule}) scores {confound['source_only_accuracy']:.2f} test accuracy; "
              f"predicting the most common class for every image scores {confound['majority_class_accuracy']:.2f}."]
    if external:
        counts = "; ".join(f"{source}: " + ", ".join(f"{count} {name}" for name, count in values.items())
                           for source, values in external["images_per_source_class"].items())
        lines += ["", f"External test source (never trained on): {counts}."]
    lines += ["", "## Results", "",
              "| backbone | test accuracy | source probe within class (chance) | source probe accuracy "
              "(class-only guess) | lungs hidden: balanced accuracy | lungs hidden: COVID recall | "
              "Grad-CAM mass in lung box (even spread; map) | external: accuracy | external: COVID recall |",
              "|---|---|---|---|---|---|---|---|---|"]
    for backbone, metrics in results.items():
        probe, hidden, saliency = metrics["source_probe"], metrics["lungs_hidden"], metrics["saliency"]
        external_metrics = metrics.get("external", {})
        lines.append(" | ".join([
            f"| {backbone}", evaluation.interval_text(metrics["classifier"], "accuracy"),
            f"{_number(probe['within_class_accuracy'])} ({probe['within_class_chance']:.2f})",
            f"{_number(probe['accuracy'])} ({probe['class_only_accuracy']:.2f})",
            evaluation.interval_text(hidden, "balanced_accuracy"), _number(hidden.get("recall_COVID")),
            f"{_number(saliency['lung_box_share'])} ({saliency['uniform_share']:.2f}; "
            f"{saliency.get('map_side')}x{saliency.get('map_side')} map)",
            evaluation.interval_text(external_metrics, "accuracy"), _number(external_metrics.get("recall_COVID")),
        ]) + " |")
    lines += ["", "### Source probe within each class", "",
              "Scored only where a class has test images from two or more sources; each score rests on the images "
              "it names.", "", "| backbone | class | test images per source | balanced accuracy [95% CI] (chance) |",
              "|---|---|---|---|"]
    for backbone, metrics in results.items():
        probe = metrics["source_probe"]
        for name, result in probe.get("within_class", {}).items():
            images = ", ".join(f"{source} {count}" for source, count in result["images"].items())
            lines.append(f"| {backbone} | {name} | {images} | {evaluation.interval_text(result, 'balanced_accuracy')} "
                         f"({probe['within_class_chance']:.2f}) |")
    lines += ["", "## Verdict", ""]
    for backbone, metrics in results.items():
        lines += [verdict(backbone, metrics, len(classes)), ""]
    lines += [
        "## What the numbers are", "",
        "- **Source probe**: the same backbone and head, trained like `train@<backbone>` but to predict "
        "each image's source. *Within class* is its recall averaged over sources, among test images of one "
        "class, averaged over the classes that more than one source provides: a guess from the class alone "
        "scores exactly the chance level, so anything above it is the look of the source. A margin of "
        f"{PROBE_MARGIN} above chance counts as a difference.",
        "- **Lungs hidden**: the classifier retrained and tested on images whose central square (side "
        "`audit.lung_box` of the image) is black, as Maguolo & Nanni (2021) did. Its balanced accuracy "
        "counts as above chance when the lower end of its 95% patient-bootstrap interval is.",
        "- **Grad-CAM**: saliency of the predicted class at the backbone's last feature map (layer in the "
        "backbone registry), for `audit.saliency_images_per_class` test images per class; the share of its "
        "mass inside the lung box, against the share an even spread would have; "
        f"{SALIENCY_MARGIN} or more below it counts as looking elsewhere. A feature map of 1x1 (small inputs) "
        "cannot localise anything. Overlays: "
        + ", ".join(f"[{backbone}](../audit/{backbone}/gradcam.png)" for backbone in results) + ".",
        f"- **External**: the trained classifier on the external source's images; a COVID recall "
        f"{EXTERNAL_DROP} or more below the test split's counts as a drop.",
        "- Intervals are 95% percentile intervals of a bootstrap over patients.",
    ]
    return "\n".join(lines) + "\n"
