"""The evaluation in MLflow: each model's test results in the run that trained it, its registered
version tagged, and the registry's ``@candidate`` and ``@champion`` aliases set by the selection."""

from __future__ import annotations

from pathlib import Path

import mlflow
import pandas as pd
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from cxr.core import registry, tracking
from cxr.core.config import Config
from cxr.core.spec import MODEL_FILE
from cxr.report import evaluation, operating_point
from cxr.report.comparison import ModelResult, selection
from cxr.report.metrics import shown


def log_to_training_runs(
    results: list[ModelResult], models: Path, reports: Path, config: Config, split_md5: str
) -> None:
    """Log each model's test results into the run that trained it, and set the registry's aliases.

    Each model's test metrics and reports (``reports/models/<name>``) go into the run that trained
    it, its registered version tagged with the lead statistics, calibration and operating point;
    then ``@candidate`` and ``@champion`` as :func:`cxr.report.comparison.selection` names them
    (no model passing the gate: ``@champion`` is removed). A model no run holds is named in a
    warning and skipped.

    Parameters
    ----------
    results : list of ModelResult
        Every model's test results.
    models : Path
        The folder of the model folders.
    reports : Path
        The folder of the evaluation reports.
    config : Config
        The configuration (``task``, ``release.select_by``).
    split_md5 : str
        The md5 of the split table, as a version tag.

    Raises
    ------
    TrackingError
        When the model registry refuses a write.
    """
    name = registry.model_name(config.task)
    versions = {}
    for result in results:
        run_id = registry.find_model_run(config.task, models / result.name / MODEL_FILE)
        if run_id is None:
            print(
                f"warning: no MLflow run is tagged with the md5 of {models / result.name / MODEL_FILE}; "
                "its test metrics are in reports/eval only"
            )
            continue
        matrix = result.report["confusion_matrix"]
        confusion = pd.DataFrame(matrix["matrix"], columns=matrix["labels"], index=matrix["labels"])
        log_evaluation(
            run_id,
            {f"test_{key}": evaluation.rounded(value) for key, value in result.metrics.items()},
            reports / "models" / result.name,
            confusion.reset_index(names="actual"),
        )
        versions[result.name] = registry.describe_version(
            name,
            run_id,
            tags={
                f"test.{statistic}": evaluation.interval_text(result.metrics, statistic)
                for statistic, _ in shown("tag", result.spec.classes)
            }
            | operating_point.tags(result.operating_point)
            | {"test.split_md5": split_md5},
        )
    set_aliases(name, versions, selection(results, config.release.select_by))


def set_aliases(name: str, versions: dict[str, str | None], chosen: dict) -> None:
    """Point ``@candidate`` and ``@champion`` of registered model ``name`` at the versions of the
    models ``chosen`` (:func:`cxr.report.comparison.selection`'s dict) names.

    An alias whose model is None (no champion) or has no version on this tracking server (trained
    elsewhere, restored from DVC's cache: a warning says so) is removed, so that no earlier version
    stays released. ``versions``: model name -> its version (None: none)."""
    client = MlflowClient()
    for alias in (registry.CANDIDATE, registry.CHAMPION):
        model = chosen[alias]
        version = versions.get(model) if model else None
        if version is not None:
            tracking.retry_write(client.set_registered_model_alias, name, alias, version)
            print(f"{name} version {version} ({model}) is @{alias}")
            continue
        if model is not None:
            print(
                f"warning: {model} is @{alias} by the selection rule but has no version of {name} on this tracking "
                "server (trained elsewhere); rerun its training and register stages to register it here"
            )
        try:
            client.get_model_version_by_alias(name, alias)
        except MlflowException:
            continue
        tracking.retry_write(client.delete_registered_model_alias, name, alias)
    if chosen["champion"] is None:
        print(f"{name}: no @champion, no model passed the release gate (reports/eval/comparison.md, 'Release')")


def log_evaluation(run_id: str, metrics: dict[str, float | None], folder: Path, confusion: pd.DataFrame) -> None:
    """Test metrics, reports, figures and predictions of one model, added to its training run (metrics
    as the caller gives them: ``log_to_training_runs`` rounds them to 3 decimals, as headline.json)."""
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
