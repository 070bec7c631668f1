"""The release gate and the champion: which model cxr-predict and the served model use.

The shortcut audit measures whether a model reads the lungs or the source; the gate turns its
numbers into a yes/no against limits stated in params.yaml (``release``), so that a model the
audit says recognises the source is never ``@champion``. The champion is chosen, not assumed:
models are ranked by a validation statistic (``release.select_by``), test numbers are only
reported. ``@candidate`` is the first-ranked model, ``@champion`` the first-ranked that passes.
"""

from __future__ import annotations

from cxr.core.sections import Release


def _criterion(name: str, value: float | None, limit: float, n: int, minimum: int, text: str, why_not: str) -> dict:
    """One criterion: ``{"name", "value", "limit", "n", "passed", "text"}``; ``passed`` is None (not
    scored) when ``value`` is None or rests on fewer than ``minimum`` images."""
    if value is None:
        return {"name": name, "value": None, "limit": limit, "n": n, "passed": None, "text": why_not}
    if n < minimum:
        return {
            "name": name,
            "value": value,
            "limit": limit,
            "n": n,
            "passed": None,
            "text": f"{text}: not interpretable, it rests on {n} image(s) (fewer than release.min_images {minimum})",
        }
    passed = value <= limit
    return {"name": name, "value": value, "limit": limit, "n": n, "passed": passed, "text": text}


def gate(
    audit: dict, params: Release, n_classes: int, positive: str, test_images: int, external_positives: int
) -> dict:
    """Judge one backbone's audit metrics (``reports/audit/<backbone>.json``) against ``params``.

    Criteria, each scored only where it rests on at least ``params.min_images`` images:
    ``lungs_hidden`` (balanced accuracy with the lung box blanked, minus chance 1/``n_classes``, at
    most ``max_lungs_hidden_above_chance``; on the ``test_images``), ``within_class_probe`` (the source probe's balanced
    accuracy among images of one class, at most ``max_within_class_probe``), ``external_drop``
    (``positive`` sensitivity on the test split minus on the external source, which holds
    ``external_positives`` images of it, at most ``max_external_drop``).

    Returns ``{"passed", "criteria": [criterion dicts], "summary"}``: passed when no scored
    criterion fails; ``summary`` one line, ``passed`` or ``failed: <failed criteria in words>``.
    """
    chance = 1 / n_classes
    hidden, probe = audit["lungs_hidden"], audit["source_probe"]
    key = f"sensitivity_{positive}"
    internal, external = audit["classifier"].get(key), audit.get("external", {}).get(key)
    above = hidden["balanced_accuracy"] - chance
    criteria = [
        _criterion(
            "lungs_hidden",
            above,
            params.max_lungs_hidden_above_chance,
            test_images,
            params.min_images,
            f"with the lungs hidden the model still scores balanced accuracy {hidden['balanced_accuracy']:.2f}, "
            f"{above:+.2f} from chance {chance:.2f} (limit +{params.max_lungs_hidden_above_chance:.2f})",
            "lungs-hidden balanced accuracy not measured",
        ),
        _criterion(
            "within_class_probe",
            probe.get("within_class_accuracy"),
            params.max_within_class_probe,
            int(probe.get("within_class_evidence") or 0),
            params.min_images,
            f"a probe tells the sources apart within a class with balanced accuracy "
            f"{probe.get('within_class_accuracy') or 0:.2f} (limit {params.max_within_class_probe:.2f})",
            "within-class source probe not scorable: no class has test images from two sources",
        ),
        _criterion(
            "external_drop",
            None if internal is None or external is None else internal - external,
            params.max_external_drop,
            external_positives,
            params.min_images,
            f"{positive} sensitivity is {external or 0:.2f} on the external source against {internal or 0:.2f} on the "
            f"test split (limit: at most {params.max_external_drop:.2f} lower)",
            f"external test not scorable: no external {positive} image, or none on the test split",
        ),
    ]
    failed = [criterion["text"] for criterion in criteria if criterion["passed"] is False]
    return {
        "passed": not failed,
        "criteria": criteria,
        "summary": "passed" if not failed else "failed: " + "; ".join(failed),
    }


def rank(models: dict[str, dict], select_by: str) -> dict:
    """Order the competing models by their validation ``select_by`` and name the aliases.

    ``models``: name -> ``{"validation": {statistic: value}, "release": gate dict, "competes": bool}``
    (``competes`` False for a fine-tuned model that fine-tuning left unchanged). Ties keep the given
    order. Returns ``{"select_by", "ranking": [names], "candidate": name | None, "champion": name |
    None}``: the candidate is the first-ranked, the champion the first-ranked that passed the gate.
    """
    competing = [name for name, entry in models.items() if entry["competes"]]
    ranking = sorted(competing, key=lambda name: -(models[name]["validation"].get(select_by) or 0.0))
    passed = [name for name in ranking if models[name]["release"]["passed"]]
    return {
        "select_by": select_by,
        "ranking": ranking,
        "candidate": ranking[0] if ranking else None,
        "champion": passed[0] if passed else None,
    }
