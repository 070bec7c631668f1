"""The package's layering (docs/ARCHITECTURE.md, "Layers"): a module imports only from its own
package and the packages below it, so a change to serving never reruns training."""

import ast
from pathlib import Path

import pytest
from conftest import REPO

PACKAGE = REPO / "src" / "cxr"
# Lowest first. The CLIs (`recipes`, `plots`) sit on top of everything; `cxr` itself (its version)
# below everything.
LAYERS = ["core", "data", "learn", "report", "serve"]
TOP = len(LAYERS)


def layer(module: str) -> int:
    """The rank of a dotted ``cxr.*`` module name."""
    parts = module.split(".")
    if parts == ["cxr"] or parts[:2] == ["cxr", "__init__"]:
        return -1
    return LAYERS.index(parts[1]) if len(parts) > 1 and parts[1] in LAYERS else TOP


def imported(path: Path, root: Path) -> list[tuple[int, str]]:
    """(line, module) of every ``cxr.*`` module ``path`` (under package ``root``) imports, relative
    imports resolved."""
    module = ".".join(path.relative_to(root.parent).with_suffix("").parts)
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(
                    package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else [])
                )
            found += [(node.lineno, f"{base}.{alias.name}") for alias in node.names]
    return [(line, name) for line, name in found if name.split(".")[0] == "cxr"]


def violations(root: Path) -> list[str]:
    out = []
    for path in sorted(root.rglob("*.py")):
        own = layer(".".join(path.relative_to(root.parent).with_suffix("").parts))
        for line, name in imported(path, root):
            if layer(name) > own:
                out.append(
                    f"{path.relative_to(root.parent)}:{line} imports {name} ({LAYERS[own]} may not import "
                    f"{LAYERS[layer(name)] if layer(name) < TOP else name})"
                )
    return out


def test_no_module_imports_a_layer_above_its_own():
    assert violations(PACKAGE) == []


def test_the_rule_finds_an_upward_import(tmp_path):
    (tmp_path / "cxr" / "learn").mkdir(parents=True)
    (tmp_path / "cxr" / "learn" / "fit.py").write_text("from cxr.serve import pyfunc\nfrom cxr.core import spec\n")
    (tmp_path / "cxr" / "learn" / "other.py").write_text("from ..report import figures\n")
    found = violations(tmp_path / "cxr")
    assert found == [
        "cxr/learn/fit.py:1 imports cxr.serve.pyfunc (learn may not import serve)",
        "cxr/learn/other.py:1 imports cxr.report.figures (learn may not import report)",
    ]


@pytest.mark.parametrize("name", LAYERS)
def test_every_layer_is_a_package(name):
    assert (PACKAGE / name / "__init__.py").is_file()


# Issue 28: a module longer than this does more than one job; split it by job, as core/config was.
MAX_MODULE_LINES = 300


def test_no_module_is_longer_than_the_limit():
    lengths = {
        path.relative_to(PACKAGE).as_posix(): len(path.read_text().splitlines()) for path in PACKAGE.rglob("*.py")
    }
    assert {name: lines for name, lines in lengths.items() if lines > MAX_MODULE_LINES} == {}
    assert max(lengths.values()) > MAX_MODULE_LINES // 2, "the package was found and read"
