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

import ast
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
    """A matrix block that cannot make experiments (no rows, a row that is not a list of sources, no seeds)."""


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
    if not rows or any(not isinstance(row, list) or not row or len(set(row)) != len(row) for row in rows):
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
    """The matrix rows of the finished experiments named ``<recipe>-...`` on the baseline at ``HEAD``
    (``dvc exp show``'s; newest first wins).

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
        One line per experiment of the recipe left out: queued, running or failed; without the row
        file, or with one its own params did not write; a repeat of a row and seed already gathered.
    """
    import dvc.api

    rows, skipped, seen = [], [], set()
    for entry in dvc.api.exp_show(repo=repo):
        name = entry.get("Experiment")
        if not name or not name.startswith(f"{recipe}-"):
            continue
        # Queued, running and failed experiments are listed at their stash commit, which holds the
        # baseline's outputs: only a finished one (no executor state left, or "Success") is read.
        if entry.get("State") not in (None, "Success"):
            skipped.append(f"{name}: {entry['State'].lower()}, not finished")
            continue
        try:
            row = json.loads(dvc.api.read(ROW_FILE, repo=repo, rev=entry["rev"]))
        except Exception as exc:  # a finished experiment that never ran the cross_source stage
            skipped.append(f"{name}: no {ROW_FILE} at {entry['rev']} ({type(exc).__name__})")
            continue
        if (row["seed"], row["trained_on"]) != (_param(entry, "seed"), sorted(_param(entry, "sources.use") or [])):
            skipped.append(f"{name}: its {ROW_FILE} is not its own (the stage did not run for its params)")
            continue
        key = (cross_source.row_label(row["trained_on"]), row["seed"])
        if key in seen:
            skipped.append(f"{name}: a repeat of {key[0]} seed {key[1]}, the newer experiment kept")
            continue
        seen.add(key)
        rows.append({**row, "experiment": name})
    return rows, skipped


def _param(entry: dict, key: str):
    """A param of a ``dvc.api.exp_show`` row (named ``key``, or ``params.yaml:key`` where names clash),
    as the value it reads as: DVC hands numbers back as floats and lists as their text."""
    value = entry.get(key, entry.get(f"params.yaml:{key}"))
    return ast.literal_eval(value) if isinstance(value, str) else value


def headings(positive: str) -> dict[str, str]:
    """Each statistic's heading in the markdown and the figure: sensitivity and specificity name
    ``positive``, the class they are of."""
    return {
        statistic: statistic if statistic == "accuracy" else f"{positive} {statistic}"
        for statistic in cross_source.STATISTICS
    }


def cell_text(line) -> str:
    """``mean ± SD (pooled [low, high])`` of one table line; ``-`` where nothing was measured."""
    if line.mean is None or pd.isna(line.mean):
        return "-"
    spread = f" ± {line.sd:.3f}" if line.sd is not None and not pd.isna(line.sd) else ""
    return f"{line.mean:.3f}{spread} ({line.pooled:.3f} [{line.low:.3f}, {line.high:.3f}])"


