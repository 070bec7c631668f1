"""DVC stage `train@<backbone>`: the study's frozen-base training of one backbone, in MLflow.

Writes models/<backbone>/ (model.keras, meta.json, history.csv), reports/train/<backbone>.json
(metrics) and reports/train/curves/{accuracy,loss}/<backbone>.csv (DVC plots); logs the run
and registers the model as cxr-<task>-<backbone> in MLflow.
"""

import shutil
from dataclasses import asdict
import sys
from pathlib import Path

import pandas as pd

from cxr import backbones, tracking, training
from cxr.config import load
from cxr.model import build_classifier
from cxr.model_files import trained_on
from cxr.stage import run

SPLIT = Path("data/processed/split.csv")


def main() -> None:
    config = load()
    tracking.require_tracking_store()
    backbone = backbones.get(sys.argv[1])
    size = backbone.input_size(config.train.image_size)
    split = pd.read_csv(SPLIT)
    classes = config.class_names()
    resume_dir = training.resume_dir(Path("models/.resume") / backbone.name,
                                     {"config": asdict(config), "split": tracking.file_md5(SPLIT), "stage": "train"})
    strategy = training.configure_runtime(config.train, config.seed)
    with tracking.stage_run(config, f"train@{backbone.name}", SPLIT, backbone.name):
        with strategy.scope():
            model = build_classifier(backbone, size, len(classes), config.train.head, config.train.weights)
            result = training.train_frozen(model, split, classes, size, config.train, config.seed, resume_dir,
                                           callbacks=[tracking.EpochMetrics()])
        summary = training.publish(
            model, result, name=backbone.name, title=f"train@{backbone.name}", split=split,
            meta={"backbone": backbone.name, "image_size": size, "classes": classes, "task": config.task,
                  **trained_on(split, config.filter.views)},
            registered_name=tracking.model_name(config.task, backbone.name),
            report=Path("reports/train") / f"{backbone.name}.json")
    shutil.rmtree(resume_dir, ignore_errors=True)
    print(f"train@{backbone.name}: best val_accuracy {summary['best']['val_accuracy']:.3f} "
          f"(epoch {summary['best_epoch']} of {summary['epochs']})")


if __name__ == "__main__":
    run(main)
