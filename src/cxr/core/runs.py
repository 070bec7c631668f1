"""The runs of one pipeline execution: its parent run, one child run per stage execution, the
headline metrics on the parent, and runs left RUNNING by a killed process closed as KILLED.

Naming, nesting and tags follow :mod:`cxr.core.tracking`'s conventions.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import mlflow
import mlflow.data
import pandas as pd
from mlflow.entities import RunStatus
from mlflow.tracking import MlflowClient

from cxr.core import backbones
from cxr.core.config import Config, unrestricted
from cxr.core.declared import DeclaredParams
from cxr.core.errors import StageInterrupted
from cxr.core.outputs import process_exists
from cxr.core.tracking import (
    SYNTHETIC_NOTE,
    experiment_id_of,
    experiment_name,
    file_md5,
    flat_params,
    log_split_inputs,
    repo_root,
    require_tracking_store,
    run_tags,
    tracking_uri,
)

PIPELINE_KEY = "cxr.pipeline"
# Stages whose runs record MLflow system metrics (CPU, memory, disk, network; GPU where pynvml sees one).
TRAINING_STAGES = ("train@", "finetune")


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
    """Log every model's headline test statistics on the pipeline's parent run.

    The metrics are named ``test.<model>.<statistic>``, on the parent run of the active stage run, so
    the runs table compares pipeline executions at a glance. None values are left out; without a
    parent run nothing is logged.

    Parameters
    ----------
    headline : dict of str to dict
        ``{model: {statistic: value}}`` (e.g. :func:`cxr.report.evaluation.lead_metrics`).
    """
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
    """An MLflow run for one stage execution, a child of the pipeline's parent run.

    The run has params (:func:`stage_params`: under DVC those the stage declares, with its own
    values), tags and dataset inputs; it ends FAILED if the stage raises, KILLED if a signal stops it
    (:class:`StageInterrupted`). A training stage's run records MLflow's system metrics (psutil:
    CPU, memory, disk, network; GPU with pynvml). It records which process runs it; runs of the same
    stage left RUNNING by a process that is gone (SIGKILL) are ended as KILLED first. The pipeline's
    parent run holds every parameter.

    Parameters
    ----------
    config : Config or DeclaredParams
        The configuration, or under DVC the stage's view of it (:func:`cxr.core.config.load`).
    stage : str
        The stage's name, the run's name (e.g. ``train@resnet50``).
    split_file : Path
        The split table, logged as the run's dataset inputs.
    backbone : str
        The backbone the stage trains or uses, as a tag.

    Yields
    ------
    mlflow.ActiveRun
        The active run.

    Raises
    ------
    TrackingError
        When the tracking store cannot take runs (:func:`cxr.core.tracking.require_tracking_store`).
    """
    params = stage_params(config, stage)
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
            experiment_id = experiment_id_of(experiment_name(config.task))
            tags["mlflow.parentRunId"] = pipeline_run(experiment_id, config, tags["git_commit"])
        description = SYNTHETIC_NOTE if config.sources.origin == "synthetic" else None
        close_orphaned_runs(experiment_id, stage)
        with mlflow.start_run(
            experiment_id=experiment_id,
            run_name=stage,
            tags=tags | process_tags(),
            description=description,
            log_system_metrics=stage.startswith(TRAINING_STAGES),
        ) as run:
            mlflow.log_params(params)
            log_split_inputs(split_file, tags["split_md5"])
            try:
                yield run
            except (StageInterrupted, KeyboardInterrupt):
                mlflow.end_run(RunStatus.to_string(RunStatus.KILLED))
                raise
    finally:
        if outer:
            os.environ["MLFLOW_RUN_ID"] = outer


def stage_params(config: Config | DeclaredParams, stage: str) -> dict[str, str]:
    """The params a stage run logs: what the stage depends on, with the stage's own values.

    Under DVC (``config`` is the stage's :class:`~cxr.core.declared.DeclaredParams` view) only the
    keys its dvc.yaml entry declares, so MLflow's run comparison shows what differs between two
    stage runs. A stage of a ``foreach`` over the backbones (``train@vgg16``, ``register@vgg16``,
    ``audit@vgg16``) logs its own backbone as ``backbone`` and its input side as ``image_size_px``
    (``train.image_size``, or the backbone's native size for ``native``), where the params hold the
    fine-tuned model's base and the setting. Outside DVC (a stage run by hand) every parameter.

    Parameters
    ----------
    config : Config or DeclaredParams
        The configuration, or a stage's view of it.
    stage : str
        The stage's name (``train@vgg16``, ``finetune``...).

    Returns
    -------
    dict of str to str
        ``section.key`` -> value, names as :func:`cxr.core.tracking.flat_params` writes them.
    """
    full = unrestricted(config)
    params = flat_params(full)
    if isinstance(config, DeclaredParams):
        declared = config._declared
        params = {
            key: value
            for key, value in params.items()
            if any(key == name or key.startswith(f"{name}.") for name in declared)
        }
    item = stage.partition("@")[2]
    if item in backbones.BACKBONES:
        params["backbone"] = item
        params["image_size_px"] = str(backbones.get(item).input_size(full.train.image_size))
    return params


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
