"""The model card of the registered model ``cxr-<task>``'s ``@candidate``: what it was trained on,
how well it does with uncertainty, calibration and operating point, whether the release gate let
it through, and what the shortcut audit says about what it learned."""

from __future__ import annotations

from cxr.core.config import Config
from cxr.core.spec import ModelSpec
from cxr.report import operating_point
from cxr.report.audit.findings import verdict
from cxr.report.evaluation import flat_intervals, interval_text
from cxr.report.metrics import shown


def model_card(
    config: Config,
    *,
    spec: ModelSpec,
    model_file: str,
    report: dict,
    split_report: dict,
    audit_metrics: dict | None,
    external_report: dict | None,
    registered_name: str,
    model_md5: str,
    note: str,
) -> str:
    """``reports/model_card.md`` for the released model, from the pipeline's own reports.

    The released model is ``@candidate``: a trained backbone or the fine-tuned model. The card names
    the model by its file's md5, never by an MLflow run id, so the same model gives the same card on
    every run.

    Parameters
    ----------
    config : Config
        The configuration (sources, filter, ``positive_class``, ``release.min_images``).
    spec : ModelSpec
        What the model is (its base, starting weights, unfrozen layers, input and classes).
    model_file : str
        The model file's name.
    report : dict
        The model's evaluation report (with ``intervals``, ``calibration``, ``operating_point`` and
        ``release``).
    split_report : dict
        The split stage's report (``images_per_class``, ``source_confound``).
    audit_metrics : dict or None
        The audit of its backbone (the one it was fine-tuned from); None: not audited.
    external_report : dict or None
        The external stage's report; None: no external test.
    registered_name : str
        The registered model (``cxr-<task>``).
    model_md5 : str
        The model file's md5.
    note : str
        A paragraph on the data's origin.

    Returns
    -------
    str
        The Markdown text, ending in a newline.
    """
    classes, base, positive = spec.classes, spec.finetuned_from or spec.backbone, config.positive_class
    intervals = flat_intervals(report["intervals"])
    confound = split_report["source_confound"]
    weights = f"weights: {spec.weights}" if spec.weights else "random initial weights"
    lines = [
        f"# Model card: {registered_name}",
        "",
        note,
        "",
        "## Model",
        "",
        f"- {base} base ({weights}), frozen and trained with a small head (`train@{base}`)"
        + (
            f", then its last {len(spec.unfrozen_layers)} weighted layers fine-tuned (`finetune`)."
            if spec.finetuned_from
            else "."
        )
        + (
            f" No fine-tuning epoch improved on the validation loss (best epoch 0): this model keeps the "
            f"{base} model's weights, and fine-tuning changed nothing."
            if spec.unchanged_from_base
            else ""
        ),
        f"- Input: RGB {spec.image_size}x{spec.image_size} pixels in [0, 255] (preprocessing is inside "
        f"the model). Output: probabilities of {', '.join(classes)} (task `{spec.task}`).",
        f"- Registered in MLflow as `{registered_name}`; `{model_file}` md5 `{model_md5}` (its "
        f"training run is the one tagged `model_md5 = '{model_md5}'`).",
        "",
        "## Intended use",
        "",
        "Research on reproducing and auditing a 2020 COVID-19 chest X-ray study. Not a medical device; not "
        "for diagnosis, triage or any decision about a patient.",
        "",
        "## Data",
        "",
        f"Sources: {', '.join(config.sources.use)} (`sources.origin: {config.sources.origin}`), modalities "
        f"{config.filter.modalities or 'all'}, views {config.filter.views or 'all'}; split by patient (no patient "
        "in two splits).",
        *_modality_caveat(config.filter.modalities),
        "",
        "| split | " + " | ".join(classes) + " |",
        "|---|" + "---|" * len(classes),
    ]
    for name, counts in split_report["images_per_class"].items():
        lines.append(f"| {name} | " + " | ".join(str(counts.get(cls, 0)) for cls in classes) + " |")
    lines += [
        "",
        "Images per source and class: "
        + "; ".join(
            f"{source}: " + ", ".join(f"{cls} {count}" for cls, count in counts.items())
            for source, counts in confound["images_per_source_class"].items()
        )
        + ".",
    ]
    lines += [
        "",
        "## Test results",
        "",
        f"{report['support']} test images; 95% intervals from a bootstrap over patients (exact Clopper-Pearson "
        "where a proportion sits at 0 or 1 in every resample).",
        "",
        "| statistic | value [95% CI] |",
        "|---|---|",
    ]
    lines += [f"| {label} | {interval_text(intervals, key)} |" for key, label in shown("card", classes)]
    aucs = {name: value for name, value in report["roc_auc"].items() if value is not None}
    lines += ["", "ROC AUC (one vs rest): " + ", ".join(f"{name} {value:.2f}" for name, value in aucs.items()) + "."]
    point = report.get("operating_point")
    if point and point["threshold"] is not None:
        test = point["test"]
        lines += [
            "",
            f"Operating point: decide {point['positive_class']} when p({point['positive_class']}) >= "
            f"{point['threshold']:.3f}, chosen on the validation split by `{point['rule']}`"
            + (f" ({point['target_sensitivity']:g})" if point["rule"] == "target_sensitivity" else "")
            + f". On the test split: sensitivity {operating_point.interval(test['sensitivity'])}, specificity "
            f"{operating_point.interval(test['specificity'])}, PPV {operating_point.interval(test['ppv'])}, NPV "
            f"{operating_point.interval(test['npv'])} (exact 95% intervals; n is the images each rests on; PPV and "
            "NPV hold at this test set's prevalence only).",
        ]
    lines += _calibration_and_release(report, positive)
    if external_report and audit_metrics and "external" in audit_metrics:
        external = audit_metrics["external"]
        lines += [
            "",
            f"External source never trained on ({', '.join(config.sources.external)}, "
            f"{external['images']} images), the {base} model{' before fine-tuning' if spec.finetuned_from else ''}: "
            f"accuracy {external['accuracy']:.2f}, {positive} sensitivity "
            f"{_value(external.get(f'sensitivity_{positive}'))}.",
        ]
    lines += ["", "## Shortcut audit", ""]
    if audit_metrics:
        lines += [
            verdict(base, audit_metrics, len(classes), positive, config.release.min_images),
            "",
            "Details: `reports/eval/audit.md`.",
        ]
    else:
        lines += ["No audit of this backbone was run."]
    lines += [
        "",
        "## Limitations",
        "",
        _confounding(confound, positive),
        "- The test set is small: differences between models within the intervals above are noise.",
        "- One model, one seed, one split: the held-out source above is a single test of whether the score "
        "travels. The same-site baseline and the cross-source matrix over seeds (`cxr-recipe same_site`, "
        '`cxr-recipe cross_source`; README "Is it COVID or the source?") measure how much of it is the source. '
        "Models trained on mixed public COVID-19 sources lose much of their score on a new hospital's images "
        "(DeGrave, Janizek & Lee, Nature Machine Intelligence 2021); expect the same of this one until the "
        "matrix says otherwise.",
        *_lung_outlines(audit_metrics),
        "- Views are filtered to those listed; the paediatric pneumonia images record no view.",
        "- The temperature and the threshold were fitted on this data's validation split; calibration, the "
        "operating point and performance on other hospitals, devices and populations are unknown.",
    ]
    return "\n".join(lines) + "\n"


