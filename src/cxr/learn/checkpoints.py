"""A fit's state on disk: the checkpoint a killed fit resumes from, the best weights, and where
both live until the model is saved.

A fit resumed from its :class:`Checkpoint` ends with the bytes of an uninterrupted one (the data
order and augmentation of each epoch depend on (seed, epoch) alone:
:class:`cxr.learn.images.TrainingBatches`).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import keras
import numpy as np
import pandas as pd
import tensorflow as tf

from cxr.core.outputs import replacing, write_csv, write_json
from cxr.core.spec import HISTORY_FILE


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
        write_csv(self.folder / HISTORY_FILE, pd.DataFrame(history))
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


def work_folder(model_folder: Path, task: str = "") -> Path:
    """Where the fit of ``model_folder`` keeps its checkpoints until it is saved.

    A sibling ``.resume/<name>``, outside the output folder that is replaced at once when saved.

    Parameters
    ----------
    model_folder : Path
        The folder the model is saved to.
    task : str, optional
        A worker's task other than the chief (:func:`cxr.learn.runtime.task_name`): each worker
        keeps its own checkpoints, on a shared file system too.

    Returns
    -------
    Path
        ``<parent>/.resume/<name>``, or ``<parent>/.resume/<name>.<task>``.
    """
    return model_folder.parent / ".resume" / (model_folder.name + (f".{task}" if task else ""))


def resume_dir(folder: Path, key: dict, fresh: bool = False) -> Path:
    """The checkpoint folder of one configuration: state left by another configuration is wiped.

    ``key`` holds everything the fit depends on (params, split md5, stage); a killed run re-run
    with the same key resumes, a run with changed params starts afresh. The key's SHA-256 is kept in
    the folder's ``fingerprint`` file.

    Parameters
    ----------
    folder : Path
        The fit's work folder (:func:`work_folder`).
    key : dict
        What the fit depends on; JSON-serialised (other values as text) to fingerprint it.
    fresh : bool, optional
        Wipe any state the folder holds, whatever its key (a fit that must not resume).

    Returns
    -------
    Path
        ``folder``, created if needed.
    """
    digest = hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()
    stamp = folder / "fingerprint"
    if folder.exists() and (fresh or not stamp.is_file() or stamp.read_text() != digest):
        shutil.rmtree(folder)
    folder.mkdir(parents=True, exist_ok=True)
    stamp.write_text(digest)
    return folder
