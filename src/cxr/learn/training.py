"""Fitting: runtime set-up, class weights, best checkpoint, resume, and the two training paths.

With the base frozen and no augmentation, the base's output for an image never changes, so
its pooled features are computed once and the head is trained on them: the same model and
the same numbers as fitting the whole network, at a fraction of the cost. With augmentation
the whole network is fitted on augmented batches (the base still frozen, in inference mode).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np
import pandas as pd
import tensorflow as tf
from sklearn.utils.class_weight import compute_class_weight

from cxr.core.backbones import Backbone
from cxr.core.config import Train
from cxr.core.outputs import replacing, write_csv, write_json
from cxr.learn import images
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
    """Keep the weights with the lowest val_loss on disk, surviving a killed and resumed run, and
    stop the fit after ``patience`` epochs without a lower val_loss (None: never).

    The starting weights count as epoch 0, so a fit that never improves on validation (e.g. a
    fine-tune that hurts) ends with the weights it started from, and says so; patience counts
    from them too (Keras' EarlyStopping counts from epoch 1). Files are replaced atomically.
    """

    def __init__(self, folder: Path, validation: tf.data.Dataset, patience: int | None = None):
        super().__init__()
        self.weights = folder / "best.weights.h5"
        self.record = folder / "best.json"
        self.validation = validation
        self.patience = patience
        self.best = json.loads(self.record.read_text()) if self.record.exists() else None

    def on_train_begin(self, logs=None):
        if self.best is None:
            loss, accuracy = self.model.evaluate(self.validation, verbose=0)
            self._save(0, loss, accuracy)

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        if float(logs.get("val_loss", np.inf)) < self.best["val_loss"]:
            self._save(epoch + 1, logs["val_loss"], logs["val_accuracy"])
        if self.patience is not None and epoch + 1 - self.best["epoch"] >= self.patience:
            self.model.stop_training = True

    def _save(self, epoch: int, loss: float, accuracy: float) -> None:
        temporary = self.weights.with_name(".partial." + self.weights.name)
        self.model.save_weights(temporary)
        os.replace(temporary, self.weights)
        self.best = {"epoch": epoch, "val_loss": float(loss), "val_accuracy": float(accuracy)}
        write_json(self.record, self.best)

    def restore(self) -> dict:
        self.model.load_weights(self.weights)
        return self.best


class Checkpoint(keras.callbacks.Callback):
    """The whole state of a fit at the end of each epoch, committed at once, so that a fit killed
    at any instant resumes where an uninterrupted one would be and ends with the same bytes.

    ``state-<epoch>.npz`` holds every variable of the model (weights, and the random-seed state
    of its dropout layers, which Keras' BackupAndRestore does not save) and of the optimizer
    (moments, iteration count); ``state.json`` holds the epochs done, each epoch's logs and
    whether the fit stopped early, and is replaced last: that rename is the commit, and a kill
    before it leaves the previous epoch's state whole. The data order and augmentation of an
    epoch depend on (seed, epoch) alone (:class:`cxr.learn.images.TrainingBatches`), so no
    tf.data state needs saving. ``history.csv`` beside it mirrors the logs, for whoever watches.
    Put it last in the callbacks, after any that change the logs or stop the fit.
    """

    def __init__(self, folder: Path):
        super().__init__()
        self.folder = folder
        self.record = folder / "state.json"
        self.state = (
            json.loads(self.record.read_text())
            if self.record.is_file()
            else {"epoch": 0, "variables": None, "history": [], "stopped": False}
        )

    @property
    def completed(self) -> int:
        """Epochs committed (0: none)."""
        return int(self.state["epoch"])

    @property
    def history(self) -> pd.DataFrame:
        """One row per committed epoch: ``epoch`` (1-based) and the epoch's logs."""
        return pd.DataFrame(self.state["history"], columns=None if self.state["history"] else ["epoch"])

    def restore(self, model: keras.Model) -> int:
        """Load the committed state into ``model`` (compiled) and its optimizer; returns the
        epochs done. A state that does not fit the model (another architecture) is ignored: 0."""
        if not self.completed:
            return 0
        if not model.optimizer.built:
            model.optimizer.build(model.trainable_variables)
        variables = _fit_variables(model)
        with np.load(self.folder / self.state["variables"]) as saved:
            values = [saved[f"arr_{index}"] for index in range(len(saved.files))]
        if [value.shape for value in values] != [tuple(variable.shape) for variable in variables]:
            return 0
        for variable, value in zip(variables, values):
            variable.assign(value)
        return self.completed

    def on_epoch_end(self, epoch, logs=None):
        row = {"epoch": epoch + 1, **{key: float(value) for key, value in (logs or {}).items()}}
        history = [past for past in self.state["history"] if past["epoch"] <= epoch] + [row]
        name = f"state-{epoch + 1}.npz"
        with replacing(self.folder / name) as stream:
            np.savez(stream, *[keras.ops.convert_to_numpy(variable) for variable in _fit_variables(self.model)])
        write_csv(self.folder / "history.csv", pd.DataFrame(history))
        previous = self.state["variables"]
        self.state = {
            "epoch": epoch + 1,
            "variables": name,
            "history": history,
            "stopped": bool(self.model.stop_training),
        }
        write_json(self.record, self.state)
        if previous not in (None, name):
            (self.folder / previous).unlink(missing_ok=True)


def _fit_variables(model: keras.Model) -> list:
    """Every variable a fit changes, in a fixed order: the model's (its seed states included)
    then the optimizer's."""
    return [*model.variables, *model.optimizer.variables]


class LearningRateLog(keras.callbacks.Callback):
    """Put the optimizer's learning rate into each epoch's logs (for history and MLflow)."""

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs["learning_rate"] = float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate))


