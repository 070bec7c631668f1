"""dvc.yaml's deps are the import graph: a stage depends on every cxr module its script imports,
directly or through other modules, so changing any of them makes DVC rerun the stage."""

import ast
from functools import partial
from pathlib import Path

import yaml
from conftest import REPO


def imported_modules(path: Path) -> set[str]:
    """The ``cxr`` modules a file imports anywhere in it (top level or inside functions)."""
    modules = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            modules |= {alias.name for alias in node.names if alias.name.split(".")[0] == "cxr"}
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "cxr":
            modules.add(node.module)
            modules |= {f"{node.module}.{alias.name}" for alias in node.names}
    return modules


def module_file(module: str) -> Path | None:
    """The source file of a cxr module (a package's ``__init__.py``); None for a name that is not one."""
    base = REPO / "src" / Path(*module.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def closure(script: Path) -> set[Path]:
    """Every cxr source file ``script`` needs, following imports transitively."""
    seen: set[Path] = set()
    pending = [script]
    while pending:
        for module in imported_modules(pending.pop()):
            parts = module.split(".")
            for depth in range(1, len(parts) + 1):  # every package's __init__ runs first, cxr's too
                found = module_file(".".join(parts[:depth]))
                if found and found not in seen:
                    seen.add(found)
                    pending.append(found)
    return seen


def stage_definitions() -> dict[str, dict]:
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    return {name: stage.get("do", stage) for name, stage in stages.items()}


def test_every_stage_depends_on_every_module_it_imports():
    missing = {}
    for name, stage in stage_definitions().items():
        script = REPO / stage["cmd"].split()[1]
        deps = [REPO / dep for dep in stage["deps"]]
        needed = closure(script)
        uncovered = sorted(
            path.relative_to(REPO).as_posix()
            for path in needed
            if not any(path == dep or dep in path.parents for dep in deps)
        )
        if uncovered:
            missing[name] = uncovered
    assert not missing, f"dvc.yaml deps miss modules their stage imports: {missing}"


def test_no_stage_depends_on_a_module_it_does_not_import():
    extra = {}
    for name, stage in stage_definitions().items():
        needed = closure(REPO / stage["cmd"].split()[1])
        unused = [
            dep
            for dep in stage["deps"]
            if dep.startswith("src/") and not any(path == REPO / dep or REPO / dep in path.parents for path in needed)
        ]
        if unused:
            extra[name] = unused
    assert not extra, f"dvc.yaml deps list modules their stage never imports: {extra}"


def declared_paths(entries: list) -> list[str]:
    """The paths of a stage's ``outs``, ``metrics`` or ``plots`` list (an entry may carry options)."""
    return [next(iter(entry)) if isinstance(entry, dict) else entry for entry in entries]


def resolved(text: str, params: dict, item: str | None) -> str:
    """``text`` with ``${item}`` and ``${<top-level param>}`` replaced, as DVC interpolates dvc.yaml."""
    text = text.replace("${item}", str(item))
    for key, value in params.items():
        text = text.replace("${" + key + "}", str(value))
    return text


def test_every_file_a_stage_is_given_to_read_is_a_dep():
    """Paths a stage's command names (``--split data/processed/split.csv``, ``--audit reports/...``) are
    files it opens: each is either one of its outputs or covered by a dep, so DVC reruns the stage when
    it changes. ``${...}`` is resolved with params.yaml as DVC resolves it."""
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    missing = {}
    for name, stage in stages.items():
        body = stage.get("do", stage)
        items = [None]
        if "foreach" in stage:
            items = params
            for part in stage["foreach"].strip("${}").split("."):
                items = items[part]
        for item in items:
            resolve = partial(resolved, params=params, item=item)
            words = resolve(body["cmd"]).split()
            given = [words[i + 1] for i, word in enumerate(words[:-1]) if word.startswith("--")]
            outputs = {
                resolve(path) for kind in ("outs", "metrics", "plots") for path in declared_paths(body.get(kind, []))
            }
            deps = [resolve(dep) for dep in body["deps"]]
            for path in given:
                writes = any(path == out or out.startswith(path.rstrip("/") + "/") for out in outputs)
                if writes or not ("/" in path or "." in path):  # an output, its folder, or no path
                    continue
                if not any(path == dep or path.startswith(dep.rstrip("/") + "/") for dep in deps):
                    missing.setdefault(f"{name}@{item}" if item else name, []).append(path)
    assert not missing, f"dvc.yaml: stages read paths their deps do not declare: {missing}"
