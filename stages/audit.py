"""DVC stage `audit@<backbone>`: is the trained classifier reading the lungs or the source?

For models/<backbone>: a source probe and a lungs-hidden classifier (both retrained like
train@<backbone>), Grad-CAM on a fixed sample of test images, and the external test source.
Writes reports/audit/<backbone>.json (DVC metrics) and reports/audit/<backbone>/ (predictions,
saliency table, overlays); logs the numbers and overlays to an MLflow run `audit@<backbone>`.
"""

import re
import shutil
import sys
from dataclasses import asdict
from pathlib import Path

import mlflow
import pandas as pd

from cxr import audit, backbones, figures, images, tracking, training
from cxr.model_files import load_model
from cxr.config import load
from cxr.outputs import staged_directory, write_csv, write_json
from cxr.stage import run

SPLIT = Path("data/processed/split.csv")
EXTERNAL = Path("data/processed/external.csv")


def main() -> None:
    config = load()
    tracking.require_tracking_store()
    backbone = backbones.get(sys.argv[1])
    strategy = training.configure_runtime(config.train, config.seed)
    split = pd.read_csv(SPLIT)
    test = split[split["split"] == "test"].reset_index(drop=True)
    classifier, meta = load_model(Path("models") / backbone.name)
    classes, size = meta["classes"], meta["image_size"]
    box = config.audit.lung_box
    key = {"config": asdict(config), "split": tracking.file_md5(SPLIT)}
    work = {name: training.resume_dir(Path("models/.resume") / f"audit-{name}-{backbone.name}", key | {"stage": name})
            for name in ("probe", "hidden")}

    tables = {"classifier": audit.predicted_table(classifier, test, classes, size, config)}
    sample = audit.saliency_sample(test, config.audit.saliency_images_per_class, config.audit.saliency_seed)
    batch, maps, saliency = audit.saliency(classifier, backbone, sample, classes, size, box)
    tables["external"] = audit.predicted_table(classifier, pd.read_csv(EXTERNAL), classes, size, config)
    with strategy.scope():
        tables["source_probe"] = audit.source_probe(backbone, split, size, config, work["probe"])
        tables["lungs_hidden"] = audit.lungs_hidden(backbone, split, classes, size, config, work["hidden"])

    metrics = audit.summary(tables, saliency, split, classes, size, config,
                            layer=backbone.gradcam_layer, map_side=audit.map_side(classifier, backbone.gradcam_layer))

    grid = figures.saliency_grid(batch, maps, saliency, images.center_box(size, box),
                                 f"Grad-CAM, {backbone.name} ({metrics['saliency']['layer']})")
    out = Path("reports/audit") / backbone.name
    with staged_directory(out) as staging:
        for name, table in tables.items():
            write_csv(staging / f"{name}_predictions.csv", table)
        write_csv(staging / "saliency.csv", saliency)
        grid.savefig(staging / "gradcam.png")
    write_json(Path("reports/audit") / f"{backbone.name}.json", metrics)

    with tracking.stage_run(config, f"audit@{backbone.name}", SPLIT, backbone.name):
        tracking.log_table_input(pd.read_csv(EXTERNAL), EXTERNAL, "external", tracking.file_md5(EXTERNAL))
        mlflow.log_metrics(tracking.flat_metrics(metrics))
        mlflow.log_figure(grid, "gradcam/overview.png")
        for index, row in saliency.iterrows():
            name = re.sub(r"[^\w.-]", "_", row["image_id"])
            mlflow.log_image(figures.saliency_overlay(batch[index], maps[index]), f"gradcam/{row['class']}/{name}.png")
        mlflow.log_artifacts(str(out), "audit")
    for folder in work.values():
        shutil.rmtree(folder, ignore_errors=True)
    print(audit.verdict(backbone.name, metrics, len(classes)))


if __name__ == "__main__":
    run(main)