def _confounding(confound: dict, positive: str) -> str:
    """The limitation line on source and class: confounded, or (one source) the same-site case."""
    sources = list(confound["images_per_source_class"])
    if len(sources) == 1:
        return (
            f"- One source ({sources[0]}): every class comes from the same site, so the source cannot tell "
            "the classes apart here (a same-site model); how the score holds on other sites is the held-out "
            "sources' test."
        )
    return (
        f"- Source and class are confounded: the source alone predicts the class with "
        f"{confound['source_only_accuracy']:.2f} test accuracy (most common class: "
        f"{confound['majority_class_accuracy']:.2f}). Every {positive} image comes from "
        + ", ".join(source for source, counts in confound["images_per_source_class"].items() if counts.get(positive))
        + "."
    )


BLANKED = {"mask": "each image's own real lungs", "atlas": "an atlas of the real lungs", "box": "the box"}


def _lung_outlines(audit_metrics: dict | None) -> list[str]:
    """The limitation line on where the audit knew the lungs (real masks) and where it assumed a box."""
    if not audit_metrics or "regions" not in audit_metrics["saliency"]:
        return []
    saliency, region = audit_metrics["saliency"], audit_metrics["lungs_hidden"].get("region", {})
    box = region.get("box_lungs_blanked")
    return [
        f"- Real lung outlines (V7 Labs) exist for the COVID collection's images only: the audit's Grad-CAM "
        f"measure used them on {saliency['regions']['mask']} of {saliency['images']} images and a central box "
        "on the rest"
        + (f", a box that covers {box:.2f} of the real lungs on average" if box is not None else "")
        + f"; the lungs-hidden test blanked {BLANKED[region.get('kind', 'box')]}. On the study's real data"
        " V7 outlined about 250 of the 321 COVID-collection images and none of Kermany's here, so expect"
        " the atlas; real lungs reach lower and wider than the box (docs/STUDY.md)."
    ]


