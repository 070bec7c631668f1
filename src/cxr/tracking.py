"""MLflow conventions: where runs go, what each run carries, and how models are logged.

- Tracking URI: ``MLFLOW_TRACKING_URI`` if set, else ``sqlite:///<repo root>/mlflow.db``; the
  repo root is ``DVC_ROOT`` when DVC runs the stage (experiments run in temporary copies).
- One experiment per task (``cxr-<task>``), artifacts under ``<repo root>/mlartifacts``.
- One run per stage execution, named after the stage (``train@vgg16``, ``finetune``); under
  ``mlflow run`` (which sets ``MLFLOW_RUN_ID``) it is a child of that run, never the run itself.
- Every run carries all effective params, the git commit, DVC_STAGE, DVC_EXP_NAME, the md5 of
  the split it trained on, backbone, task and data origin, and the split's train/val/test parts
  as dataset inputs whose digest is the split file's DVC hash.
- Experiments carry ``mlflow.experimentKind = custom_model_development`` (the UI opens on the
  runs) and a description.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import re
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import keras
import mlflow
import mlflow.data
import numpy as np
import pandas as pd
import tensorflow as tf
from mlflow.models import infer_signature
from mlflow.tracking import MlflowClient

from cxr import figures
from cxr.config import Config

SYNTHETIC_NOTE = ("Trained on SYNTHETIC generated images (sources.origin=synthetic): a test of the pipeline, "
                  "not a medical result.")


def repo_root() -> Path:
    return Path(os.environ.get("DVC_ROOT") or Path.cwd()).resolve()


def tracking_uri() -> str:
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{repo_root() / 'mlflow.db'}"


def experiment_name(task: str) -> str:
    return f"cxr-{task}"


def model_name(task: str, backbone: str | None = None) -> str:
    """Registered model names: ``cxr-<task>`` (the release candidate), ``cxr-<task>-<backbone>``."""
    return f"cxr-{task}" if backbone is None else f"cxr-{task}-{backbone}"


def flat_params(config: Config) -> dict[str, str]:
    """Every effective parameter as ``section.key`` -> value, with names MLflow accepts."""
    flat: dict[str, str] = {}

    def walk(prefix: str, value) -> None:
        if isinstance(value, dict):
            for key, item in value.items():
                walk(f"{prefix}.{key}" if prefix else str(key), item)
        else:
            flat[re.sub(r"[^\w\-. /]", "_", prefix)] = str(value)[:6000]

    walk("", dataclasses.asdict(config))
    return flat


def flat_metrics(metrics: dict, prefix: str = "") -> dict[str, float]:
    """Nested numeric metrics as ``a.b.c`` -> float for MLflow; None, text and NaN are left out."""
    flat = {}
    for key, value in metrics.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat |= flat_metrics(value, f"{name}.")
        elif isinstance(value, (int, float)) and not isinstance(value, bool) and value == value:
            flat[re.sub(r"[^\w\-. /]", "_", name)] = float(value)
    return flat


def file_md5(path: Path) -> str:
    return hashlib.md5(Path(path).read_bytes()).hexdigest()


def git_commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True,
                              cwd=repo_root()).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def run_tags(config: Config, stage: str, split_file: Path, backbone: str) -> dict[str, str]:
    commit = git_commit()
    return {
        "git_commit": commit,
        "mlflow.source.git.commit": commit,
        "DVC_STAGE": os.environ.get("DVC_STAGE", stage),
        "DVC_EXP_NAME": os.environ.get("DVC_EXP_NAME", ""),
        "split_md5": file_md5(split_file),
        "backbone": backbone,
        "task": config.task,
        "data_origin": config.sources.origin,
        "synthetic": str(config.sources.origin == "synthetic").lower(),
        "stage": stage,
    }


# MLflow 3's UI opens an experiment on its runs (not on GenAI traces) when it carries this kind.
EXPERIMENT_TAGS = {"mlflow.experimentKind": "custom_model_development"}


def experiment_description(name: str) -> str:
    return (f"cxr: chest X-ray classification ({name}), one run per DVC stage execution (train@<backbone>, "
            "finetune, evaluate, audit@<backbone>, audit_report). Compare backbones with the runs' test "
            "metrics; see the project README, sections 'MLflow' and 'Reproduce the study'.")


def _experiment_id(name: str) -> str:
    """The experiment ``name``, created with its kind and description if it does not exist yet (by
    this process or, concurrently, by another: a lost race reads the winner's)."""
    experiment = mlflow.get_experiment_by_name(name)
    if experiment is None:
        tags = EXPERIMENT_TAGS | {"mlflow.note.content": experiment_description(name)}
        try:
            return mlflow.create_experiment(name, artifact_location=(repo_root() / "mlartifacts").as_uri(),
                                            tags=tags)
        except mlflow.exceptions.MlflowException:
            experiment = mlflow.get_experiment_by_name(name)
            if experiment is None:
                raise
    for key, value in EXPERIMENT_TAGS.items():
        if experiment.tags.get(key) != value:
            MlflowClient().set_experiment_tag(experiment.experiment_id, key, value)
    return experiment.experiment_id


def log_split_inputs(split_file: Path, digest: str) -> None:
    """The train, val and test parts of the split as the run's dataset inputs. Their ``digest`` is
    the DVC hash of the split file (its md5), so two runs on the same split show the same digest."""
    split = pd.read_csv(split_file)
    for part in ("train", "val", "test"):
        rows = split[split["split"] == part][["image_id", "patient_id", "source", "class"]]
        dataset = mlflow.data.from_pandas(rows, source=split_file.as_posix(), targets="class",
                                          name=f"{split_file.name}:{part}", digest=digest)
        mlflow.log_input(dataset, context=part)


@contextmanager
def stage_run(config: Config, stage: str, split_file: Path, backbone: str) -> Iterator[mlflow.ActiveRun]:
    """An MLflow run for one stage execution, with params and tags; FAILED if the stage raises."""
    mlflow.set_tracking_uri(tracking_uri())
    tags = run_tags(config, stage, split_file, backbone)
    parent = os.environ.pop("MLFLOW_RUN_ID", None)
    try:
        if parent:
            experiment_id = MlflowClient().get_run(parent).info.experiment_id
            tags["mlflow.parentRunId"] = parent
        else:
            experiment_id = _experiment_id(experiment_name(config.task))
        description = SYNTHETIC_NOTE if config.sources.origin == "synthetic" else None
        with mlflow.start_run(experiment_id=experiment_id, run_name=stage, tags=tags,
                              description=description) as run:
            mlflow.log_params(flat_params(config))
            log_split_inputs(split_file, tags["split_md5"])
            yield run
    finally:
        if parent:
            os.environ["MLFLOW_RUN_ID"] = parent


class EpochMetrics(keras.callbacks.Callback):
    """Log each epoch's metrics (loss, accuracy, val_*, learning_rate) to the active run."""

    def on_epoch_end(self, epoch, logs=None):
        metrics = {key: float(value) for key, value in (logs or {}).items()}
        mlflow.log_metrics(metrics, step=epoch + 1)


def log_fit(result_history: pd.DataFrame, summary: dict, title: str) -> None:
    """The fit's summary numbers as run metrics and its curves as a figure artifact."""
    mlflow.log_metrics({
        "best_epoch": summary["best_epoch"],
        "best_val_loss": summary["best"]["val_loss"],
        "best_val_accuracy": summary["best"]["val_accuracy"],
    })
    mlflow.log_figure(figures.training_curves(result_history, title), "training_curves.png")
    mlflow.log_table(result_history, "history.json")


class _KerasFlavor:
    """``mlflow.keras``, creating the model folder before the input example is written.

    MLflow 3.17's Keras flavour writes ``input_example.json`` before it creates the folder and
    fails (mlflow/mlflow#16183); this wrapper is the only difference.
    """

    __name__ = "mlflow.keras"

    @staticmethod
    def save_model(path, **kwargs):
        Path(path).mkdir(parents=True, exist_ok=True)
        mlflow.keras.save_model(path=path, **kwargs)


def log_model(model: keras.Model, example: np.ndarray, registered_name: str) -> str:
    """Log the Keras model with signature and input example, register it; return the model URI."""
    signature = infer_signature(example, model.predict(example, verbose=0))
    info = mlflow.models.Model.log(
        artifact_path=None,
        name="model",
        flavor=_KerasFlavor,
        model=model,
        signature=signature,
        input_example=example,
        registered_model_name=registered_name,
        pip_requirements=[f"keras=={keras.__version__}", f"tensorflow-cpu=={tf.__version__}",
                          f"mlflow=={mlflow.__version__}"],
    )
    return info.model_uri


def tag_model_file(path: Path) -> None:
    """Tag the active run with the md5 of the model file it produced, so evaluation finds it."""
    mlflow.set_tag("model_md5", file_md5(path))


def find_model_run(task: str, model_file: Path) -> str | None:
    """The id of the run that produced ``model_file`` (by its ``model_md5`` tag), if any."""
    mlflow.set_tracking_uri(tracking_uri())
    experiment = mlflow.get_experiment_by_name(experiment_name(task))
    if experiment is None:
        return None
    runs = MlflowClient().search_runs([experiment.experiment_id],
                                      filter_string=f"tags.model_md5 = '{file_md5(model_file)}'",
                                      order_by=["attributes.start_time DESC"], max_results=1)
    return runs[0].info.run_id if runs else None


def log_evaluation(run_id: str, metrics: dict[str, float | None], folder: Path, confusion: pd.DataFrame) -> None:
    """Test metrics, reports, figures and predictions of one model, added to its training run."""
    client = MlflowClient()
    timestamp = int(pd.Timestamp.now().timestamp() * 1000)
    client.log_batch(run_id, metrics=[mlflow.entities.Metric(key, value, timestamp, 0)
                                      for key, value in metrics.items() if value is not None])
    client.log_artifacts(run_id, str(folder), "evaluation")
    client.log_table(run_id, confusion, "evaluation/confusion_table.json")
