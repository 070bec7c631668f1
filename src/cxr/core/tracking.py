"""MLflow conventions: where runs go and what each run carries.

- Tracking URI: ``MLFLOW_TRACKING_URI`` if set, else ``sqlite:///<repo root>/mlflow.db``; the
  repo root is ``DVC_ROOT`` when DVC runs the stage (experiments run in temporary copies).
- One experiment per task (``cxr-<task>``), artifacts under ``<repo root>/mlartifacts``.
- One run per stage execution, named after the stage (``train@vgg16``, ``finetune``), a child of
  one parent run per pipeline execution: the DVC experiment (named after it) under ``dvc exp run``
  and queue workers, ``workspace@<commit>`` for a plain ``dvc repro`` (one per commit and
  params.yaml), or the ``mlflow run`` run (which sets ``MLFLOW_RUN_ID``). The parent carries the
  experiment's params and, after ``evaluate``, every model's headline test metrics.
- Every run carries all effective params, the git commit, DVC_STAGE, DVC_EXP_NAME, the md5 of
  the split it trained on, backbone, task and data origin, and the split's train/val/test parts
  as dataset inputs whose digest is the split file's DVC hash.
- Experiments carry ``mlflow.experimentKind = custom_model_development`` (the UI opens on the
  runs) and a description.

The model registry's conventions (names, aliases, version tags) are :mod:`cxr.core.registry`.
"""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
import time
import urllib.request
from pathlib import Path

import mlflow
import mlflow.data
import pandas as pd
from mlflow.tracking import MlflowClient

from cxr.core.config import Config, as_dict
from cxr.core.errors import CxrError, one_line

SYNTHETIC_NOTE = (
    "Trained on SYNTHETIC generated images (sources.origin=synthetic): a test of the pipeline, not a medical result."
)


def repo_root() -> Path:
    return Path(os.environ.get("DVC_ROOT") or Path.cwd()).resolve()


def tracking_uri() -> str:
    """The MLflow tracking URI: ``MLFLOW_TRACKING_URI``, else ``mlflow.db`` (SQLite) in the repository root.

    The repository root is ``DVC_ROOT`` when set, else the working directory.

    Returns
    -------
    str
        The URI.
    """
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{repo_root() / 'mlflow.db'}"


class TrackingError(CxrError):
    """The MLflow tracking store cannot be reached; the message names it and what to do."""


# A tracking server that does not answer /health within this is reported at once, not after
# MLflow's own retries (minutes).
SERVER_TIMEOUT_S = 5


def check_tracking_store(uri: str) -> None:
    """Raise :class:`TrackingError` unless the tracking server answers (http) or the SQLite
    file's folder exists (sqlite); other stores are left to MLflow."""
    if uri.startswith(("http://", "https://")):
        try:
            with urllib.request.urlopen(f"{uri.rstrip('/')}/health", timeout=SERVER_TIMEOUT_S):
                return
        except (OSError, ValueError) as exc:
            reason = getattr(exc, "reason", exc)
            raise TrackingError(
                f"the MLflow tracking server {uri} (MLFLOW_TRACKING_URI) does not answer ({reason}); start it "
                "(README, 'Working as a team'), or unset MLFLOW_TRACKING_URI to log to the local mlflow.db"
            ) from None
    if uri.startswith("sqlite:///"):
        folder = Path(uri.removeprefix("sqlite:///")).parent
        if not folder.is_dir():
            raise TrackingError(
                f"the MLflow tracking store {uri}: the folder {folder} does not exist; create it or "
                "point MLFLOW_TRACKING_URI elsewhere"
            )


def require_tracking_store() -> None:
    """Stop a stage before any work when its runs could not be logged (see check_tracking_store).

    Raises
    ------
    TrackingError
        When the tracking store at :func:`tracking_uri` cannot take runs.
    """
    check_tracking_store(tracking_uri())


def experiment_name(task: str) -> str:
    return f"cxr-{task}"


def flat_params(config: Config) -> dict[str, str]:
    """Every effective parameter as ``section.key`` -> value, with names MLflow accepts."""
    flat: dict[str, str] = {}

    def walk(prefix: str, value) -> None:
        if isinstance(value, dict):
            for key, item in value.items():
                walk(f"{prefix}.{key}" if prefix else str(key), item)
        else:
            flat[re.sub(r"[^\w\-. /]", "_", prefix)] = str(value)[:6000]

    walk("", as_dict(config))
    return flat


