"""DVC stage `audit_report`: reports/eval/audit.md (numbers and verdict per backbone) and the
model card reports/model_card.md of the registered model; both are logged to MLflow and the
card becomes the registered model's description."""

import json
from pathlib import Path

import mlflow
from mlflow.tracking import MlflowClient

from cxr import audit, tracking
from cxr.config import load
from cxr.errors import CxrError
from cxr.model_card import model_card
from cxr.outputs import write_text
from cxr.stage import run

SPLIT = Path("data/processed/split.csv")
AUDIT = Path("reports/audit")
AUDIT_MD = Path("reports/eval/audit.md")
CARD = Path("reports/model_card.md")


def read_json(path: Path) -> dict:
    if not path.is_file():
        raise CxrError(f"{path}: not found; run the stage that writes it (dvc repro)")
    return json.loads(path.read_text())


def main() -> None:
    config = load()
    tracking.require_tracking_store()
    results = {name: read_json(AUDIT / f"{name}.json") for name in config.backbones}
    split_report = read_json(Path("reports/data/split.json"))
    external = read_json(Path("reports/data/external.json"))["test_set"]
    note = tracking.SYNTHETIC_NOTE if config.sources.origin == "synthetic" else f"Data: {config.sources.origin}."
    classes = config.class_names()
    write_text(AUDIT_MD, audit.audit_markdown(results, split_report["source_confound"], external, classes, note))

    model_file = Path("models/finetuned/model.keras")
    registered = tracking.model_name(config.task)
    run_id = tracking.find_model_run(config.task, model_file)
    card = model_card(config, meta=read_json(Path("models/finetuned/meta.json")),
                      report=read_json(Path("reports/eval/models/finetuned/report.json")),
                      split_report=split_report, audit_metrics=results.get(config.backbone),
                      external_report=external, registered_name=registered,
                      model_md5=tracking.file_md5(model_file), note=note)
    write_text(CARD, card)

    with tracking.stage_run(config, "audit_report", SPLIT, config.backbone):
        for backbone, metrics in results.items():
            mlflow.log_metrics({f"{backbone}.shortcut_{name}": float(found) for name, found
                                in audit.evidence(metrics, len(classes)).items()})
        mlflow.log_artifact(str(AUDIT_MD))
        mlflow.log_artifact(str(CARD))
    if run_id is not None:
        client = MlflowClient()
        client.log_artifact(run_id, str(CARD))
        client.update_registered_model(registered, description=card)
        tracking.describe_version(registered, run_id, description=card,
                                  tags={"audit.shortcut_evidence": audit.evidence_text(results.get(config.backbone), len(classes))})
    for backbone, metrics in results.items():
        backbone_run = tracking.find_model_run(config.task, Path("models") / backbone / "model.keras")
        if backbone_run is not None:
            tracking.describe_version(tracking.model_name(config.task, backbone), backbone_run,
                                      tags={"audit.shortcut_evidence": audit.evidence_text(metrics, len(classes))})
    print(AUDIT_MD.read_text())


if __name__ == "__main__":
    run(main)
