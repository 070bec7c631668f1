"""What the audit's numbers say: which tests point at a source shortcut, and the verdict paragraph
generated from the numbers (``audit.md`` is :mod:`cxr.report.audit.markdown`). ``positive`` is
the class the study asks about (``positive_class`` in params.yaml): its sensitivity is what the
external test compares."""

from __future__ import annotations

from cxr.report import evaluation

# Thresholds the verdict uses; audit.md states them next to the numbers.
PROBE_MARGIN = 0.2  # within-class probe accuracy this far above chance: the sources look different
SALIENCY_MARGIN = 0.05  # saliency's share in the lungs this far below an even spread's: it looks elsewhere
EXTERNAL_DROP = 0.2  # positive-class sensitivity this much lower on the external source than on the test split


def evidence(metrics: dict, n_classes: int, positive: str) -> dict[str, bool]:
    """Which of the four tests point at a source shortcut, for one backbone's audit metrics.

    Parameters
    ----------
    metrics : dict
        One backbone's audit metrics (``source_probe``, ``lungs_hidden``, ``saliency``,
        ``classifier`` and optionally ``external``).
    n_classes : int
        The number of classes (chance balanced accuracy is ``1 / n_classes``).
    positive : str
        The positive class, whose sensitivity the external test compares.

    Returns
    -------
    dict of str to bool
        ``probe`` (the within-class source probe is at least the margin above chance),
        ``lungs_hidden`` (the lower end of the lungs-hidden balanced accuracy interval is above
        chance), ``saliency`` (Grad-CAM's share inside the lungs, real mask or box, is the margin or
        more below the lungs' share of the image) and ``external`` (the positive class's
        sensitivity drops by the margin or more on the external source).
    """
    probe, hidden, saliency = metrics["source_probe"], metrics["lungs_hidden"], metrics["saliency"]
    external, internal = metrics.get("external", {}), metrics["classifier"]
    key = f"sensitivity_{positive}"
    return {
        "probe": (probe["within_class_accuracy"] or 0) >= probe["within_class_chance"] + PROBE_MARGIN,
        "lungs_hidden": (hidden["balanced_accuracy_low"] or 0) > 1 / n_classes,
        "saliency": saliency["lung_share"] is not None
        and saliency["lung_share"] <= saliency["lung_area_share"] - SALIENCY_MARGIN,
        "external": external.get(key) is not None
        and internal.get(key) is not None
        and external[key] <= internal[key] - EXTERNAL_DROP,
    }


def evidence_text(metrics: dict | None, n_classes: int, positive: str) -> str:
    """The audit's tests that point at a source shortcut, for a registered version's tag.

    Parameters
    ----------
    metrics : dict or None
        One backbone's audit metrics; None: not audited.
    n_classes : int
        The number of classes.
    positive : str
        The positive class.

    Returns
    -------
    str
        The tests' names joined by commas, ``none of the four tests`` or ``not audited``.
    """
    if metrics is None:
        return "not audited"
    found = [name for name, shown in evidence(metrics, n_classes, positive).items() if shown]
    return ", ".join(found) if found else "none of the four tests"


def verdict(backbone: str, metrics: dict, n_classes: int, positive: str, min_images: int | None = None) -> str:
    """One paragraph, generated from the numbers, on whether the ``positive`` result is detection of it.

    A within-class probe score on fewer than ``min_images`` images of a source is marked not
    interpretable.

    Parameters
    ----------
    backbone : str
        The backbone, named at the start of the paragraph.
    metrics : dict
        Its audit metrics (:func:`cxr.report.audit.measures.summary`).
    n_classes : int
        The number of classes.
    positive : str
        The positive class.
    min_images : int or None, optional
        The fewest test images per source for a within-class probe score to be interpretable.

    Returns
    -------
    str
        The Markdown paragraph.
    """
    found = evidence(metrics, n_classes, positive)
    key = f"sensitivity_{positive}"
    probe, hidden, saliency = metrics["source_probe"], metrics["lungs_hidden"], metrics["saliency"]
    internal = metrics["classifier"]
    if probe["within_class_accuracy"] is None:
        probe_sentence = (
            f"No class has test images from two sources, so the source probe cannot be scored within "
            f"a class (its plain accuracy, {probe['accuracy']:.2f}, is no evidence: the class alone "
            f"gives {probe['class_only_accuracy']:.2f})."
        )
    else:
        probe_sentence = (
            f"The source probe tells the sources apart among images of the same class with balanced "
            f"accuracy {probe['within_class_accuracy']:.2f} (chance {probe['within_class_chance']:.2f}; "
            f"{within_class_text(probe.get('within_class', {}), min_images)})"
            + (
                ": the sources look different whatever the diagnosis."
                if found["probe"]
                else ", so the sources are hard to tell apart."
            )
        )
    sentences = [
        probe_sentence,
        f"With the lungs hidden ({region_text(hidden.get('region'))}), the classifier still reaches a "
        f"balanced accuracy of "
        f"{evaluation.interval_text(hidden, 'balanced_accuracy')} (chance {1 / n_classes:.2f}) "
        f"and a {positive} sensitivity of "
        f"{two_decimals(hidden.get(key))}.",
        f"Grad-CAM puts {two_decimals(saliency['lung_share'])} of its mass inside the lungs "
        f"({two_decimals(saliency['lung_area_share'])} if it were spread evenly; {_regions(saliency)}; "
        f"{_map(saliency)}).",
    ]
    if "external" in metrics:
        sentences.append(
            f"On the external source, {positive} sensitivity is {two_decimals(metrics['external'].get(key))}"
            f" against {two_decimals(internal.get(key))} on the test split."
        )
    others = [name for name in ("lungs_hidden", "saliency", "external") if found[name]]
    if found["probe"] and others:
        conclusion = (
            f"The {positive} result is not evidence of {positive} detection: the model can recognise the "
            f"source, and {_listing(others)} show{'s' if len(others) == 1 else ''} it does."
        )
    elif found["probe"]:
        conclusion = (
            "The sources differ visibly, so the model could use them; the other tests do not show "
            "that it does, but they do not rule it out."
        )
    elif others:
        conclusion = (
            f"{_listing(others)[0].upper()}{_listing(others)[1:]} point{'s' if len(others) == 1 else ''} "
            f"away from the lungs: read the {positive} result with care."
        )
    else:
        conclusion = "These tests find no sign that the model relies on the source of the image."
    return f"**{backbone}.** " + " ".join(sentences) + " " + conclusion


