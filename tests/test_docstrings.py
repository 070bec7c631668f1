"""Every public function or class in ``cxr`` that a DVC stage script or a CLI imports and calls
has a numpydoc docstring: a ``Parameters`` section when it takes parameters, a ``Returns`` (or, for
a generator, ``Yields``) section when its return annotation is not None.

The list is built from the scripts themselves (``stages/*.py`` and the three CLI modules) with
``ast``: every name imported ``from cxr...`` that is a function or class, and every attribute taken
of an imported ``cxr`` module (``catalog.build``, ``tracking.file_md5``...)."""

from __future__ import annotations

import ast
import importlib
import inspect
import re

import pytest
from conftest import REPO

SCRIPTS = [
    *sorted((REPO / "stages").glob("*.py")),
    REPO / "src" / "cxr" / "recipes.py",
    REPO / "src" / "cxr" / "plots.py",
    REPO / "src" / "cxr" / "serve" / "predict.py",
]
SECTION = re.compile(r"^(\w+)\n-{3,}$", re.MULTILINE)


def _attribute(module: str, name: str):
    target = importlib.import_module(module)
    return getattr(target, name) if hasattr(target, name) else importlib.import_module(f"{module}.{name}")


def called_names() -> dict[str, set[str]]:
    """``{"cxr.module.name": {script file names}}`` for every cxr function or class the scripts use."""
    found: dict[str, set[str]] = {}

    def keep(module: str, name: str, obj, script: str) -> None:
        if (inspect.isfunction(obj) or inspect.isclass(obj)) and not name.startswith("_"):
            found.setdefault(f"{module}.{name}", set()).add(script)

    for script in SCRIPTS:
        tree = ast.parse(script.read_text())
        modules: dict[str, str] = {}
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "cxr":
                for alias in node.names:
                    obj = _attribute(node.module, alias.name)
                    if inspect.ismodule(obj):
                        modules[alias.asname or alias.name] = obj.__name__
                    else:
                        keep(node.module, alias.name, obj, script.name)
            elif isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.name.split(".")[0] == "cxr" and alias.asname:
                        modules[alias.asname] = alias.name
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in modules:
                module = modules[node.value.id]
                obj = getattr(importlib.import_module(module), node.attr, None)
                keep(module, node.attr, obj, script.name)
    return found


NAMES = sorted(called_names())


def resolve(name: str):
    module, _, attribute = name.rpartition(".")
    return getattr(importlib.import_module(module), attribute)


def sections(doc: str) -> set[str]:
    """The numpydoc section titles of a docstring (a title line underlined with dashes)."""
    return set(SECTION.findall(inspect.cleandoc(doc)))


def parameters(obj) -> list[str]:
    try:
        signature = inspect.signature(obj)
    except ValueError:  # an exception class: BaseException's C constructor
        return []
    return [name for name in signature.parameters if name not in ("self", "cls")]


def returns_something(obj) -> bool:
    if inspect.isclass(obj):
        return False
    annotation = inspect.signature(obj).return_annotation
    return annotation not in (inspect.Signature.empty, None, "None")


def missing_sections(obj) -> list[str]:
    doc = obj.__doc__
    if not doc or not doc.strip():
        return ["docstring"]
    found, missing = sections(doc), []
    if parameters(obj) and "Parameters" not in found:
        missing.append("Parameters")
    if returns_something(obj) and not found & {"Returns", "Yields"}:
        missing.append("Returns")
    return missing


def test_the_scripts_call_many_cxr_names():
    assert len(NAMES) > 50
    assert {"cxr.data.catalog.build", "cxr.core.stage.arguments", "cxr.serve.register.assess"} <= set(NAMES)


@pytest.mark.parametrize("name", NAMES)
def test_called_function_has_a_numpydoc_docstring(name):
    missing = missing_sections(resolve(name))
    assert not missing, f"{name}: docstring lacks {', '.join(missing)}"


def test_the_check_tells_a_missing_section():
    def documented(path: str) -> int:
        """Count.

        Parameters
        ----------
        path : str
            A path.

        Returns
        -------
        int
            Its length.
        """
        return len(path)

    def undocumented(path: str) -> int:
        """Count.

        Parameters
        ----------
        path : str
            A path.
        """
        return len(path)

    assert missing_sections(documented) == []
    assert missing_sections(undocumented) == ["Returns"]
