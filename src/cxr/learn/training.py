"""Fitting: runtime set-up, class weights, best checkpoint, resume, and the two training paths.

With the base frozen and no augmentation, the base's output for an image never changes, so
its pooled features are computed once and the head is trained on them: the same model and
the same numbers as fitting the whole network, at a fraction of the cost. With augmentation
the whole network is fitted on augmented batches (the base still frozen, in inference mode).
"""

from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np
import pandas as pd
import tensorflow as tf
from sklearn.utils.class_weight import compute_class_weight

from cxr.learn import images
from cxr.core.config import Train
from cxr.core.backbones import Backbone
from cxr.learn.model import build_classifier, feature_extractor


HISTORY_COLUMNS = ["epoch", "loss", "accuracy", "val_loss", "val_accuracy", "learning_rate"]


@dataclass
class FitResult:
    history: pd.DataFrame  # one row per epoch, HISTORY_COLUMNS
    best: dict  # epoch (0: the starting weights), val_loss, val_accuracy of the weights kept


def configure_runtime(params: Train, seed: int) -> tf.distribute.Strategy:
    """Seeds, op determinism, precision policy and the distribution strategy, before any model."""
    keras.utils.set_random_seed(seed)
    gpus = tf.config.list_physical_devices("GPU")
    if params.deterministic and not gpus:
        tf.config.experimental.enable_op_determinism()
    keras.mixed_precision.set_global_policy("mixed_float16" if params.mixed_precision and gpus else "float32")
    if params.distribute == "mirrored" or (params.distribute == "auto" and len(gpus) > 1):
        devices = None if gpus else [device.name for device in tf.config.list_logical_devices("CPU")]
        return tf.distribute.MirroredStrategy(devices=devices)
    return tf.distribute.get_strategy()


def class_weights(labels: np.ndarray, n_classes: int) -> dict[int, float]:
    """Balanced weights, n_samples / (n_classes * count), so rare classes count as much in the loss."""
    present = np.unique(labels)
    weights = compute_class_weight("balanced", classes=present, y=labels)
    return {int(index): float(weight) for index, weight in zip(present, weights)} | {
        index: 1.0 for index in range(n_classes) if index not in present
    }


class KeepBest(keras.callbacks.Callback):
    """Keep the weights with the lowest val_loss on disk, surviving a killed and resumed run.

    The starting weights count as epoch 0, so a fit that never improves on validation (e.g. a
    fine-tune that hurts) ends with the weights it started from, and says so.
    """

    def __init__(self, folder: Path, validation: tf.data.Dataset):
        super().__init__()
        self.weights = folder / "best.weights.h5"
        self.record = folder / "best.json"
        self.validation = validation
        self.best = json.loads(self.record.read_text()) if self.record.exists() else None

    def on_train_begin(self, logs=None):
        if self.best is None:
            loss, accuracy = self.model.evaluate(self.validation, verbose=0)
            self._save(0, loss, accuracy)

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        if float(logs.get("val_loss", np.inf)) < self.best["val_loss"]:
            self._save(epoch + 1, logs["val_loss"], logs["val_accuracy"])

    def _save(self, epoch: int, loss: float, accuracy: float) -> None:
        self.model.save_weights(self.weights)
        self.best = {"epoch": epoch, "val_loss": float(loss), "val_accuracy": float(accuracy)}
        self.record.write_text(json.dumps(self.best))

    def restore(self) -> dict:
        self.model.load_weights(self.weights)
        return self.best


class LearningRateLog(keras.callbacks.Callback):
    """Put the optimizer's learning rate into each epoch's logs (for history and MLflow)."""

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs["learning_rate"] = float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate))


def work_folder(model_folder: Path) -> Path:
    """Where the fit of ``model_folder`` keeps its checkpoints until it is saved: a sibling
    ``.resume/<name>``, outside the output folder that is replaced at once when saved."""
    return model_folder.parent / ".resume" / model_folder.name


def example_image(split: pd.DataFrame) -> Path:
    """The image a registered model shows as its input example: the first of the val split."""
    return Path(split[split["split"] == "val"].iloc[0]["path"])


def resume_dir(folder: Path, key: dict) -> Path:
    """The checkpoint folder of one configuration: state left by another configuration is wiped.

    ``key`` holds everything the fit depends on (params, split md5, stage); a killed run re-run
    with the same key resumes, a run with changed params starts afresh.
    """
    digest = hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()
    stamp = folder / "fingerprint"
    if folder.exists() and (not stamp.is_file() or stamp.read_text() != digest):
        shutil.rmtree(folder)
    folder.mkdir(parents=True, exist_ok=True)
    stamp.write_text(digest)
    return folder


def completed_epochs(backup: Path) -> int:
    """Epochs a killed fit completed, as Keras' BackupAndRestore recorded them in ``backup`` (0: none)."""
    metadata = backup / "training_metadata.json"
    if not metadata.is_file():
        return 0
    try:
        return int(json.loads(metadata.read_text())["epoch"])
    except (ValueError, KeyError, TypeError):
        return 0


