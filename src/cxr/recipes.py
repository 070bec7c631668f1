"""The study's experiments as named recipes: each one ``dvc exp run`` with param overrides.

``recipes.yaml`` holds two layers: *settings* (the real study's, or the offline demo's) and
*recipes* (what each experiment of the study changes). ``cxr-recipe first_try`` runs the first
experiment with the study's settings; ``--settings demo`` swaps in the offline ones.
"""

from __future__ import annotations

import argparse
import json
import re
import shlex
import subprocess
import sys
from pathlib import Path

import yaml

from cxr.core.config import ConfigError, from_dict
from cxr.core.errors import CxrError
from cxr.data.sources import check_sources

RECIPES_FILE = Path("recipes.yaml")
# A recipe with this block is a cross-source matrix: one experiment per training sources and seed.
MATRIX = "matrix"


class RecipeError(CxrError):
    """An unknown recipe or settings name, or overrides that do not make valid params."""


def load_recipes(path: Path = RECIPES_FILE) -> dict:
    return yaml.safe_load(path.read_text())


def overrides(book: dict, recipe: str, settings: str, baseline: dict, extra: dict | None = None) -> dict:
    """The param overrides of ``recipe`` under ``settings``; later layers win.

    Layers: the settings, the recipe, the recipe's own block for these settings (``demo:`` under
    a recipe: what only the offline run needs, such as a larger generated collection), ``extra``.
    Every key any recipe or settings touches is set, to the committed ``baseline`` value when
    this recipe leaves it alone: ``dvc exp run`` starts from the workspace, which an earlier
    experiment may have changed, and a recipe must not inherit another recipe's changes.
    """
    for kind, name in (("recipes", recipe), ("settings", settings)):
        if name not in book[kind]:
            raise RecipeError(f"{RECIPES_FILE}: unknown {kind[:-1]} {name!r}; known: {sorted(book[kind])}")
    layers = [*book["settings"].values()]
    for entry in book["recipes"].values():
        layers += [_common(book, entry), *(entry.get(name, {}) for name in book["settings"])]
    committed = {key: lookup(baseline, key) for key in sorted({key for layer in layers for key in layer})}
    entry = book["recipes"][recipe]
    return {
        **committed,
        **book["settings"][settings],
        **_common(book, entry),
        **entry.get(settings, {}),
        **(extra or {}),
    }


def _common(book: dict, entry: dict) -> dict:
    """A recipe's overrides for every settings (its keys that name no settings and are not ``matrix``)."""
    return {key: value for key, value in entry.items() if key not in book["settings"] and key != MATRIX}


def lookup(params: dict, key: str):
    node = params
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            raise RecipeError(f"{RECIPES_FILE}: {key!r} is not a key of params.yaml")
        node = node[part]
    return node


def committed_params(params_file: Path) -> dict:
    """params.yaml as committed at HEAD (the baseline of ``dvc exp run``), else as on disk."""
    shown = subprocess.run(["git", "show", f"HEAD:{params_file.as_posix()}"], capture_output=True, text=True)
    return yaml.safe_load(shown.stdout if shown.returncode == 0 else params_file.read_text())


def apply(params: dict, changes: dict) -> dict:
    """``params`` (as read from params.yaml) with dotted-key ``changes`` set."""
    result = json.loads(json.dumps(params))
    for key, value in changes.items():
        node = result
        *parents, leaf = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return result


def hydra_literal(value) -> str:
    """``value`` as one literal of Hydra's override grammar, which ``dvc exp run -S`` parses: strings
    single-quoted (backslashes and quotes escaped), so ``?``, ``=``, ``,``, ``[``, quotes and spaces
    stay part of the value and never make a sweep or a syntax error; other values in JSON flow style
    (numbers, booleans, null, lists and mappings, whose strings JSON double-quotes)."""
    if isinstance(value, str):
        # Hydra keeps a backslash literally unless it comes before a quote: double those runs (before
        # an inner quote, which is then escaped, and before the closing quote) and nothing else.
        escaped = re.sub(r"(\\*)'", lambda match: match[1] * 2 + "\\'", value)
        escaped = re.sub(r"(\\+)$", lambda match: match[1] * 2, escaped)
        return f"'{escaped}'"
    return json.dumps(value)


