"""``reports/eval/audit.md``: the shortcut audit of every backbone as Markdown, with the verdicts
that :mod:`cxr.report.audit.findings` generates and the thresholds it uses."""

from __future__ import annotations

from cxr.report import evaluation
from cxr.report.audit.findings import EXTERNAL_DROP, PROBE_MARGIN, SALIENCY_MARGIN, too_few, two_decimals, verdict


def audit_markdown(
    results: dict[str, dict],
    confound: dict,
    external: dict | None,
    classes: list[str],
    note: str,
    positive: str,
    min_images: int | None = None,
) -> str:
    """``reports/eval/audit.md``: the shortcut audit of every backbone as Markdown.

    The source x class table, one row of numbers per backbone, the generated verdicts, and what each
    number means; a within-class probe score whose smallest source has fewer than ``min_images``
    images (``release.min_images``) is marked not interpretable. The lungs-hidden test follows
    Maguolo & Nanni (2021); the saliency maps are Grad-CAM (Selvaraju et al., ICCV 2017).

    Parameters
    ----------
    results : dict of str to dict
        ``{backbone: audit metrics}`` (:func:`cxr.report.audit.measures.summary`'s dicts).
    confound : dict
        The split report's ``source_confound``: ``images_per_source_class``, ``source_only_rule``,
        ``source_only_accuracy`` and ``majority_class_accuracy``.
    external : dict or None
        The external stage's report (``images_per_source_class``, or ``note`` when there is no
        external test); None: no external source.
    classes : list of str
        The task's classes.
    note : str
        A paragraph on the data's origin, put under the title.
    positive : str
        The positive class (``positive_class``), whose sensitivity is reported.
    min_images : int or None, optional
        The fewest test images per source for a within-class probe score to be interpretable.

    Returns
    -------
    str
        The Markdown text, ending in a newline.

    References
    ----------
    Maguolo, G. & Nanni, L. (2021). A critic evaluation of methods for COVID-19 automatic detection
    from X-ray images.

    Selvaraju, R. R. et al. (2017). Grad-CAM: Visual explanations from deep networks via
    gradient-based localization. ICCV 2017.
    """
    class_header = " | ".join(classes)
    key = f"sensitivity_{positive}"
    lines = [
        f"# Shortcut audit: {positive}, or the source of the image?",
        "",
        note,
        "",
        "## How much the source alone gives away",
        "",
        f"| source | {class_header} |",
        "|---|" + "---|" * len(classes),
    ]
    for source, counts in confound["images_per_source_class"].items():
        lines.append(f"| {source} | " + " | ".join(str(counts.get(name, 0)) for name in classes) + " |")
    rule = ", ".join(f"{source} -> {name}" for source, name in confound["source_only_rule"].items())
    lines += [
        "",
        f"Predicting the class from the source alone (each source's most common training class: "
        f"{rule}) scores {confound['source_only_accuracy']:.2f} test accuracy; "
        f"predicting the most common class for every image scores {confound['majority_class_accuracy']:.2f}.",
    ]
    if external and external.get("note"):
        lines += ["", f"External test source: none ({external['note']})."]
    elif external:
        counts = "; ".join(
            f"{source}: " + ", ".join(f"{count} {name}" for name, count in values.items())
            for source, values in external["images_per_source_class"].items()
        )
        lines += ["", f"External test source (never trained on): {counts}."]
    lines += [
        "",
        "## Results",
        "",
        "| backbone | test accuracy | source probe within class (chance) | source probe accuracy "
        f"(class-only guess) | lungs hidden: balanced accuracy | lungs hidden: {positive} sensitivity | "
        "Grad-CAM mass in the lungs (even spread; map; real masks) | external: accuracy | "
        f"external: {positive} sensitivity |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for backbone, metrics in results.items():
        probe, hidden, saliency = metrics["source_probe"], metrics["lungs_hidden"], metrics["saliency"]
        external_metrics = metrics.get("external", {})
        lines.append(
            " | ".join(
                [
                    f"| {backbone}",
                    evaluation.interval_text(metrics["classifier"], "accuracy"),
                    f"{two_decimals(probe['within_class_accuracy'])} ({probe['within_class_chance']:.2f})",
                    f"{two_decimals(probe['accuracy'])} ({probe['class_only_accuracy']:.2f})",
                    evaluation.interval_text(hidden, "balanced_accuracy"),
                    two_decimals(hidden.get(key)),
                    f"{two_decimals(saliency['lung_share'])} ({two_decimals(saliency['lung_area_share'])}; "
                    f"{saliency.get('map_side')}x{saliency.get('map_side')} map; "
                    f"{saliency.get('regions', {}).get('mask', 0)} of {saliency.get('images')})",
                    evaluation.interval_text(external_metrics, "accuracy"),
                    two_decimals(external_metrics.get(key)),
                ]
            )
            + " |"
        )
    lines += real_lungs_table(results)
    lines += [
        "",
        "### Source probe within each class",
        "",
        "Scored only where a class has test images from two or more sources; each score rests on the images it names.",
        "",
        "| backbone | class | test images per source | balanced accuracy [95% CI] (chance) |",
        "|---|---|---|---|",
    ]
    for backbone, metrics in results.items():
        probe = metrics["source_probe"]
        for name, result in probe.get("within_class", {}).items():
            images = ", ".join(f"{source} {count}" for source, count in result["images"].items())
            lines.append(
                f"| {backbone} | {name} | {images} | {evaluation.interval_text(result, 'balanced_accuracy')} "
                f"({probe['within_class_chance']:.2f}){too_few(result, min_images)} |"
            )
    lines += ["", "## Verdict", ""]
    for backbone, metrics in results.items():
        lines += [verdict(backbone, metrics, len(classes), positive, min_images), ""]
    lines += [
        "## What the numbers are",
        "",
        "- **Source probe**: the same backbone and head, trained like `train@<backbone>` but to predict "
        "each image's source. *Within class* is its sensitivity averaged over sources, among test images of one "
        "class, averaged over the classes that more than one source provides: a guess from the class alone "
        "scores exactly the chance level, so anything above it is the look of the source. A margin of "
        f"{PROBE_MARGIN} above chance counts as a difference.",
        "- **Lungs hidden**: the classifier retrained and tested on images whose lungs are black, as "
        "Maguolo & Nanni (2021) did: each image's own real lung mask (V7 Labs' outlines, `lung_masks` "
        "stage) grown by `audit.mask_margin` when every image has one; otherwise one lung atlas, the "
        "pixels inside half the training images' real masks, grown likewise, in every image (a blank "
        "whose shape differed by source would itself tell the sources apart); without real masks, "
        "the central square of side `audit.lung_box`. Its balanced accuracy counts as above chance "
        "when the lower end of its 95% patient-bootstrap interval is.",
        "- **Grad-CAM**: saliency of the predicted class, for `audit.saliency_images_per_class` test "
        "images per class, at the backbone's last feature map, or an earlier one (registry) where that "
        "is under 7x7 cells; the share of its mass inside the lungs (the image's real lung mask where "
        "it has one, else the central lung box), against the lungs' share of the image (what an even "
        f"spread would give); {SALIENCY_MARGIN} or more below it counts as looking elsewhere. Overlays: "
        + ", ".join(f"[{backbone}](../audit/{backbone}/gradcam.png)" for backbone in results)
        + ".",
        f"- **External**: the trained classifier on the external source's images; a {positive} sensitivity "
        f"{EXTERNAL_DROP} or more below the test split's counts as a drop.",
        "- Intervals are 95% percentile intervals of a bootstrap over patients; a proportion at 0 or 1 in every "
        "resample has the exact Clopper-Pearson interval on its images instead.",
    ]
    return "\n".join(lines) + "\n"


def real_lungs_table(results: dict[str, dict]) -> list[str]:
    """``### Real lungs against the box``: per backbone, what the lungs-hidden blank and Grad-CAM
    give with the real lung masks, beside what the central box gives on the same test images."""
    lines = [
        "",
        "### Real lungs against the box",
        "",
        "On the test images with a real lung mask (V7 Labs' outlines, `lung_masks` stage). Grad-CAM's "
        "shares are over the images whose map is not empty (images: those of all with a mask); a dash: "
        "every map empty, no positive evidence for the predicted class at its layer.",
        "",
        "| backbone | lungs hidden: blank | real lungs it covers (the box would) | Grad-CAM mass in the real "
        "lungs (their share of the image) | Grad-CAM mass in the box, same images (even spread) | images |",
        "|---|---|---|---|---|---|",
    ]
    for backbone, metrics in results.items():
        region, saliency = metrics["lungs_hidden"].get("region") or {}, metrics["saliency"]
        real = saliency.get("real_mask") or {}
        blank = {"mask": "each image's own mask", "atlas": f"atlas of {region.get('masks')} masks"}
        lines.append(
            f"| {backbone} | {blank.get(region.get('kind'), 'box')} | {two_decimals(region.get('lungs_blanked'))} "
            f"({two_decimals(region.get('box_lungs_blanked'))}) | {two_decimals(real.get('lung_share'))} "
            f"({two_decimals(real.get('lung_area_share'))}) | {two_decimals(real.get('lung_box_share'))} "
            f"({two_decimals(saliency.get('uniform_share'))}) | "
            f"{real.get('images', 0) - real.get('empty_maps', 0)} of {real.get('images', 0)} |"
        )
    return lines