def flat_metrics(metrics: dict, prefix: str = "") -> dict[str, float]:
    """Nested numeric metrics as ``a.b.c`` -> float for MLflow; None, text and NaN are left out.

    Characters MLflow does not allow in a metric name are replaced by ``_``.

    Parameters
    ----------
    metrics : dict
        Nested metrics.
    prefix : str, optional
        Put before every name.

    Returns
    -------
    dict of str to float
        The flat metrics.
    """
    flat = {}
    for key, value in metrics.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat |= flat_metrics(value, f"{name}.")
        elif isinstance(value, (int, float)) and not isinstance(value, bool) and value == value:
            flat[re.sub(r"[^\w\-. /]", "_", name)] = float(value)
    return flat


def file_md5(path: Path) -> str:
    """The MD5 hex digest of a file's bytes (how runs and registered versions name a model file).

    Parameters
    ----------
    path : Path
        The file.

    Returns
    -------
    str
        32 hexadecimal digits.

    Raises
    ------
    OSError
        When the file cannot be read.
    """
    return hashlib.md5(Path(path).read_bytes()).hexdigest()


def git_commit() -> str:
    try:
        return subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True, cwd=repo_root()
        ).stdout.strip()
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
    return (
        f"cxr: chest X-ray classification ({name}), one run per DVC stage execution (train@<backbone>, "
        "finetune, evaluate, audit@<backbone>, audit_report). Compare backbones with the runs' test "
        "metrics; see the project README, sections 'MLflow' and 'Reproduce the study'."
    )


def experiment_id_of(name: str) -> str:
    """The experiment ``name``, created with its kind and description if it does not exist yet (by
    this process or, concurrently, by another: a lost race reads the winner's)."""
    experiment = mlflow.get_experiment_by_name(name)
    if experiment is None:
        tags = EXPERIMENT_TAGS | {"mlflow.note.content": experiment_description(name)}
        # A tracking server keeps artifacts itself (--serve-artifacts: clients need no storage access);
        # one machine keeps them beside mlflow.db.
        local = None if tracking_uri().startswith(("http://", "https://")) else (repo_root() / "mlartifacts").as_uri()
        try:
            return mlflow.create_experiment(name, artifact_location=local, tags=tags)
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
        log_table_input(split[split["split"] == part], split_file, part, digest)


def log_table_input(rows: pd.DataFrame, source: Path, context: str, digest: str) -> None:
    """Log rows of a table file as the active run's dataset input.

    ``rows`` of the table file ``source`` become the dataset input for ``context`` (``train``,
    ``external``...), named ``<file>:<context>``, with the file's DVC hash as digest.

    Parameters
    ----------
    rows : pandas.DataFrame
        The rows; their ``image_id``, ``patient_id``, ``source`` and ``class`` columns are logged.
    source : Path
        The table file they come from.
    context : str
        What the rows are to the run.
    digest : str
        The file's DVC hash.
    """
    columns = [column for column in ("image_id", "patient_id", "source", "class") if column in rows]
    dataset = mlflow.data.from_pandas(
        rows[columns], source=source.as_posix(), targets="class", name=f"{source.name}:{context}", digest=digest
    )
    # Two experiments logging the same split at once on a shared server race to insert the dataset.
    retry_write(mlflow.log_input, dataset, context=context)


def retry_write(call, *args, attempts: int = 5, **kwargs):
    """``call(*args, **kwargs)``, retried when the tracking server refuses it.

    MLflow's SQL stores write select-then-insert: a registry alias or tag, a run's dataset input
    (one row per experiment, name and digest). Two experiments at once (``dvc exp run -j 2``) on a
    PostgreSQL-backed server can both insert, and the second fails on the unique key, though a
    moment later it would succeed (finding the row the first wrote).

    Parameters
    ----------
    call : callable
        The MLflow write (e.g. ``MlflowClient().set_registered_model_alias``, ``mlflow.log_input``).
    *args, **kwargs
        Its arguments.
    attempts : int, optional
        Tries before giving up (default 5), 0.5 s apart, doubling.

    Returns
    -------
    Any
        What ``call`` returns.

    Raises
    ------
    TrackingError
        When every attempt was refused; the message names the call and the server's last answer.
    """
    for attempt in range(attempts):
        try:
            return call(*args, **kwargs)
        except mlflow.exceptions.MlflowException as exc:
            if attempt == attempts - 1:
                raise TrackingError(
                    f"the MLflow tracking server refused {call.__name__}{args[:3]} {attempts} times: "
                    f"{one_line(exc.message)}"
                ) from None
            time.sleep(0.5 * 2**attempt)
