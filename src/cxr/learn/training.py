"""Fitting: class weights, the fit (resumed from its checkpoint), and the two training paths
(the runtime they run in is set up by :func:`cxr.learn.runtime.configure_runtime`).

With the base frozen and no augmentation, the base's output for an image never changes, so
its pooled features are computed once and the head is trained on them: the same model and
the same numbers as fitting the whole network, at a fraction of the cost. With augmentation
the whole network is fitted on augmented batches (the base still frozen, in inference mode).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np
import pandas as pd
import tensorflow as tf
from sklearn.utils.class_weight import compute_class_weight

from cxr.core.backbones import Backbone
from cxr.core.schema import split_part
from cxr.core.sections import Train
from cxr.learn import checkpoints, images, lungs, runtime
from cxr.learn.model import HEAD_LAYER, NORMALIZE_LAYER, build_classifier, feature_extractor

HISTORY_COLUMNS = ["epoch", "loss", "accuracy", "val_loss", "val_accuracy", "learning_rate"]


@dataclass
class FitResult:
    history: pd.DataFrame  # one row per epoch, HISTORY_COLUMNS
    best: dict  # epoch (0: the starting weights), val_loss, val_accuracy of the weights kept


def class_weights(labels: np.ndarray, n_classes: int) -> dict[int, float]:
    """Balanced weights, n_samples / (n_classes * count), so rare classes count as much in the loss."""
    present = np.unique(labels)
    weights = compute_class_weight("balanced", classes=present, y=labels)
    return {int(index): float(weight) for index, weight in zip(present, weights)} | {
        index: 1.0 for index in range(n_classes) if index not in present
    }


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
    """Compile (XLA when ``xla``) and fit for ``epochs``, resuming from the :class:`~cxr.learn.checkpoints.Checkpoint`
    in ``work_dir`` if a killed fit left one, then load the best weights (:class:`~cxr.learn.checkpoints.KeepBest`).
    Under ``MultiWorkerMirroredStrategy`` the fit is the same, of :class:`~cxr.learn.runtime.InStep` around ``model``.

    Returns the history (one row per epoch, :data:`HISTORY_COLUMNS`) and the best epoch's record.
    """
    work_dir.mkdir(parents=True, exist_ok=True)
    model = runtime.InStep(model) if runtime.across_workers() else model
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate, amsgrad=amsgrad),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
        jit_compile=xla,
    )
    best = checkpoints.KeepBest(work_dir, val, patience)
    best.set_model(model)
    checkpoint = checkpoints.Checkpoint(work_dir)
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
            callbacks=[checkpoints.LearningRateLog(), best, *callbacks, checkpoint],
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
    hidden: lungs.HiddenRegion | None = None,
) -> tuple[keras.Model, FitResult]:
    """A new classifier of ``backbone`` for ``classes``, fitted with its base frozen.

    The head is that of ``params``; the fit is :func:`train_frozen`'s: how ``train@`` trains, and how
    the audit retrains.

    Parameters
    ----------
    backbone : Backbone
        The backbone's registry entry.
    split : pandas.DataFrame
        The split table; its train and val rows are used.
    classes : list of str
        The classes, in output order.
    size : int
        The input side, in pixels.
    params : Train
        The ``train`` parameters.
    seed : int
        The random seed.
    work_dir : Path
        The fit's checkpoint folder.
    callbacks : list of keras.callbacks.Callback, optional
        More callbacks for the fit.
    hidden : HiddenRegion or None, optional
        When given, that region of every image is blanked (the lungs hidden).

    Returns
    -------
    model : keras.Model
        The fitted classifier.
    result : FitResult
        Its history and best epoch.

    Raises
    ------
    BackboneError
        When the base's starting weights cannot be loaded.
    """
    model = build_classifier(backbone, size, len(classes), params.head, params.weights)
    return model, train_frozen(model, split, classes, size, params, seed, work_dir, callbacks, hidden)


def train_frozen(
    model: keras.Model,
    split: pd.DataFrame,
    classes: list[str],
    size: int,
    params: Train,
    seed: int,
    work_dir: Path,
    callbacks: list[keras.callbacks.Callback] = (),
    hidden: lungs.HiddenRegion | None = None,
) -> FitResult:
    """Fit the head of ``model`` (base frozen) on the train split, validating on val.

    ``hidden``: train on images with that region blanked (the shortcut audit's lungs hidden).
    """
    train_rows, val_rows, weights = _rows_and_weights(split, classes, params)
    train_images = images.image_dataset(
        train_rows, classes, size, params.cache, hidden, params.cache_memory_limit_mb, Path(params.cache_dir)
    )
    val_images = images.image_dataset(
        val_rows, classes, size, params.cache, hidden, params.cache_memory_limit_mb, Path(params.cache_dir)
    )
    augment = images.augmenter(params.augment)
    head = model.get_layer(HEAD_LAYER)
    extractor = feature_extractor(model)
    train_labels, val_labels = images.label_indices(train_rows, classes), images.label_indices(val_rows, classes)
    if augment is None or params.head.normalize:
        train_features = _features(extractor, train_images, params.batch_size)
    if params.head.normalize:
        head.get_layer(NORMALIZE_LAYER).adapt(train_features)
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
    """Fit the whole model as it is (e.g. after unfreezing layers), with augmentation if enabled.

    Parameters
    ----------
    model : keras.Model
        The model, its trainable layers set.
    split : pandas.DataFrame
        The split table; its train and val rows are used.
    classes : list of str
        The classes, in output order.
    size : int
        The input side, in pixels.
    params : Train
        The ``train`` parameters (batch size, cache, augmentation, class weights, early stopping).
    epochs : int
        The most epochs to fit.
    learning_rate : float
        The optimizer's learning rate.
    seed : int
        The random seed of the batches and augmentation.
    work_dir : Path
        The fit's checkpoint folder.
    callbacks : list of keras.callbacks.Callback, optional
        More callbacks for the fit.

    Returns
    -------
    FitResult
        The history (one row per epoch) and the best epoch, whose weights the model keeps.
    """
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
    train_rows, val_rows = split_part(split, "train"), split_part(split, "val")
    weights = class_weights(images.label_indices(train_rows, classes), len(classes)) if params.class_weights else None
    return train_rows, val_rows, weights


def _features(extractor: keras.Model, dataset: tf.data.Dataset, batch_size: int) -> np.ndarray:
    """Run the frozen base once over an (image, label) dataset: its pooled features, in order.
    Across workers each computes all of them itself (``predict`` would shard them between workers)."""
    batches = dataset.map(lambda image, label: image).batch(batch_size)
    if runtime.across_workers():
        step = tf.function(lambda batch: extractor(batch, training=False))
        return np.concatenate([step(batch).numpy() for batch in batches])
    return extractor.predict(batches, verbose=0)