def markdown(frame: pd.DataFrame, recipe: str, skipped: list[str], positive: str) -> str:
    """The matrix as markdown: one table per statistic (sensitivity and specificity: ``positive``'s),
    rows the training sources, columns the test sets; the drops off the diagonal; one site against
    mixed sources; the experiments left out."""
    tests = [cross_source.IN_DISTRIBUTION, *sorted(set(frame["test"]) - {cross_source.IN_DISTRIBUTION})]
    seeds = sorted(set(frame["seeds"]))
    lines = [
        f"# Cross-source matrix: {recipe}",
        "",
        f"Rows: training sources; columns: the test split (`{cross_source.IN_DISTRIBUTION}`, the training "
        "sources' held-back patients) and each held-out source. Cells: mean ± SD over "
        f"{'/'.join(map(str, seeds))} seeds, then the pooled estimate (every seed's counts summed) and its "
        "Clopper-Pearson 95% interval, which counts each image once per seed and so understates the "
        "spread across data sets. `-`: not measured (no image of that class, or the source is trained on).",
    ]
    for statistic in cross_source.STATISTICS:
        chosen = frame[frame["statistic"] == statistic]
        lines += ["", f"## {headings(positive)[statistic]}", "", "| trained on | " + " | ".join(tests) + " |"]
        lines.append("|---" * (len(tests) + 1) + "|")
        for trained_on, group in chosen.groupby("trained_on"):
            by_test = {line.test: line for line in group.itertuples()}
            cells = [cell_text(by_test[test]) if test in by_test else "-" for test in tests]
            lines.append(f"| {trained_on} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "## Drop off the diagonal (in-distribution mean minus held-out mean)",
        "",
        "*apart*: the held-out pooled interval lies wholly below the test split's.",
        "",
    ]
    for statistic in cross_source.STATISTICS:
        for trained_on, found in cross_source.drops(frame, statistic).items():
            shown = ", ".join(
                f"{test} {entry['drop']:+.3f}{' (apart)' if entry['apart'] else ''}"
                for test, entry in found.items()
                if entry["drop"] is not None
            )
            lines.append(f"- {statistic}, {trained_on}: {shown or '-'}")
    lines += same_site_lines(frame)
    if skipped:
        lines += ["", "## Experiments left out", "", *(f"- {line}" for line in skipped)]
    return "\n".join(lines) + "\n"


def same_site_lines(frame: pd.DataFrame) -> list[str]:
    """Markdown lines setting each one-source row's in-distribution accuracy (the same-site baseline:
    the source cannot be the shortcut) against each several-source row's; none without both kinds."""
    inside = frame[frame["in_distribution"] & (frame["statistic"] == "accuracy")].set_index("trained_on")["mean"]
    single = [name for name in inside.index if "+" not in name and pd.notna(inside[name])]
    mixed = [name for name in inside.index if "+" in name and pd.notna(inside[name])]
    if not single or not mixed:
        return []
    lines = ["", "## One site against mixed sources (test split accuracy, same classes)", ""]
    for one in single:
        for several in mixed:
            lines.append(
                f"- {several} {inside[several]:.3f} against {one} alone {inside[one]:.3f}: "
                f"{inside[several] - inside[one]:+.3f} (what mixing sources adds, shortcut included)"
            )
    return lines


def write(frame: pd.DataFrame, recipe: str, skipped: list[str], folder: Path, positive: str) -> dict[str, Path]:
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
    positive : str
        The positive class, named in the figure's sensitivity and specificity panels.

    Returns
    -------
    dict
        ``csv``, ``md`` and ``png``: the paths written.
    """
    from cxr.core.outputs import write_csv, write_text

    folder.mkdir(parents=True, exist_ok=True)
    paths = {kind: folder / f"{recipe}.{kind}" for kind in ("csv", "md", "png")}
    write_csv(paths["csv"], frame)
    write_text(paths["md"], markdown(frame, recipe, skipped, positive))
    title = f"Cross-source matrix: {recipe} (mean ± SD over seeds; below, the pooled 95% interval)"
    figure = figures.cross_source_matrix(frame, headings(positive), title)
    figure.savefig(paths["png"], dpi=110, metadata={"Software": None})
    return paths


def metric_row(label: str) -> str:
    """A row label as MLflow allows it in a metric name: ``covid_chestxray+kermany`` ->
    ``covid_chestxray-kermany`` (MLflow refuses ``+``)."""
    return label.replace("+", "-")


def log_run(frame: pd.DataFrame, recipe: str, rows: list[dict], paths: dict[str, Path], task: str) -> str:
    """An MLflow run ``matrix:<recipe>`` holding the table, the figure and the per-cell means
    (``<row>.<test>.<statistic>_mean``, the row as :func:`metric_row` writes it), and made the parent
    of each gathered experiment's pipeline run (found by its ``cxr.pipeline`` tag, ``exp:<name>``) where the
    store has it.

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
                f"{metric_row(line.trained_on)}.{line.test}.{line.statistic}_mean": float(line.mean)
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