def _value(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def _calibration_and_release(report: dict, positive: str) -> list[str]:
    """The card's calibration sentence, release gate and how to read a prediction's fields."""
    lines = []
    calibrated = report.get("calibration")
    if calibrated:
        test = flat_intervals(calibrated["test"])
        lines += [
            "",
            f"Calibration: the probabilities are temperature-scaled (T = {calibrated['temperature']:.2f}, fitted on "
            f"the validation split). Test ECE ({calibrated['ece_bins']} bins) {interval_text(test, 'ece_softmax')} "
            f"before, {interval_text(test, 'ece')} after; Brier score {interval_text(test, 'brier_softmax')} before, "
            f"{interval_text(test, 'brier')} after (0 is perfect for both).",
        ]
    gate = report.get("release")
    if gate:
        lines += ["", "## Release gate", "", f"Result: **{gate['summary'].split(':')[0]}**.", ""]
        for criterion in gate["criteria"]:
            state = {True: "passed", False: "FAILED", None: "not scored"}[criterion["passed"]]
            lines.append(f"- {criterion['name']} ({state}): {criterion['text']} (n={criterion['n']}).")
    lines += [
        "",
        "## Reading a prediction",
        "",
        "Each row of `cxr-predict`'s CSV, and of the served model's answer, holds:",
        "",
        "- `predicted`: the class with the highest probability.",
        "- `p_<class>`: calibrated probabilities: among images given p = 0.8, about 8 in 10 should be that class "
        "(on data like the validation split; not on other hospitals' images).",
        f"- `decision`: `{positive}` or `not {positive}` at the operating point above, the yes/no a reader acts "
        "on; its test sensitivity and specificity are above.",
        "- `release`: whether this model passed the release gate. A model that FAILED it was not released: the "
        "shortcut audit found it can tell the sources apart, so its answers may reflect where an image comes from.",
        "- `warning` and `error`: what was unusual about the file, or why it got no answer.",
    ]
    return lines


def _modality_caveat(modalities: list[str]) -> list[str]:
    """What CT slices cannot show: they are figures from case reports ([] keeps every modality, CT too)."""
    if modalities and "CT" not in modalities:
        return []
    only_ct = " No external source has CT, so there is no external test." if modalities == ["CT"] else ""
    return [
        "",
        "Any CT images are slices chosen for publication in case reports (one to a few per patient), "
        "not CT series from a screening or diagnostic cohort: the results say nothing about CT screening, and "
        "the selection favours clear, typical findings." + only_ct,
    ]