def set_arguments(changes: dict) -> list[str]:
    """``-S key=value`` pairs as ``dvc exp run`` parses them, each value one Hydra literal."""
    arguments = []
    for key, value in changes.items():
        arguments += ["-S", f"{key}={hydra_literal(value)}"]
    return arguments


def command(
    recipe: str,
    settings: str,
    extra: dict | None = None,
    *,
    queue: bool = False,
    name: str | None = None,
    params_file: Path = Path("params.yaml"),
) -> list[str]:
    """The ``dvc exp run`` command line for a recipe, after checking the params it would make."""
    baseline = committed_params(params_file)
    changes = _checked(recipe, settings, baseline, overrides(load_recipes(), recipe, settings, baseline, extra))
    return _exp_run(changes, queue=queue, name=name)


def matrix_commands(
    recipe: str,
    settings: str,
    extra: dict | None = None,
    *,
    seeds: int | None = None,
    queue: bool = True,
    params_file: Path = Path("params.yaml"),
) -> list[list[str]]:
    """One ``dvc exp run`` command line per experiment of a matrix recipe (:func:`cxr.matrix.experiments`),
    each checked, running the pipeline up to the ``cross_source`` stage.

    Parameters
    ----------
    recipe : str
        A recipe of ``recipes.yaml`` with a ``matrix:`` block.
    settings : str
        ``study`` or ``demo``.
    extra : dict or None, optional
        More overrides (``--set``), applied to every experiment.
    seeds : int or None, optional
        Experiments per row; None: the block's ``seeds``.
    queue : bool, optional
        Queue the experiments (``--queue``) rather than run them one after another.
    params_file : Path, optional
        params.yaml.

    Returns
    -------
    list of list of str
        The command lines, row by row, seed by seed.

    Raises
    ------
    RecipeError
        When the recipe has no ``matrix:`` block or an experiment's params are invalid.
    """
    from cxr.matrix import STAGE, MatrixError, experiments

    book = load_recipes()
    block = book["recipes"].get(recipe, {}).get(MATRIX)
    if block is None:
        raise RecipeError(f"{RECIPES_FILE}: recipe {recipe!r} has no {MATRIX}: block")
    baseline = committed_params(params_file)
    changes = overrides(book, recipe, settings, baseline, extra)
    block = {**block, **({"seeds": seeds} if seeds is not None else {})}
    try:
        made = experiments(recipe, block, apply(baseline, changes))
    except MatrixError as exc:
        raise RecipeError(str(exc)) from None
    return [
        [*_exp_run(_checked(recipe, settings, baseline, changes | cell), queue=queue, name=name), STAGE]
        for name, cell in made
    ]


def _checked(recipe: str, settings: str, baseline: dict, changes: dict) -> dict:
    try:
        check_sources(from_dict(apply(baseline, changes)))
    except ConfigError as exc:
        raise RecipeError(f"recipe {recipe!r} with settings {settings!r} makes invalid params: {exc}") from None
    return changes


