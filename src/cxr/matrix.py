"""The cross-source matrix: one DVC experiment per training-source combination and seed, gathered into
one table (rows: training sources; columns: the in-distribution test split and each held-out source).

DeGrave, Janizek & Lee (Nature Machine Intelligence 3, 610-619, 2021) cross-test COVID-19 chest X-ray
models trained on one combination of sources against the sources left out, over 5 seeds: the score
that stays on the diagonal and drops off it is the source, not the disease. ``cxr-recipe cross_source``
queues the experiments (:func:`experiments`, from ``recipes.yaml``'s ``matrix:`` block); ``cxr-recipe
cross_source --report`` gathers the finished ones from DVC (:func:`gather`: ``dvc.api.exp_show`` and
each experiment's ``reports/eval/cross_source.json``) and writes the table, a figure and an MLflow run.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from cxr.core import figures
from cxr.core.errors import CxrError
from cxr.report import cross_source

ROW_FILE = "reports/eval/cross_source.json"
STAGE = "cross_source"
REPORTS = Path("reports/matrix")


class MatrixError(CxrError):
    """A matrix block that cannot make experiments, or no finished experiment to report."""


def experiments(recipe: str, matrix: dict, baseline: dict) -> list[tuple[str, dict]]:
    """(experiment name, param overrides) of every cell row and seed of a ``matrix:`` block.

    Parameters
    ----------
    recipe : str
        The recipe's name: each experiment is named ``<recipe>-<row label>-seed<seed>``.
    matrix : dict
        ``train`` (a list of source lists, the rows) and ``seeds`` (experiments per row).
    baseline : dict
        params.yaml as committed: its ``seed`` is the first seed, and its ``sources.external`` are
        held out of every row, with every source another row trains on.

    Returns
    -------
    list of (str, dict)
        Per row and seed, ``sources.use``, ``sources.external`` (every other source) and ``seed``.

    Raises
    ------
    MatrixError
        When ``train`` is empty or a row is empty or repeats a source, or ``seeds`` is below 1.
    """
    rows, seeds = matrix.get("train") or [], matrix.get("seeds", 5)
    if not rows or any(not row or len(set(row)) != len(row) for row in rows):
        raise MatrixError(f"recipe {recipe!r}: matrix.train must list non-empty lists of distinct sources, got {rows}")
    if not isinstance(seeds, int) or seeds < 1:
        raise MatrixError(f"recipe {recipe!r}: matrix.seeds must be a whole number >= 1, got {seeds!r}")
    every = sorted({source for row in rows for source in row} | set(baseline["sources"]["external"]))
    made = []
    for row in rows:
        for seed in range(baseline["seed"], baseline["seed"] + seeds):
            held_out = [source for source in every if source not in row]
            made.append(
                (
                    f"{recipe}-{cross_source.row_label(row)}-seed{seed}",
                    {"sources.use": list(row), "sources.external": held_out, "seed": seed},
                )
            )
    return made


def gather(recipe: str, repo: str | None = None) -> tuple[list[dict], list[str]]:
    """The matrix rows of the finished experiments named ``<recipe>-...`` (newest first wins).

    Parameters
    ----------
    recipe : str
        The recipe whose experiments to gather.
    repo : str or None, optional
        The DVC repository (default: the one around the working directory).

    Returns
    -------
    rows : list of dict
        Each experiment's ``reports/eval/cross_source.json`` with ``experiment`` (its name) added.
    skipped : list of str
        One line per experiment of the recipe left out (not finished, or a repeat of a cell row and
        seed already gathered).
    """
    import dvc.api

    rows, skipped, seen = [], [], set()
    for entry in dvc.api.exp_show(repo=repo):
        name = entry.get("Experiment")
        if not name or not name.startswith(f"{recipe}-"):
            continue
        try:
            row = json.loads(dvc.api.read(ROW_FILE, repo=repo, rev=entry["rev"]))
        except Exception as exc:  # queued, running or failed: no committed row file
            skipped.append(f"{name}: no {ROW_FILE} ({entry.get('State') or type(exc).__name__})")
            continue
        key = (cross_source.row_label(row["trained_on"]), row["seed"])
        if key in seen:
            skipped.append(f"{name}: a repeat of {key[0]} seed {key[1]}, the newer experiment kept")
            continue
        seen.add(key)
        rows.append({**row, "experiment": name})
    return rows, skipped


def write(frame: pd.DataFrame, recipe: str, skipped: list[str], folder: Path) -> dict[str, Path]:
    """The table (``<recipe>.csv``), its markdown (``.md``) and figure (``.png``) under ``folder``.

    Parameters
    ----------
    frame : pandas.DataFrame
        :func:`table`'s table.
    recipe : str
        The recipe's name.
    skipped : list of str
        :func:`gather`'s experiments left out, listed in the markdown.
    folder : Path
        Where to write (created).

    Returns
    -------
    dict
        ``csv``, ``md`` and ``png``: the paths written.
    """
    from cxr.core.outputs import write_csv, write_text

    folder.mkdir(parents=True, exist_ok=True)
    paths = {kind: folder / f"{recipe}.{kind}" for kind in ("csv", "md", "png")}
    write_csv(paths["csv"], frame)
    write_text(paths["md"], cross_source.markdown(frame, recipe, skipped))
    figure = figures.cross_source_matrix(frame, cross_source.STATISTICS, f"Cross-source matrix: {recipe}")
    figure.savefig(paths["png"], dpi=110, metadata={"Software": None})
    return paths


def log_run(frame: pd.DataFrame, recipe: str, rows: list[dict], paths: dict[str, Path], task: str) -> str:
    """An MLflow run ``matrix:<recipe>`` holding the table, figure and per-cell means, and made the parent
    of each gathered experiment's pipeline run (found by its ``DVC_EXP_NAME`` tag) where the store has it.

    Parameters
    ----------
    frame : pandas.DataFrame
        :func:`table`'s table.
    recipe : str
        The recipe's name.
    rows : list of dict
        :func:`gather`'s rows (their ``experiment`` names).
    paths : dict
        :func:`write`'s paths.
    task : str
        The task, whose MLflow experiment (``cxr-<task>``) holds the run.

    Returns
    -------
    str
        The run's id.
    """
    import mlflow
    from mlflow.tracking import MlflowClient

    from cxr.core import tracking

    mlflow.set_tracking_uri(tracking.tracking_uri())
    experiment_id = tracking.experiment_id_of(tracking.experiment_name(task))
    client = MlflowClient()
    with mlflow.start_run(experiment_id=experiment_id, run_name=f"matrix:{recipe}") as run:
        note = f"Cross-source matrix of recipe {recipe}: the experiments' pipeline runs are its children."
        mlflow.set_tag("mlflow.note.content", note)
        mlflow.log_params({"recipe": recipe, "experiments": len(rows), "rows": len(set(frame["trained_on"]))})
        mlflow.log_metrics(
            {
                f"{line.trained_on}.{line.test}.{line.statistic}_mean": float(line.mean)
                for line in frame.itertuples()
                if line.mean is not None and not pd.isna(line.mean)
            }
        )
        mlflow.log_table(frame, f"{recipe}.json")
        for path in paths.values():
            mlflow.log_artifact(str(path))
        for row in rows:
            for child in client.search_runs(
                [experiment_id], filter_string=f"tags.`cxr.pipeline` = 'exp:{row['experiment']}'"
            ):
                client.set_tag(child.info.run_id, "mlflow.parentRunId", run.info.run_id)
        return run.info.run_id
