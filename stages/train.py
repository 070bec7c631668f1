"""DVC stage `train@<backbone>`: the study's frozen-base training of one backbone, in MLflow.

Writes the model folder (model.keras, meta.json, history.csv), its metrics file and its
accuracy/loss curves (DVC plots); logs the run in MLflow (`register@<backbone>` registers the
model as cxr-<task>-<backbone>).
Across workers (``TF_CONFIG``, :mod:`cxr.learn.runtime`) every worker runs this stage and trains in
step; the chief alone writes the outputs and the MLflow run.
"""

import contextlib
import shutil
from dataclasses import replace
from pathlib import Path

import mlflow
import pandas as pd

from cxr.core import backbones, runs, tracking
from cxr.core.config import as_dict, load
from cxr.core.spec import ModelSpec, trained_on
from cxr.core.stage import arguments, run
from cxr.learn import checkpoints, publish, runtime, training


def main() -> None:
    args = arguments(__doc__, "split", "model", "metrics", "curves", names=("backbone",))
    config = load()
    tracking.require_tracking_store()
    backbone = backbones.get(args.backbone)
    split = pd.read_csv(args.split)
    spec = ModelSpec(
        backbone=backbone.name,
        image_size=backbone.input_size(config.train.image_size),
        classes=config.class_names(),
        task=config.task,
        weights=config.train.weights,
        **trained_on(split, config.filter.views),
    )
    worker = runtime.worker_task(config.train)  # "" where this process writes the outputs
    chief = not worker
    # Across workers a killed fit starts over: nothing guarantees every worker committed the same epoch.
    work = checkpoints.resume_dir(
        checkpoints.work_folder(args.model, worker),
        {"config": as_dict(config), "split": tracking.file_md5(args.split), "stage": "train"},
        fresh=runtime.multi_worker(config.train),
    )
    train = replace(config.train, cache_dir=str(Path(config.train.cache_dir) / worker)) if worker else config.train
    strategy = runtime.configure_runtime(train, config.seed)
    with (
        runs.stage_run(config, f"train@{backbone.name}", args.split, backbone.name)
        if chief
        else contextlib.nullcontext()
    ):
        if chief:
            mlflow.set_tags(
                {
                    "distribute.strategy": runtime.strategy_name(strategy),
                    "distribute.replicas": strategy.num_replicas_in_sync,
                }
            )
        with strategy.scope():
            model, result = training.train_classifier(
                backbone,
                split,
                spec.classes,
                spec.image_size,
                train,
                config.seed,
                work,
                callbacks=[publish.EpochMetrics(work)] if chief else [],
            )
        if not chief:
            shutil.rmtree(work, ignore_errors=True)
            best = result.best
            print(
                f"train@{backbone.name}: {worker} trained in step with the chief "
                f"({strategy.num_replicas_in_sync} replicas), which writes the outputs "
                f"(best: epoch {best['epoch']}, val_loss {best['val_loss']!r})"
            )
            return
        summary = publish.publish(
            model,
            result,
            spec,
            folder=args.model,
            curves=args.curves,
            report=args.metrics,
            title=f"train@{backbone.name}",
        )
    shutil.rmtree(work, ignore_errors=True)
    print(
        f"train@{backbone.name}: best val_accuracy {summary['best']['val_accuracy']:.3f} "
        f"(epoch {summary['best_epoch']} of {summary['epochs']})"
    )


if __name__ == "__main__":
    run(main)
