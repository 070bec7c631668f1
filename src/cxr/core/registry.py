"""The MLflow model registry's conventions: registered names, the release alias, finding the run
of a saved model, and describing a version.

- ``cxr-<task>`` holds a version per trained and fine-tuned model, tagged ``model=<name>``.
  ``@candidate`` is the version the selection rule ranks first on the validation split,
  ``@champion`` the first-ranked that passed the release gate (none may: then there is no
  ``@champion``); ``evaluate`` sets both (:mod:`cxr.report.release`).
- A saved model's run is the one tagged with its ``model.keras`` md5 (set when it was trained).
- Every registry write is retried (:func:`cxr.core.tracking.retry_write`): MLflow's SQL store races under
  parallel experiments on a shared server.
"""

from __future__ import annotations

from pathlib import Path

import mlflow
from mlflow.tracking import MlflowClient

from cxr.core.tracking import experiment_name, file_md5, retry_write, tracking_uri


def model_name(task: str) -> str:
    """The registered model of a task: ``cxr-<task>``.

    Parameters
    ----------
    task : str
        The task (``config.task``).

    Returns
    -------
    str
        ``cxr-<task>``.
    """
    return f"cxr-{task}"


def find_model_run(task: str, model_file: Path) -> str | None:
    """The id of the latest FINISHED run that produced ``model_file`` (by its ``model_md5`` tag), if any.

    The task's experiment (``cxr-<task>``) is searched first, then every other one: under
    ``mlflow run --experiment-name <name>`` the stage runs live in that experiment. A run still
    RUNNING (another ``dvc exp run -j`` worker training the same bytes), KILLED or FAILED is not one.

    Parameters
    ----------
    task : str
        The task (``config.task``).
    model_file : Path
        The model file whose md5 the run is tagged with.

    Returns
    -------
    str or None
        The run id, or None when no finished run is tagged with that md5.
    """
    mlflow.set_tracking_uri(tracking_uri())
    client = MlflowClient()
    experiment = mlflow.get_experiment_by_name(experiment_name(task))
    first = [experiment.experiment_id] if experiment is not None else []
    others = [found.experiment_id for found in client.search_experiments() if found.experiment_id not in first]
    for group in (first, others):
        runs = (
            client.search_runs(
                group,
                filter_string=f"tags.{MODEL_MD5_TAG} = '{file_md5(model_file)}' and attributes.status = 'FINISHED'",
                order_by=["attributes.start_time DESC"],
                max_results=1,
            )
            if group
            else []
        )
        if runs:
            return runs[0].info.run_id
    return None


# The tag that ties a training run, and a registered version, to the bytes of its model file.
MODEL_MD5_TAG = "model_md5"
# The tag naming the pipeline model (backbone or "finetuned") a version holds.
MODEL_TAG = "model"
# The tag holding a version's release gate result: "passed", or "failed: <criteria in words>".
RELEASE_GATE_TAG = "release_gate"

# The version the release gate let through, first by the selection rule: what is used by default.
CHAMPION = "champion"
# The version first by the selection rule, whether or not it passed the gate.
CANDIDATE = "candidate"


def describe_version(
    name: str, run_id: str, *, tags: dict[str, str], description: str | None = None, alias: str | None = None
) -> str | None:
    """Tag, describe and alias the registered model version a run logged.

    The version of registered model ``name`` that run ``run_id`` logged (its latest, if it logged
    several; else the latest registered with the md5 of the run's model file) gets ``tags``,
    optionally ``description``, and ``alias`` pointed at it.

    Parameters
    ----------
    name : str
        The registered model (``cxr-<task>``).
    run_id : str
        The MLflow run that trained the model.
    tags : dict of str to str
        Tags to set on the version.
    description : str or None, optional
        The version's description; None leaves it as it is.
    alias : str or None, optional
        An alias to point at the version; None sets none.

    Returns
    -------
    str or None
        The version number, or None when there is no such version.

    Raises
    ------
    TrackingError
        When the model registry refuses a write (:func:`cxr.core.tracking.retry_write`).
    """
    client = MlflowClient()
    versions = client.search_model_versions(f"name = '{name}' and run_id = '{run_id}'")
    if not versions:
        # A retrained model with the same bytes (dvc repro -f of a training stage) is not registered
        # again; its version is the one registered with that model file's md5.
        md5 = client.get_run(run_id).data.tags.get(MODEL_MD5_TAG)
        versions = client.search_model_versions(f"name = '{name}' and tags.{MODEL_MD5_TAG} = '{md5}'") if md5 else []
    if not versions:
        return None
    version = max(versions, key=lambda found: int(found.version)).version
    for key, value in tags.items():
        retry_write(client.set_model_version_tag, name, version, key, value)
    if description is not None:
        retry_write(client.update_model_version, name, version, description=description)
    if alias is not None:
        retry_write(client.set_registered_model_alias, name, alias, version)
    return version


def latest_version_of(name: str, model_md5: str) -> str | None:
    """The latest version of registered model ``name`` registered with a model file of this md5, or None."""
    versions = MlflowClient().search_model_versions(f"name = '{name}' and tags.{MODEL_MD5_TAG} = '{model_md5}'")
    return max(versions, key=lambda found: int(found.version)).version if versions else None


def carry_over(name: str, previous: str, version: str) -> None:
    """Give ``version`` of ``name`` the tags, description and aliases of ``previous`` (the same model
    file registered again): an alias such as ``@champion`` moves to the new version."""
    client = MlflowClient()
    old = client.get_model_version(name, previous)
    for key, value in old.tags.items():
        retry_write(client.set_model_version_tag, name, version, key, value)
    if old.description:
        retry_write(client.update_model_version, name, version, description=old.description)
    for alias in old.aliases:
        retry_write(client.set_registered_model_alias, name, alias, version)