def _exp_run(changes: dict, *, queue: bool, name: str | None) -> list[str]:
    options = [*(["--queue"] if queue else []), *(["-n", name] if name else [])]
    return ["dvc", "exp", "run", *options, *set_arguments(changes)]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="cxr-recipe", description=__doc__.splitlines()[0])
    parser.add_argument("recipe", help="a recipe of recipes.yaml (study, first_try, cross_source, ...)")
    parser.add_argument("--settings", default="study", help="study (default) or demo (offline, synthetic)")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="one more override, e.g. --set train.epochs=2 (YAML value)",
    )
    parser.add_argument("--queue", action="store_true", help="queue the experiment(s) (dvc exp run --queue)")
    parser.add_argument("--name", help="experiment name (dvc exp run -n); not for a matrix recipe")
    parser.add_argument("--dry-run", action="store_true", help="print the dvc command(s) only")
    parser.add_argument("--seeds", type=int, help="a matrix recipe: experiments per row (default: its block's)")
    parser.add_argument(
        "--report",
        action="store_true",
        help="a matrix recipe: gather its finished experiments into reports/matrix/<recipe>.{md,csv,png} and MLflow",
    )
    arguments = parser.parse_args(argv)
    extra = {}
    for item in arguments.set:
        key, separator, value = item.partition("=")
        if not separator:
            parser.error(f"--set {item!r}: expected KEY=VALUE")
        extra[key] = yaml.safe_load(value)
    is_matrix = MATRIX in load_recipes()["recipes"].get(arguments.recipe, {})
    if is_matrix and arguments.name:
        parser.error("--name: a matrix recipe names its experiments <recipe>-<training sources>-seed<seed>")
    if not is_matrix and (arguments.seeds is not None or arguments.report):
        parser.error(f"--seeds and --report are for a recipe with a {MATRIX}: block; {arguments.recipe!r} has none")
    try:
        if arguments.report:
            raise SystemExit(_report(arguments.recipe, arguments.settings, extra))
        if is_matrix:
            lines = matrix_commands(
                arguments.recipe, arguments.settings, extra, seeds=arguments.seeds, queue=arguments.queue
            )
        else:
            lines = [command(arguments.recipe, arguments.settings, extra, queue=arguments.queue, name=arguments.name)]
    except CxrError as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    existing = _experiment_names() if is_matrix and not arguments.dry_run else set()
    for line in lines:
        if is_matrix and line[line.index("-n") + 1] in existing:
            print(f"{line[line.index('-n') + 1]}: already run, skipped (dvc exp remove it to run it again)")
            continue
        print(shlex.join(line), flush=True)
        code = 0 if arguments.dry_run else subprocess.call(line)
        if code:
            raise SystemExit(code)
    if is_matrix and not arguments.dry_run:
        then = "dvc queue start -j <workers>, then " if arguments.queue else ""
        print(f"{len(lines)} experiments; {then}cxr-recipe {arguments.recipe} --report")
    if not arguments.dry_run:
        raise SystemExit(0)


def _experiment_names() -> set[str]:
    """The experiments of ``HEAD`` (finished, queued or running), by name."""
    listed = subprocess.run(["dvc", "exp", "list", "--name-only"], capture_output=True, text=True, check=True)
    queued = subprocess.run(["dvc", "queue", "status"], capture_output=True, text=True, check=True)
    names = set(listed.stdout.split())
    names |= set(re.findall(r"^[0-9a-f]{7,}\s+(\S+)", queued.stdout, flags=re.MULTILINE))
    return names


def _report(recipe: str, settings: str, extra: dict) -> int:
    """Gather a matrix recipe's finished experiments; write and log the matrix; print it."""
    from cxr import matrix
    from cxr.report import cross_source

    book = load_recipes()
    if MATRIX not in book["recipes"].get(recipe, {}):
        raise RecipeError(f"{RECIPES_FILE}: recipe {recipe!r} has no {MATRIX}: block to report")
    baseline = committed_params(Path("params.yaml"))
    task = apply(baseline, overrides(book, recipe, settings, baseline, extra))["task"]
    rows, skipped = matrix.gather(recipe)
    try:
        frame = cross_source.table(rows)
    except ValueError as exc:
        raise RecipeError(f"recipe {recipe!r}: {exc}") from None
    paths = matrix.write(frame, recipe, skipped, matrix.REPORTS, rows[0]["positive_class"])
    run_id = matrix.log_run(frame, recipe, rows, paths, task)
    print(paths["md"].read_text())
    print(f"-> {paths['md']}, {paths['csv']}, {paths['png']}; MLflow run {run_id} (matrix:{recipe})")
    return 0
