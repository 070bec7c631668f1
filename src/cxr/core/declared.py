"""The DVC-declared view of the params: a stage reads only the keys its dvc.yaml entry declares.

Under DVC, a parameter a stage reads without declaring it is a parameter whose change DVC would
not rerun the stage for; :class:`DeclaredParams` makes that read an error naming key and stage.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from cxr.core.checks import ConfigError, join_key


def declared_params(pipeline: Path, stage: str) -> list[str]:
    """The params.yaml keys that dvc.yaml declares for ``stage`` (``name`` or ``name@item``), with
    ``${item}`` and ``${<params key>}`` filled in as DVC's templating fills them (the params file
    beside dvc.yaml)."""
    name, _, item = stage.partition("@")
    stages = (yaml.safe_load(pipeline.read_text()) or {}).get("stages", {})
    if name not in stages:
        raise ConfigError(f"{pipeline}: no stage {name!r} (DVC_STAGE={stage})")
    definition = stages[name].get("do", stages[name])
    keys = [key for entry in definition.get("params", []) for key in ([entry] if isinstance(entry, str) else [])]
    params = None

    def value(match: re.Match) -> str:
        nonlocal params
        if match[1] == "item":
            return item
        if params is None:
            params = yaml.safe_load(pipeline.with_name("params.yaml").read_text()) or {}
        found = params
        for part in match[1].split("."):
            if not isinstance(found, dict) or part not in found:
                raise ConfigError(f"{pipeline}: stage {name}: ${{{match[1]}}} names no params.yaml key")
            found = found[part]
        return str(found)

    return [re.sub(r"\$\{([\w.]+)\}", value, key) for key in keys]


class DeclaredParams:
    """A :class:`Config` (or one of its sections) that only yields the parameters its stage declares.

    Reading an undeclared one raises :class:`ConfigError` naming the key and the stage. Methods
    and properties run against the view, so what they read is checked too.
    """

    def __init__(self, value: Any, declared: frozenset[str], stage: str, prefix: str = ""):
        self._value, self._declared, self._stage, self._prefix = value, declared, stage, prefix

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(type(self._value), name, None)
        if isinstance(attribute, property):
            return attribute.fget(self)
        if callable(attribute):
            return attribute.__get__(self)
        return self._child(join_key(self._prefix, name), getattr(self._value, name))

    def _child(self, key: str, value: Any) -> Any:
        """``value`` at ``key``: itself when declared, a view when only keys below it are, else an error."""
        if any(key == declared or key.startswith(f"{declared}.") for declared in self._declared):
            return value
        if any(declared.startswith(f"{key}.") for declared in self._declared):
            return DeclaredParams(value, self._declared, self._stage, key)
        raise ConfigError(
            f"stage {self._stage} reads params.yaml key {key!r}, which dvc.yaml does not declare in "
            "its params: add it there, so that DVC reruns the stage when it changes"
        )
