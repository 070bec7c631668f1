"""DVC stage `finetune`: unfreeze the end of the ${backbone} model's base and train on, in MLflow.

Writes the fine-tuned model folder, its metrics and curves; logs the run (`register_finetuned`
registers it as cxr-<task>).
"""

import shutil

import mlflow
import pandas as pd

from cxr.core import runs, tracking
from cxr.core.config import as_dict, load
from cxr.core.spec import MODEL_FILE
from cxr.core.stage import arguments, run
from cxr.learn import checkpoints, publish, runtime, training
from cxr.learn.model import unfreeze_last
from cxr.learn.model_files import load_model


def main() -> None:
    args = arguments(__doc__, "split", "base", "model", "metrics", "curves")
    config = load()
    tracking.require_tracking_store()
    split = pd.read_csv(args.split)
    strategy = runtime.configure_runtime(
        config.train, config.seed, workers=False
    )  # one machine, whatever TF_CONFIG says
    with runs.stage_run(config, "finetune", args.split, config.backbone):
        with strategy.scope():
            model, spec = load_model(args.base)
            work = checkpoints.resume_dir(
                checkpoints.work_folder(args.model),
                {
                    "config": as_dict(config),
                    "split": tracking.file_md5(args.split),
                    "stage": "finetune",
                    "base_model": tracking.file_md5(args.base / MODEL_FILE),
                },
            )
            unfrozen = unfreeze_last(model, config.finetune.unfreeze)
            result = training.train_whole(
                model,
                split,
                spec.classes,
                spec.image_size,
                config.train,
                epochs=config.finetune.epochs,
                learning_rate=config.finetune.learning_rate,
                seed=config.seed,
                work_dir=work,
                callbacks=[publish.EpochMetrics(work)],
            )
        # Epoch 0 is the base model before any fine-tuning step: if it stays the best, the weights kept
        # are the base model's, and every report must say so rather than present a second model.
        unchanged = int(result.best["epoch"]) == 0
        mlflow.set_tag("finetune.unchanged_from_base", str(unchanged).lower())
        summary = publish.publish(
            model,
            result,
            spec.finetuned(config.backbone, unfrozen, unchanged),
            folder=args.model,
            curves=args.curves,
            report=args.metrics,
            title=f"finetune {config.backbone}",
            extra={"unfrozen_layers": unfrozen, "unchanged_from_base": unchanged},
        )
    shutil.rmtree(work, ignore_errors=True)
    print(
        f"finetune {config.backbone}: unfroze {unfrozen}; best val_accuracy {summary['best']['val_accuracy']:.3f}"
        + (
            f"; no epoch improved on the base model: the fine-tuned model is {config.backbone}'s weights"
            if unchanged
            else ""
        )
    )


if __name__ == "__main__":
    run(main)
