"""Every dotted ``cxr.*`` name the README, docs/ and the package's own text give resolves to a
module or an attribute that exists, so documentation cannot point at code that moved."""

import importlib
import re

import pytest
from conftest import REPO

NAME = re.compile(r"(?<![\w/.-])cxr(?:\.[A-Za-z_]\w*)+")
# Dotted names that are not code: MLflow tag keys.
NOT_CODE = {"cxr.pipeline"}


def resolves(name: str) -> bool:
    parts = name.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            target = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        try:
            for attribute in parts[cut:]:
                target = getattr(target, attribute)
        except AttributeError:
            return False
        return True
    return False


def documented_names() -> dict[str, set[str]]:
    files = [REPO / "README.md", *(REPO / "docs").glob("*.md"), *(REPO / "src" / "cxr").rglob("*.py")]
    found: dict[str, set[str]] = {}
    for path in files:
        for name in NAME.findall(path.read_text()):
            found.setdefault(name.rstrip("."), set()).add(path.relative_to(REPO).as_posix())
    return found


def test_every_dotted_cxr_name_in_the_docs_resolves():
    names = documented_names()
    assert len(names) > 20
    missing = {
        name: sorted(where) for name, where in sorted(names.items()) if name not in NOT_CODE and not resolves(name)
    }
    assert not missing, f"names that resolve to nothing: {missing}"


@pytest.mark.parametrize(
    ("name", "exists"),
    [("cxr.serve.register.log_servable", True), ("cxr.core.tracking.log_model", False), ("cxr.serve.inputs", False)],
)
def test_the_check_tells_a_stale_name(name, exists):
    assert resolves(name) is exists
