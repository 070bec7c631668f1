"""MLflow conventions: where runs go, what each run carries, how the registry is described.

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
"""

from __future__ import annotations

import hashlib
import os
import re
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import mlflow
import mlflow.data
import pandas as pd
from mlflow.entities import RunStatus
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from cxr.core.config import Config, as_dict, unrestricted
from cxr.core.errors import CxrError, StageInterrupted, one_line
from cxr.core.outputs import process_exists

SYNTHETIC_NOTE = (
    "Trained on SYNTHETIC generated images (sources.origin=synthetic): a test of the pipeline, not a medical result."
)


def repo_root() -> Path:
    return Path(os.environ.get("DVC_ROOT") or Path.cwd()).resolve()


def tracking_uri() -> str:
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
    """Stop a stage before any work when its runs could not be logged (see check_tracking_store)."""
    check_tracking_store(tracking_uri())


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

    walk("", as_dict(config))
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


def _experiment_id(name: str) -> str:
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
    """``rows`` of the table file ``source`` as the active run's dataset input for ``context``
    (``train``, ``external``...), named ``<file>:<context>``, with the file's DVC hash as digest."""
    columns = [column for column in ("image_id", "patient_id", "source", "class") if column in rows]
    dataset = mlflow.data.from_pandas(
        rows[columns], source=source.as_posix(), targets="class", name=f"{source.name}:{context}", digest=digest
    )
    mlflow.log_input(dataset, context=context)


PIPELINE_KEY = "cxr.pipeline"


def pipeline_identity(commit: str) -> tuple[str, str]:
    """(key, run name) of this pipeline execution: the DVC experiment when DVC runs one (each queue
    worker has its own), else the workspace at git ``commit`` and its params.yaml."""
    experiment = os.environ.get("DVC_EXP_NAME")
    if experiment:
        return f"exp:{experiment}", experiment
    params = repo_root() / "params.yaml"
    params_md5 = file_md5(params)[:8] if params.is_file() else "none"
    return f"workspace:{commit}:{params_md5}", f"workspace@{commit[:7]}"


def pipeline_run(experiment_id: str, config: Config, commit: str) -> str:
    """The parent run of this pipeline execution in ``experiment_id``: found by its key, or created
    (finished at once: it only groups) with the experiment's params. Two processes that create it
    at the same moment keep the older of the two and delete the other."""
    client = MlflowClient()
    key, name = pipeline_identity(commit)
    query = f"tags.`{PIPELINE_KEY}` = '{key}'"
    found = client.search_runs([experiment_id], filter_string=query, order_by=["attributes.start_time ASC"])
    if found:
        return found[0].info.run_id
    run = client.create_run(
        experiment_id,
        run_name=name,
        tags={
            PIPELINE_KEY: key,
            "git_commit": commit,
            "mlflow.source.git.commit": commit,
            "DVC_EXP_NAME": os.environ.get("DVC_EXP_NAME", ""),
            "task": config.task,
            "backbone": config.backbone,
            "data_origin": config.sources.origin,
            "mlflow.note.content": "One pipeline execution (`dvc repro` / `dvc exp run`); "
            "its stages are the child runs. Headline test metrics are logged here by `evaluate`.",
        },
    )
    params = [mlflow.entities.Param(key_, value) for key_, value in flat_params(config).items()]
    for start in range(0, len(params), 100):
        client.log_batch(run.info.run_id, params=params[start : start + 100])
    client.set_terminated(run.info.run_id)
    winners = client.search_runs([experiment_id], filter_string=query, order_by=["attributes.start_time ASC"])
    if winners and winners[0].info.run_id != run.info.run_id:
        client.delete_run(run.info.run_id)
        return winners[0].info.run_id
    return run.info.run_id


def parent_run_id() -> str | None:
    """The run the active stage run is a child of."""
    run = mlflow.active_run()
    return run.data.tags.get("mlflow.parentRunId") if run else None


def log_headline_metrics(headline: dict[str, dict]) -> None:
    """``test.<model>.<statistic>`` for every model's headline statistics, on the parent run of the
    active stage run, so the runs table compares pipeline executions at a glance."""
    parent = parent_run_id()
    if parent is None:
        return
    timestamp = int(pd.Timestamp.now().timestamp() * 1000)
    MlflowClient().log_batch(
        parent,
        metrics=[
            mlflow.entities.Metric(f"test.{model}.{statistic}", float(value), timestamp, 0)
            for model, values in headline.items()
            for statistic, value in values.items()
            if value is not None
        ],
    )