def too_few(result: dict, min_images: int | None) -> str:
    """`` (not interpretable: 1 covid_chestxray image, fewer than 5)`` when the smallest source of a
    within-class probe score has fewer than ``min_images`` images (``release.min_images``), else ""."""
    if min_images is None or not result["images"]:
        return ""
    source, count = min(result["images"].items(), key=lambda item: item[1])
    if count >= min_images:
        return ""
    return f" (not interpretable: {count} {source} image{'s' if count != 1 else ''}, fewer than {min_images})"


def within_class_text(per_class: dict, min_images: int | None = None) -> str:
    """``BACTERIA 0.92 [0.75, 1.00] on 3 covid_chestxray + 41 kermany images; ...`` (what each score rests
    on), each score whose smallest source has fewer than ``min_images`` images marked not interpretable."""
    return (
        "; ".join(
            f"{name} {evaluation.interval_text(result, 'balanced_accuracy')} on "
            + " + ".join(f"{count} {source}" for source, count in result["images"].items())
            + " images"
            + too_few(result, min_images)
            for name, result in per_class.items()
        )
        or "no class has two sources"
    )


LABELS = {
    "lungs_hidden": "the lungs-hidden classifier",
    "saliency": "the saliency maps",
    "external": "the external source",
}


def _listing(names: list[str]) -> str:
    labels = [LABELS[name] for name in names]
    return labels[0] if len(labels) == 1 else ", ".join(labels[:-1]) + " and " + labels[-1]


def _map(saliency: dict) -> str:
    side, last = saliency.get("map_side"), saliency.get("last_map_side")
    if side is None:
        return "map size unknown"
    finer = f", finer than the last feature map's {last}x{last}" if last is not None and last != side else ""
    return f"a {side}x{side} feature map at {saliency.get('layer')}{finer}"


def _regions(saliency: dict) -> str:
    """Which images were measured with a real lung mask, and what the box gives on those."""
    regions, real = saliency.get("regions", {}), saliency.get("real_mask", {})
    sampled = f"real lung masks on {regions.get('mask', 0)} images, the central box on {regions.get('box', 0)}"
    if not real.get("images"):
        return sampled + "; no test image has a real lung mask"
    shown = real["images"] - real.get("empty_maps", 0)
    if not shown:
        return f"{sampled}; the maps of all {real['images']} test images with a real mask are empty"
    return (
        f"{sampled}; on the {shown} of {real['images']} test images with a real mask whose map is not empty, "
        f"{two_decimals(real.get('lung_share'))} inside the lungs against "
        f"{two_decimals(real.get('lung_area_share'))} of the image, and "
        f"{two_decimals(real.get('lung_box_share'))} inside the box"
    )


def region_text(region: dict | None) -> str:
    """What the lungs-hidden classifier blanked, in words (``lungs_hidden.region`` of an audit)."""
    if not region:
        return "the central lung box blanked"
    if region["kind"] == "box":
        text = "the central lung box blanked: no training image has a real lung mask"
    elif region["kind"] == "atlas":
        text = f"a lung atlas of {region['masks']} real masks, grown by {region['margin_px']} px, blanked in each image"
    else:
        text = f"each image's own real lung mask, grown by {region['margin_px']} px, blanked"
    if region.get("test_images"):
        text += (
            f"; it covers {two_decimals(region['lungs_blanked'])} of the real lungs of "
            f"{region['test_images']} test images, at least {two_decimals(region['lungs_blanked_min'])} each, "
            f"where the central box would cover {two_decimals(region['box_lungs_blanked'])}"
        )
    return text


def two_decimals(value) -> str:
    """``value`` with two decimals; ``-`` for None."""
    return "-" if value is None else f"{value:.2f}"
