"""The end of a training stage: the model saved, then logged and registered in MLflow.

The saved folder comes first, so a model is never registered that is not on disk; the run is
tagged with the model file's md5, which is how ``evaluate`` finds the run of each model.
"""

from __future__ import annotations

from importlib import metadata
from pathlib import Path

import keras
import mlflow
import mlflow.pyfunc
import pandas as pd

import cxr
from cxr.core.outputs import write_csv, write_json
from cxr.core.spec import ModelSpec
from cxr.core.tracking import file_md5
from cxr.learn import training
from cxr.learn.model_files import save_model
from cxr.learn.training import FitResult
from cxr.report import figures
from cxr.serve import pyfunc


class EpochMetrics(keras.callbacks.Callback):
    """Log each epoch's metrics (loss, accuracy, val_*, learning_rate) to the active run.

    ``work_dir`` is the fit's resume folder (:func:`cxr.learn.training.resume_dir`). A fit that
    resumes a killed one first logs the epochs the killed run committed (its
    :class:`~cxr.learn.training.Checkpoint`) into this run, so the run's metric history is whole,
    and tags it ``resumed_from_run`` with the id of the run that was killed.
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
            for row in training.Checkpoint(self.work_dir).history.to_dict("records"):
                epoch = int(row.pop("epoch"))
                mlflow.log_metrics({key: float(value) for key, value in row.items()}, step=epoch)
        marker.write_text(current)

    def on_epoch_end(self, epoch, logs=None):
        metrics = {key: float(value) for key, value in (logs or {}).items()}
        mlflow.log_metrics(metrics, step=epoch + 1)


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


# What the registered pyfunc needs where it is served; the code itself travels with the model.
SERVING_PACKAGES = (
    "tensorflow-cpu",
    "keras",
    "mlflow",
    "numpy",
    "pandas",
    "pillow",
    "pydicom",
    "python-gdcm",
    "pyyaml",
    "scikit-learn",
    "matplotlib",
    "tqdm",
)


def serving_requirements() -> list[str]:
    found = []
    for name in SERVING_PACKAGES:
        try:
            found.append(f"{name}=={metadata.version(name)}")
        except metadata.PackageNotFoundError:
            continue
    return found


def log_model(folder: Path, spec: ModelSpec, example: Path, registered_name: str) -> str:
    """Log the saved model folder as the image-taking pyfunc (:mod:`cxr.serve.pyfunc`, logged from
    code), with its signature, an example image and cxr's code, and register it; return the URI."""
    info = mlflow.pyfunc.log_model(
        name="model",
        python_model=str(Path(pyfunc.__file__).with_name("model_code.py")),
        artifacts={"model": str(folder)},
        code_paths=[str(Path(cxr.__file__).parent)],
        signature=pyfunc.signature(spec.classes),
        model_config=pyfunc.SERVING_LIMITS,
        input_example=pd.DataFrame({pyfunc.COLUMN: [example.read_bytes()]}),
        registered_model_name=registered_name,
        pip_requirements=serving_requirements(),
    )
    return info.model_uri


def publish(
    model: keras.Model,
    result: FitResult,
    spec: ModelSpec,
    *,
    folder: Path,
    curves: Path,
    report: Path,
    title: str,
    example: Path,
    registered_name: str,
    extra: dict | None = None,
) -> dict:
    """Save the model to ``folder`` and its curves under ``curves``, log the fit to the active MLflow
    run, register the saved model (a pyfunc that takes image files, ``example`` as its input
    example), tag the run with the model file's md5, then write ``report``. Returns its metrics."""
    metrics = summary(result) | (extra or {})
    save_model(model, folder, spec, result.history)
    write_curves(result.history, curves, folder.name)
    log_fit(result.history, metrics, title)
    log_model(folder, spec, example, registered_name)
    mlflow.set_tag("model_md5", file_md5(folder / "model.keras"))
    write_json(report, metrics)
    return metrics
