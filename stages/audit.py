"""DVC stage `audit@<backbone>`: is the trained classifier reading the lungs, or the source?

For the backbone's model: a source probe and a lungs-hidden classifier (both retrained like
train@<backbone>), Grad-CAM on a fixed sample of test images, and the external test source; real
lung masks (the lung_masks stage's) wherever an image has one, the central lung box elsewhere.
Writes the audit report (reports/audit/<backbone>.json) and the output folder (predictions, saliency table,
overlays); logs the numbers and overlays to an MLflow run `audit@<backbone>`.
"""

import re
import shutil

import mlflow
import pandas as pd

from cxr.core import backbones, figures, runs, tracking
from cxr.core.config import as_dict, load
from cxr.core.outputs import staged_directory, write_csv, write_json
from cxr.core.schema import split_part
from cxr.core.stage import arguments, run
from cxr.learn import checkpoints, images, lungs, runtime
from cxr.learn.model_files import load_model
from cxr.report.audit import findings, gradcam, hidden, measures


def main() -> None:
    args = arguments(__doc__, "split", "external", "masks", "model", "out", "metrics", names=("backbone",))
    config = load()
    tracking.require_tracking_store()
    backbone = backbones.get(args.backbone)
    strategy = runtime.configure_runtime(
        config.train, config.seed, workers=False
    )  # one machine, whatever TF_CONFIG says
    split = pd.read_csv(args.split)
    test = split_part(split, "test").reset_index(drop=True)
    classifier, spec = load_model(args.model)
    classes, size = spec.classes, spec.image_size
    box = config.audit.lung_box
    masks = lungs.read_masks(args.masks)
    region = lungs.hidden_region(split, masks, size, box, config.audit.mask_margin)
    key = {"config": as_dict(config), "split": tracking.file_md5(args.split), "blank": region.fingerprint()}
    work = {
        name: checkpoints.resume_dir(
            checkpoints.work_folder(args.model.with_name(f"audit-{name}-{backbone.name}")), key | {"stage": name}
        )
        for name in ("probe", "hidden")
    }
    tables = {"classifier": measures.predicted_table(classifier, test, classes, size, config)}
    sample = gradcam.saliency_sample(test, config.audit.saliency_images_per_class, config.audit.saliency_seed)
    layer = gradcam.gradcam_layer(classifier, backbone)
    batch, maps, regions, saliency = gradcam.saliency(classifier, layer[0], sample, classes, size, box, masks)
    masked = test[test["image_id"].isin(masks)]
    masked_saliency = (
        gradcam.saliency(classifier, layer[0], masked, classes, size, box, masks)[3]
        if len(masked)
        else saliency.iloc[:0]
    )
    external = pd.read_csv(args.external)
    if not external.empty:  # empty when no external image passes the filter (e.g. a CT experiment)
        tables["external"] = measures.predicted_table(classifier, external, classes, size, config)
    with strategy.scope():
        tables["source_probe"] = measures.source_probe(backbone, split, size, config, work["probe"])
        tables["lungs_hidden"] = hidden.lungs_hidden(backbone, split, classes, size, config, work["hidden"], region)
    metrics = measures.summary(
        tables,
        saliency,
        split,
        classes,
        size,
        config,
        layer=layer,
        region=hidden.region_report(region, split, masks, box),
        masked_table=masked_saliency,
    )
    grid = figures.saliency_grid(
        batch,
        maps,
        saliency,
        images.center_box(size, box),
        f"Grad-CAM, {backbone.name} ({metrics['saliency']['layer']})",
        regions,
    )
    with staged_directory(args.out) as staging:
        for name, table in tables.items():
            write_csv(staging / f"{name}_predictions.csv", table)
        write_csv(staging / "saliency.csv", saliency)
        write_csv(staging / "saliency_real_mask.csv", masked_saliency)
        grid.savefig(staging / "gradcam.png")
    write_json(args.metrics, metrics)
    with runs.stage_run(config, f"audit@{backbone.name}", args.split, backbone.name):
        if not external.empty:
            tracking.log_table_input(external, args.external, "external", tracking.file_md5(args.external))
        mlflow.log_metrics(tracking.flat_metrics(metrics))
        mlflow.log_figure(grid, "gradcam/overview.png")
        for index, row in saliency.iterrows():
            name = re.sub(r"[^\w.-]", "_", row["image_id"])
            mlflow.log_image(figures.saliency_overlay(batch[index], maps[index]), f"gradcam/{row['class']}/{name}.png")
        mlflow.log_artifacts(str(args.out), "audit")
    for folder in work.values():
        shutil.rmtree(folder, ignore_errors=True)
    print(findings.verdict(backbone.name, metrics, len(classes), config.positive_class))


if __name__ == "__main__":
    run(main)
