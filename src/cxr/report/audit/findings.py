"""What the audit's numbers say: which tests point at a source shortcut, the verdict paragraph
generated from the numbers, and ``audit.md``. ``positive`` is the class the study asks about
(``positive_class`` in params.yaml): its sensitivity is what the external test compares."""

from __future__ import annotations

from cxr.report import evaluation

# Thresholds the verdict uses; audit.md states them next to the numbers.
PROBE_MARGIN = 0.2  # within-class probe accuracy this far above chance: the sources look different
SALIENCY_MARGIN = 0.05  # lung-box share of saliency this far below an even spread: it looks elsewhere
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
        chance), ``saliency`` (Grad-CAM's lung-box share is the margin or more below an even
        spread's) and ``external`` (the positive class's sensitivity drops by the margin or more on
        the external source).
    """
    probe, hidden, saliency = metrics["source_probe"], metrics["lungs_hidden"], metrics["saliency"]
    external, internal = metrics.get("external", {}), metrics["classifier"]
    key = f"sensitivity_{positive}"
    return {
        "probe": (probe["within_class_accuracy"] or 0) >= probe["within_class_chance"] + PROBE_MARGIN,
        "lungs_hidden": (hidden["balanced_accuracy_low"] or 0) > 1 / n_classes,
        "saliency": saliency["lung_box_share"] is not None
        and saliency["lung_box_share"] <= saliency["uniform_share"] - SALIENCY_MARGIN,
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
        f"With the lungs hidden, the classifier still reaches a balanced accuracy of "
        f"{evaluation.interval_text(hidden, 'balanced_accuracy')} (chance {1 / n_classes:.2f}) "
        f"and a {positive} sensitivity of "
        f"{_number(hidden.get(key))}.",
        f"Grad-CAM puts {_number(saliency['lung_box_share'])} of its mass inside the lung box "
        f"({saliency['uniform_share']:.2f} if it were spread evenly; {_map(saliency)}).",
    ]
    if "external" in metrics:
        sentences.append(
            f"On the external source, {positive} sensitivity is {_number(metrics['external'].get(key))}"
            f" against {_number(internal.get(key))} on the test split."
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
    side = saliency.get("map_side")
    return "map size unknown" if side is None else f"a {side}x{side} feature map"


def _number(value) -> str:
    return "-" if value is None else f"{value:.2f}"


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
        f"Grad-CAM mass in lung box (even spread; map) | external: accuracy | external: {positive} sensitivity |",
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
                    f"{_number(probe['within_class_accuracy'])} ({probe['within_class_chance']:.2f})",
                    f"{_number(probe['accuracy'])} ({probe['class_only_accuracy']:.2f})",
                    evaluation.interval_text(hidden, "balanced_accuracy"),
                    _number(hidden.get(key)),
                    f"{_number(saliency['lung_box_share'])} ({saliency['uniform_share']:.2f}; "
                    f"{saliency.get('map_side')}x{saliency.get('map_side')} map)",
                    evaluation.interval_text(external_metrics, "accuracy"),
                    _number(external_metrics.get(key)),
                ]
            )
            + " |"
        )
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
        "- **Lungs hidden**: the classifier retrained and tested on images whose central square (side "
        "`audit.lung_box` of the image) is black, as Maguolo & Nanni (2021) did. Its balanced accuracy "
        "counts as above chance when the lower end of its 95% patient-bootstrap interval is.",
        "- **Grad-CAM**: saliency of the predicted class at the backbone's last feature map (layer in the "
        "backbone registry), for `audit.saliency_images_per_class` test images per class; the share of its "
        "mass inside the lung box, against the share an even spread would have; "
        f"{SALIENCY_MARGIN} or more below it counts as looking elsewhere. A feature map of 1x1 (small inputs) "
        "cannot localise anything. Overlays: "
        + ", ".join(f"[{backbone}](../audit/{backbone}/gradcam.png)" for backbone in results)
        + ".",
        f"- **External**: the trained classifier on the external source's images; a {positive} sensitivity "
        f"{EXTERNAL_DROP} or more below the test split's counts as a drop.",
        "- Intervals are 95% percentile intervals of a bootstrap over patients; a proportion at 0 or 1 in every "
        "resample has the exact Clopper-Pearson interval on its images instead.",
    ]
    return "\n".join(lines) + "\n"
