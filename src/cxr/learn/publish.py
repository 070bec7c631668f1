"""The end of a training stage: the model saved, then its fit logged in MLflow.

The saved folder comes first, so a run never claims a model that is not on disk; the run is
tagged with the model file's md5, which is how registration (:mod:`cxr.serve.register`, the
``register@`` stages) and ``evaluate`` find the run of each model.
"""

from __future__ import annotations

from pathlib import Path

import keras
import mlflow
import pandas as pd

from cxr.core import figures
from cxr.core.outputs import write_csv, write_json
from cxr.core.registry import MODEL_MD5_TAG
from cxr.core.spec import MODEL_FILE, ModelSpec
from cxr.core.tracking import file_md5
from cxr.learn import checkpoints
from cxr.learn.model_files import save_model
from cxr.learn.training import FitResult

# Per-epoch values that are settings, not measurements: the run's params hold them (the learning rate
# is constant within a fit; history.json keeps it per epoch).
NOT_METRICS = ("learning_rate",)


def epoch_metrics(values: dict) -> dict[str, float]:
    """One epoch's logs as MLflow metrics: every value but :data:`NOT_METRICS`."""
    return {key: float(value) for key, value in values.items() if key not in NOT_METRICS}


class EpochMetrics(keras.callbacks.Callback):
    """Log each epoch's metrics (loss, accuracy, val_loss, val_accuracy) to the active run.

    ``work_dir`` is the fit's resume folder (:func:`cxr.learn.checkpoints.resume_dir`). A fit that
    resumes a killed one first logs the epochs the killed run committed (its
    :class:`~cxr.learn.checkpoints.Checkpoint`) into this run, so the run's metric history is whole,
    and tags it ``resumed_from_run`` with the id of the run that was killed.

    Parameters
    ----------
    work_dir : Path or None, optional
        The fit's resume folder; None: no resumed epochs are logged.
    """

    def __init__(self, work_dir: Path | None = None):
        super().__init__()
        self.work_dir = work_dir

    def on_train_begin(self, logs=None):
        if self.work_dir is None:
            return
        marker = self.work_dir / "mlflow_run_id"
        current = mlflow.active_run().info.run_id
        if marker.is_file() and marker.read_text().strip() != current:
            mlflow.set_tag("resumed_from_run", marker.read_text().strip())
            for row in checkpoints.Checkpoint(self.work_dir).history.to_dict("records"):
                epoch = int(row.pop("epoch"))
                mlflow.log_metrics(epoch_metrics(row), step=epoch)
        marker.write_text(current)

    def on_epoch_end(self, epoch, logs=None):
        mlflow.log_metrics(epoch_metrics(logs or {}), step=epoch + 1)


def summary(result: FitResult) -> dict:
    """The metrics file of a fit: the last epoch, and the best epoch whose weights are kept."""
    last = result.history.iloc[-1]
    return {
        "epochs": int(last["epoch"]),
        "best_epoch": int(result.best["epoch"]),
        "train": {"loss": float(last["loss"]), "accuracy": float(last["accuracy"])},
        "val": {"loss": float(last["val_loss"]), "accuracy": float(last["val_accuracy"])},
        "best": {"val_loss": result.best["val_loss"], "val_accuracy": result.best["val_accuracy"]},
    }


def write_curves(history: pd.DataFrame, curves: Path, name: str) -> None:
    """Per-epoch accuracy and loss (train and validation) as ``curves/<metric>/<name>.csv``, the
    files DVC plots read."""
    for metric in ("accuracy", "loss"):
        write_csv(curves / metric / f"{name}.csv", history[["epoch", metric, f"val_{metric}"]])


def log_fit(history: pd.DataFrame, metrics: dict, title: str) -> None:
    """The fit's summary numbers as run metrics and its curves as a figure artifact."""
    mlflow.log_metrics(
        {
            "best_epoch": metrics["best_epoch"],
            "best_val_loss": metrics["best"]["val_loss"],
            "best_val_accuracy": metrics["best"]["val_accuracy"],
        }
    )
    mlflow.log_figure(figures.training_curves(history, title), "training_curves.png")
    mlflow.log_table(history, "history.json")


def publish(
    model: keras.Model,
    result: FitResult,
    spec: ModelSpec,
    *,
    folder: Path,
    curves: Path,
    report: Path,
    title: str,
    extra: dict | None = None,
) -> dict:
    """Save a fitted model, its curves and metrics, and log the fit to the active MLflow run.

    The model goes to ``folder`` and its curves under ``curves`` (``<metric>/<folder name>.csv``); the
    fit is logged to the active MLflow run, the run tagged with the model file's md5 (how the
    ``register@`` stages and ``evaluate`` find it), then ``report`` written.

    Parameters
    ----------
    model : keras.Model
        The fitted model.
    result : FitResult
        Its fit: the history (one row per epoch) and the best epoch.
    spec : ModelSpec
        What the model is, saved as ``meta.json``.
    folder : Path
        The model folder.
    curves : Path
        The folder of the training curves (DVC plots).
    report : Path
        The JSON metrics file.
    title : str
        The title of the logged curves figure.
    extra : dict or None, optional
        More metrics for ``report``.

    Returns
    -------
    dict
        The metrics written to ``report``: :func:`summary`'s keys (``epochs``, ``best_epoch``,
        ``train``, ``val``, ``best``) plus ``extra``'s.
    """
    metrics = summary(result) | (extra or {})
    save_model(model, folder, spec, result.history)
    write_curves(result.history, curves, folder.name)
    log_fit(result.history, metrics, title)
    mlflow.set_tag(MODEL_MD5_TAG, file_md5(folder / MODEL_FILE))
    write_json(report, metrics)
    return metrics
