"""DVC stage `finetune`: unfreeze the end of models/${backbone}'s base and train on, in MLflow.

Writes models/finetuned/ and reports/finetune.json; registers the model as cxr-<task>.
"""

import shutil
from dataclasses import asdict
from pathlib import Path

import pandas as pd

from cxr import images, tracking, training
from cxr.config import load
from cxr.model import unfreeze_last
from cxr.outputs import write_json
from cxr.stage import run

SPLIT = Path("data/processed/split.csv")


def main() -> None:
    config = load()
    split = pd.read_csv(SPLIT)
    strategy = training.configure_runtime(config.train, config.seed)
    with tracking.stage_run(config, "finetune", SPLIT, config.backbone):
        with strategy.scope():
            model, meta = training.load_model(Path("models") / config.backbone)
            resume_dir = training.resume_dir(Path("models/.resume/finetuned"), {
                "config": asdict(config), "split": tracking.file_md5(SPLIT), "stage": "finetune",
                "base_model": tracking.file_md5(Path("models") / config.backbone / "model.keras")})
            unfrozen = unfreeze_last(model, config.finetune.unfreeze)
            result = training.train_whole(model, split, meta["classes"], meta["image_size"], config.train,
                                          epochs=config.finetune.epochs, learning_rate=config.finetune.learning_rate,
                                          seed=config.seed, work_dir=resume_dir, callbacks=[tracking.EpochMetrics()])
        summary = training.summary(result) | {"unfrozen_layers": unfrozen}
        tracking.log_fit(result.history, summary, f"finetune {config.backbone}")
        tracking.log_model(model, images.example_batch(split, meta["image_size"]), tracking.model_name(config.task))
        training.save_model(model, Path("models/finetuned"), meta | {"finetuned_from": config.backbone,
                                                                      "unfrozen_layers": unfrozen},
                            result.history)
        training.write_curves(result.history, "finetuned")
        tracking.tag_model_file(Path("models/finetuned/model.keras"))
        write_json(Path("reports/finetune.json"), summary)
    shutil.rmtree(resume_dir, ignore_errors=True)
    print(f"finetune {config.backbone}: unfroze {unfrozen}; best val_accuracy {summary['best']['val_accuracy']:.3f}")


if __name__ == "__main__":
    run(main)
