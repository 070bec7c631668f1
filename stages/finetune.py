"""DVC stage `finetune`: unfreeze the end of models/${backbone}'s base and train on, in MLflow.

Writes models/finetuned/ and reports/finetune.json; registers the model as cxr-<task>.
"""

import shutil
from dataclasses import asdict
from pathlib import Path

import mlflow
import pandas as pd

from cxr import tracking, training
from cxr.model_files import load_model
from cxr.config import load
from cxr.model import unfreeze_last
from cxr.stage import run

SPLIT = Path("data/processed/split.csv")


def main() -> None:
    config = load()
    tracking.require_tracking_store()
    split = pd.read_csv(SPLIT)
    strategy = training.configure_runtime(config.train, config.seed)
    with tracking.stage_run(config, "finetune", SPLIT, config.backbone):
        with strategy.scope():
            model, meta = load_model(Path("models") / config.backbone)
            resume_dir = training.resume_dir(Path("models/.resume/finetuned"), {
                "config": asdict(config), "split": tracking.file_md5(SPLIT), "stage": "finetune",
                "base_model": tracking.file_md5(Path("models") / config.backbone / "model.keras")})
            unfrozen = unfreeze_last(model, config.finetune.unfreeze)
            result = training.train_whole(model, split, meta["classes"], meta["image_size"], config.train,
                                          epochs=config.finetune.epochs, learning_rate=config.finetune.learning_rate,
                                          seed=config.seed, work_dir=resume_dir, callbacks=[tracking.EpochMetrics()])
        # Epoch 0 is the base model before any fine-tuning step: if it stays the best, the weights kept
        # are the base model's, and every report must say so rather than present a second model.
        unchanged = int(result.best["epoch"]) == 0
        mlflow.set_tag("finetune.unchanged_from_base", str(unchanged).lower())
        summary = training.publish(
            model, result, name="finetuned", title=f"finetune {config.backbone}", split=split,
            meta=meta | {"finetuned_from": config.backbone, "unfrozen_layers": unfrozen,
                         "unchanged_from_base": unchanged},
            registered_name=tracking.model_name(config.task), report=Path("reports/finetune.json"),
            extra={"unfrozen_layers": unfrozen, "unchanged_from_base": unchanged})
    shutil.rmtree(resume_dir, ignore_errors=True)
    print(f"finetune {config.backbone}: unfroze {unfrozen}; best val_accuracy {summary['best']['val_accuracy']:.3f}"
          + (f"; no epoch improved on the base model: the fine-tuned model is {config.backbone}'s weights" if unchanged
             else ""))


if __name__ == "__main__":
    run(main)