def work_folder(model_folder: Path) -> Path:
    """Where the fit of ``model_folder`` keeps its checkpoints until it is saved: a sibling
    ``.resume/<name>``, outside the output folder that is replaced at once when saved."""
    return model_folder.parent / ".resume" / model_folder.name


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


def fit(
    model: keras.Model,
    train: images.TrainingBatches,
    val: tf.data.Dataset,
    *,
    epochs: int,
    learning_rate: float,
    amsgrad: bool,
    weights: dict[int, float] | None,
    patience: int | None,
    work_dir: Path,
    callbacks: list[keras.callbacks.Callback] = (),
    xla: bool = False,
) -> FitResult:
    """Compile (with XLA when ``xla``) and fit for ``epochs``, resuming from the :class:`Checkpoint`
    in ``work_dir`` if a killed fit left one, then load the best weights (:class:`KeepBest`).

    Returns the history (one row per epoch, :data:`HISTORY_COLUMNS`) and the best epoch's record.
    """
    work_dir.mkdir(parents=True, exist_ok=True)
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate, amsgrad=amsgrad),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
        jit_compile=xla,
    )
    best = KeepBest(work_dir, val, patience)
    best.set_model(model)
    checkpoint = Checkpoint(work_dir)
    done = checkpoint.restore(model)
    if done:
        print(
            f"resuming at epoch {done + 1} of {epochs} from the checkpoint {checkpoint.record} of epoch {done} "
            f"(best so far: epoch {best.best['epoch']}, val_loss {best.best['val_loss']:.4f})",
            flush=True,
        )
    if done < epochs and not checkpoint.state["stopped"]:
        model.fit(
            train.epochs(done, epochs),
            steps_per_epoch=train.steps_per_epoch,
            initial_epoch=done,
            epochs=epochs,
            validation_data=val,
            class_weight=weights,
            shuffle=False,
            verbose=2,
            callbacks=[LearningRateLog(), best, *callbacks, checkpoint],
        )
    history = checkpoint.history
    return FitResult(history=history[[column for column in HISTORY_COLUMNS if column in history]], best=best.restore())