def fit(model: keras.Model, train: tf.data.Dataset, val: tf.data.Dataset, *, epochs: int, learning_rate: float,
        amsgrad: bool, weights: dict[int, float] | None, patience: int | None, work_dir: Path,
        callbacks: list[keras.callbacks.Callback] = (), xla: bool = False) -> FitResult:
    """Compile (with XLA when ``xla``) and fit with resume (``work_dir`` keeps the backup), then
    load the best weights."""
    work_dir.mkdir(parents=True, exist_ok=True)
    model.compile(optimizer=keras.optimizers.Adam(learning_rate, amsgrad=amsgrad),
                  loss="sparse_categorical_crossentropy", metrics=["accuracy"], jit_compile=xla)
    best = KeepBest(work_dir, val)
    history_file = work_dir / "history.csv"
    chain = [
        LearningRateLog(),
        keras.callbacks.BackupAndRestore(str(work_dir / "backup")),
        best,
        keras.callbacks.CSVLogger(str(history_file), append=True),
        *callbacks,
    ]
    if patience is not None:
        chain.append(keras.callbacks.EarlyStopping(monitor="val_loss", patience=patience))
    done = completed_epochs(work_dir / "backup")
    if done:
        print(f"resuming at epoch {done + 1} of {epochs} from the checkpoint in {work_dir / 'backup'} "
              f"(best so far: epoch {best.best['epoch']}, val_loss {best.best['val_loss']:.4f})", flush=True)
    model.fit(train, validation_data=val, epochs=epochs, class_weight=weights, callbacks=chain, verbose=2)
    history = pd.read_csv(history_file)
    history["epoch"] += 1
    history = history.drop_duplicates("epoch", keep="last").reset_index(drop=True)
    return FitResult(history=history[[column for column in HISTORY_COLUMNS if column in history]],
                     best=best.restore())


def train_classifier(backbone: Backbone, split: pd.DataFrame, classes: list[str], size: int, params: Train,
                     seed: int, work_dir: Path, callbacks: list[keras.callbacks.Callback] = (),
                     hidden_center: float | None = None) -> tuple[keras.Model, FitResult]:
    """A new classifier of ``backbone`` for ``classes`` (base frozen, the head of ``params``),
    fitted by :func:`train_frozen`: how ``train@`` trains, and how the audit retrains."""
    model = build_classifier(backbone, size, len(classes), params.head, params.weights)
    return model, train_frozen(model, split, classes, size, params, seed, work_dir, callbacks, hidden_center)


def train_frozen(model: keras.Model, split: pd.DataFrame, classes: list[str], size: int, params: Train,
                 seed: int, work_dir: Path, callbacks: list[keras.callbacks.Callback] = (),
                 hidden_center: float | None = None) -> FitResult:
    """Fit the head of ``model`` (base frozen) on the train split, validating on val.

    ``hidden_center``: train on images whose central square is blanked (the shortcut audit).
    """
    train_rows, val_rows, weights = _rows_and_weights(split, classes, params)
    train_images = images.image_dataset(train_rows, classes, size, params.cache, hidden_center,
                                        params.cache_memory_limit_mb, Path(params.cache_dir))
    val_images = images.image_dataset(val_rows, classes, size, params.cache, hidden_center,
                                      params.cache_memory_limit_mb, Path(params.cache_dir))
    augment = images.augmenter(params.augment, seed)
    head = model.get_layer("head")
    extractor = feature_extractor(model)
    train_labels, val_labels = images.label_indices(train_rows, classes), images.label_indices(val_rows, classes)
    if augment is None or params.head.normalize:
        train_features = _features(extractor, train_images, params.batch_size)
    if params.head.normalize:
        head.get_layer("normalize").adapt(train_features)
    if augment is None:
        target = head
        train_set = tf.data.Dataset.from_tensor_slices((train_features, train_labels))
        val_set = tf.data.Dataset.from_tensor_slices((_features(extractor, val_images, params.batch_size), val_labels))
        train_batches = images.batches(train_set, params.batch_size, shuffle_seed=seed)
        val_batches = images.batches(val_set, params.batch_size)
    else:
        target = model
        train_batches = images.batches(train_images, params.batch_size, shuffle_seed=seed, augment=augment)
        val_batches = images.batches(val_images, params.batch_size)
    return fit(target, train_batches, val_batches, epochs=params.epochs, learning_rate=params.learning_rate,
               amsgrad=params.amsgrad, weights=weights, patience=params.early_stopping_patience,
               work_dir=work_dir, callbacks=callbacks, xla=params.xla)


def train_whole(model: keras.Model, split: pd.DataFrame, classes: list[str], size: int, params: Train, *,
                epochs: int, learning_rate: float, seed: int, work_dir: Path,
                callbacks: list[keras.callbacks.Callback] = ()) -> FitResult:
    """Fit the whole model as it is (e.g. after unfreezing layers), with augmentation if enabled."""
    train_rows, val_rows, weights = _rows_and_weights(split, classes, params)
    train_images = images.image_dataset(train_rows, classes, size, params.cache,
                                        memory_limit_mb=params.cache_memory_limit_mb, cache_dir=Path(params.cache_dir))
    train_batches = images.batches(train_images, params.batch_size,
                                   shuffle_seed=seed, augment=images.augmenter(params.augment, seed))
    val_images = images.image_dataset(val_rows, classes, size, params.cache,
                                      memory_limit_mb=params.cache_memory_limit_mb, cache_dir=Path(params.cache_dir))
    val_batches = images.batches(val_images, params.batch_size)
    return fit(model, train_batches, val_batches, epochs=epochs, learning_rate=learning_rate, amsgrad=params.amsgrad,
               weights=weights, patience=params.early_stopping_patience, work_dir=work_dir, callbacks=callbacks,
               xla=params.xla)


def _rows_and_weights(split: pd.DataFrame, classes: list[str], params: Train):
    """Train rows, val rows, and the train split's class weights (None when turned off)."""
    train_rows, val_rows = split[split["split"] == "train"], split[split["split"] == "val"]
    weights = class_weights(images.label_indices(train_rows, classes), len(classes)) if params.class_weights else None
    return train_rows, val_rows, weights


def _features(extractor: keras.Model, dataset: tf.data.Dataset, batch_size: int) -> np.ndarray:
    """Run the frozen base once over an (image, label) dataset: its pooled features, in order."""
    return extractor.predict(dataset.map(lambda image, label: image).batch(batch_size), verbose=0)