@contextmanager
def stage_run(config: Config, stage: str, split_file: Path, backbone: str) -> Iterator[mlflow.ActiveRun]:
    """An MLflow run for one stage execution, with params, tags and dataset inputs, a child of the
    pipeline's parent run; FAILED if the stage raises, KILLED if a signal stops it
    (:class:`StageInterrupted`). The run records every parameter, not only those the stage declares,
    and which process runs it; runs of the same stage left RUNNING by a process that is gone
    (SIGKILL) are ended as KILLED first."""
    config = unrestricted(config)
    require_tracking_store()
    mlflow.set_tracking_uri(tracking_uri())
    tags = run_tags(config, stage, split_file, backbone)
    outer = os.environ.pop("MLFLOW_RUN_ID", None)
    try:
        if outer:
            experiment_id = MlflowClient().get_run(outer).info.experiment_id
            tags["mlflow.parentRunId"] = outer
        else:
            experiment_id = _experiment_id(experiment_name(config.task))
            tags["mlflow.parentRunId"] = pipeline_run(experiment_id, config, tags["git_commit"])
        description = SYNTHETIC_NOTE if config.sources.origin == "synthetic" else None
        close_orphaned_runs(experiment_id, stage)
        with mlflow.start_run(
            experiment_id=experiment_id, run_name=stage, tags=tags | process_tags(), description=description
        ) as run:
            mlflow.log_params(flat_params(config))
            log_split_inputs(split_file, tags["split_md5"])
            try:
                yield run
            except (StageInterrupted, KeyboardInterrupt):
                mlflow.end_run(RunStatus.to_string(RunStatus.KILLED))
                raise
    finally:
        if outer:
            os.environ["MLFLOW_RUN_ID"] = outer


def process_tags() -> dict[str, str]:
    """Which process runs the stage (``host``, ``pid``): lets a later run tell a run whose process is
    gone (killed with SIGKILL, or its machine stopped) from one still running."""
    return {"host": socket.gethostname(), "pid": str(os.getpid())}


def close_orphaned_runs(experiment_id: str, stage: str) -> list[str]:
    """End as KILLED the RUNNING runs of ``stage`` on this host whose process no longer exists (a stage
    killed with SIGKILL cannot end its own run); return their ids."""
    client, closed = MlflowClient(), []
    host = socket.gethostname()
    running = client.search_runs(
        [experiment_id],
        filter_string=f"attributes.status = 'RUNNING' and tags.stage = '{stage}' and tags.host = '{host}'",
    )
    for run in running:
        pid = run.data.tags.get("pid", "")
        if pid.isdigit() and not process_exists(int(pid)):
            client.set_tag(run.info.run_id, "killed", f"process {pid} was gone when the next {stage} run started")
            client.set_terminated(run.info.run_id, RunStatus.to_string(RunStatus.KILLED))
            closed.append(run.info.run_id)
    return closed


def find_model_run(task: str, model_file: Path) -> str | None:
    """The id of the run that produced ``model_file`` (by its ``model_md5`` tag), if any."""
    mlflow.set_tracking_uri(tracking_uri())
    experiment = mlflow.get_experiment_by_name(experiment_name(task))
    if experiment is None:
        return None
    runs = MlflowClient().search_runs(
        [experiment.experiment_id],
        filter_string=f"tags.model_md5 = '{file_md5(model_file)}'",
        order_by=["attributes.start_time DESC"],
        max_results=1,
    )
    return runs[0].info.run_id if runs else None


def log_evaluation(run_id: str, metrics: dict[str, float | None], folder: Path, confusion: pd.DataFrame) -> None:
    """Test metrics, reports, figures and predictions of one model, added to its training run."""
    client = MlflowClient()
    timestamp = int(pd.Timestamp.now().timestamp() * 1000)
    client.log_batch(
        run_id,
        metrics=[
            mlflow.entities.Metric(key, value, timestamp, 0) for key, value in metrics.items() if value is not None
        ],
    )
    client.log_artifacts(run_id, str(folder), "evaluation")
    client.log_table(run_id, confusion, "evaluation/confusion_table.json")


# The alias of the release candidate: the cxr-<task> version that `evaluate` last evaluated.
CHAMPION = "champion"


def describe_version(
    name: str, run_id: str, *, tags: dict[str, str], description: str | None = None, alias: str | None = None
) -> str | None:
    """Tag the version of registered model ``name`` that run ``run_id`` logged (its latest, if it
    logged several), optionally describe it and point ``alias`` at it; return its version number,
    or None when the run registered no version of ``name``."""
    client = MlflowClient()
    versions = client.search_model_versions(f"name = '{name}' and run_id = '{run_id}'")
    if not versions:
        return None
    version = max(versions, key=lambda found: int(found.version)).version
    for key, value in tags.items():
        registry_write(client.set_model_version_tag, name, version, key, value)
    if description is not None:
        registry_write(client.update_model_version, name, version, description=description)
    if alias is not None:
        registry_write(client.set_registered_model_alias, name, alias, version)
    return version


def registry_write(call, *args, attempts: int = 5, **kwargs):
    """``call(*args, **kwargs)``, retried when the tracking server refuses it. MLflow's SQL store writes
    an alias or tag as select-then-insert: two experiments evaluated at once (``dvc exp run -j 2``)
    on a PostgreSQL-backed server can both insert, and the second fails on the unique key though a
    moment later it would succeed."""
    for attempt in range(attempts):
        try:
            return call(*args, **kwargs)
        except MlflowException as exc:
            if attempt == attempts - 1:
                raise TrackingError(
                    f"the MLflow registry refused {call.__name__}{args[:3]} {attempts} times: {one_line(exc.message)}"
                ) from None
            time.sleep(0.5 * 2**attempt)