def train_classifier(
    backbone: Backbone,
    split: pd.DataFrame,
    classes: list[str],
    size: int,
    params: Train,
    seed: int,
    work_dir: Path,
    callbacks: list[keras.callbacks.Callback] = (),
    hidden_center: float | None = None,
) -> tuple[keras.Model, FitResult]:
    """A new classifier of ``backbone`` for ``classes`` (base frozen, the head of ``params``),
    fitted by :func:`train_frozen`: how ``train@`` trains, and how the audit retrains."""
    model = build_classifier(backbone, size, len(classes), params.head, params.weights)
    return model, train_frozen(model, split, classes, size, params, seed, work_dir, callbacks, hidden_center)


def train_frozen(
    model: keras.Model,
    split: pd.DataFrame,
    classes: list[str],
    size: int,
    params: Train,
    seed: int,
    work_dir: Path,
    callbacks: list[keras.callbacks.Callback] = (),
    hidden_center: float | None = None,
) -> FitResult:
    """Fit the head of ``model`` (base frozen) on the train split, validating on val.

    ``hidden_center``: train on images whose central square is blanked (the shortcut audit).
    """
    train_rows, val_rows, weights = _rows_and_weights(split, classes, params)
    train_images = images.image_dataset(
        train_rows, classes, size, params.cache, hidden_center, params.cache_memory_limit_mb, Path(params.cache_dir)
    )
    val_images = images.image_dataset(
        val_rows, classes, size, params.cache, hidden_center, params.cache_memory_limit_mb, Path(params.cache_dir)
    )
    augment = images.augmenter(params.augment)
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
        train_batches = images.TrainingBatches(train_set, len(train_rows), params.batch_size, seed)
        val_batches = images.batches(val_set, params.batch_size)
    else:
        target = model
        train_batches = images.TrainingBatches(train_images, len(train_rows), params.batch_size, seed, augment)
        val_batches = images.batches(val_images, params.batch_size)
    return fit(
        target,
        train_batches,
        val_batches,
        epochs=params.epochs,
        learning_rate=params.learning_rate,
        amsgrad=params.amsgrad,
        weights=weights,
        patience=params.early_stopping_patience,
        work_dir=work_dir,
        callbacks=callbacks,
        xla=params.xla,
    )


def train_whole(
    model: keras.Model,
    split: pd.DataFrame,
    classes: list[str],
    size: int,
    params: Train,
    *,
    epochs: int,
    learning_rate: float,
    seed: int,
    work_dir: Path,
    callbacks: list[keras.callbacks.Callback] = (),
) -> FitResult:
    """Fit the whole model as it is (e.g. after unfreezing layers), with augmentation if enabled."""
    train_rows, val_rows, weights = _rows_and_weights(split, classes, params)
    train_images = images.image_dataset(
        train_rows,
        classes,
        size,
        params.cache,
        memory_limit_mb=params.cache_memory_limit_mb,
        cache_dir=Path(params.cache_dir),
    )
    train_batches = images.TrainingBatches(
        train_images, len(train_rows), params.batch_size, seed, images.augmenter(params.augment)
    )
    val_images = images.image_dataset(
        val_rows,
        classes,
        size,
        params.cache,
        memory_limit_mb=params.cache_memory_limit_mb,
        cache_dir=Path(params.cache_dir),
    )
    val_batches = images.batches(val_images, params.batch_size)
    return fit(
        model,
        train_batches,
        val_batches,
        epochs=epochs,
        learning_rate=learning_rate,
        amsgrad=params.amsgrad,
        weights=weights,
        patience=params.early_stopping_patience,
        work_dir=work_dir,
        callbacks=callbacks,
        xla=params.xla,
    )


def _rows_and_weights(split: pd.DataFrame, classes: list[str], params: Train):
    """Train rows, val rows, and the train split's class weights (None when turned off)."""
    train_rows, val_rows = split[split["split"] == "train"], split[split["split"] == "val"]
    weights = class_weights(images.label_indices(train_rows, classes), len(classes)) if params.class_weights else None
    return train_rows, val_rows, weights


def _features(extractor: keras.Model, dataset: tf.data.Dataset, batch_size: int) -> np.ndarray:
    """Run the frozen base once over an (image, label) dataset: its pooled features, in order."""
    return extractor.predict(dataset.map(lambda image, label: image).batch(batch_size), verbose=0)
