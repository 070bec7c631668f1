"""DVC stage `audit_report`: every backbone's audit in one report, and the released model's card.

Writes audit.md (the source x class table, the numbers, a generated verdict per backbone) and
the model card of the @candidate (reports/eval/release.json: the model ranked first on
validation, released as @champion if it passed the gate); the card becomes the registered model's
description and that version's.
"""

import json
from pathlib import Path

import mlflow
from mlflow.tracking import MlflowClient

from cxr.core import registry, runs, tracking
from cxr.core.config import load
from cxr.core.errors import CxrError
from cxr.core.outputs import write_text
from cxr.core.spec import MODEL_FILE
from cxr.core.stage import arguments, run
from cxr.learn.model_files import read_spec
from cxr.report.audit import findings, markdown
from cxr.report.model_card import model_card


def read_json(path: Path) -> dict:
    if not path.is_file():
        raise CxrError(f"{path}: not found; run the stage that writes it (dvc repro)")
    return json.loads(path.read_text())


def main() -> None:
    args = arguments(
        __doc__,
        "split",
        "audits",
        "split-report",
        "external-report",
        "models",
        "evaluations",
        "release",
        "audit-md",
        "card",
    )
    config = load()
    tracking.require_tracking_store()
    results = {name: read_json(args.audits / f"{name}.json") for name in config.backbones}
    split_report = read_json(args.split_report)
    external = read_json(args.external_report)["test_set"]
    note = tracking.SYNTHETIC_NOTE if config.sources.origin == "synthetic" else f"Data: {config.sources.origin}."
    classes, positive = config.class_names(), config.positive_class
    write_text(
        args.audit_md,
        markdown.audit_markdown(
            results, split_report["source_confound"], external, classes, note, positive, config.release.min_images
        ),
    )
    candidate = read_json(args.release)["candidate"]
    if candidate is None:
        raise CxrError(f"{args.release}: no model competes, so there is no candidate to describe")
    model_file = args.models / candidate / MODEL_FILE
    registered = registry.model_name(config.task)
    run_id = registry.find_model_run(config.task, model_file)
    spec = read_spec(args.models / candidate)
    audited = spec.finetuned_from or spec.backbone
    card = model_card(
        config,
        spec=spec,
        model_file=model_file.as_posix(),
        report=read_json(args.evaluations / candidate / "report.json"),
        split_report=split_report,
        audit_metrics=results.get(audited),
        external_report=external,
        registered_name=registered,
        model_md5=tracking.file_md5(model_file),
        note=note,
    )
    write_text(args.card, card)
    with runs.stage_run(config, "audit_report", args.split, config.backbone):
        for backbone, metrics in results.items():
            mlflow.log_metrics(
                {
                    f"{backbone}.shortcut_{name}": float(found)
                    for name, found in findings.evidence(metrics, len(classes), positive).items()
                }
            )
        mlflow.log_artifact(str(args.audit_md))
        mlflow.log_artifact(str(args.card))
    if run_id is not None:
        client = MlflowClient()
        client.log_artifact(run_id, str(args.card))
        client.update_registered_model(registered, description=card)
        evidence = findings.evidence_text(results.get(audited), len(classes), positive)
        registry.describe_version(registered, run_id, description=card, tags={"audit.shortcut_evidence": evidence})
    for backbone, metrics in results.items():
        backbone_run = registry.find_model_run(config.task, args.models / backbone / MODEL_FILE)
        if backbone_run is not None:
            registry.describe_version(
                registered,
                backbone_run,
                tags={"audit.shortcut_evidence": findings.evidence_text(metrics, len(classes), positive)},
            )
    print(args.audit_md.read_text())


if __name__ == "__main__":
    run(main)
