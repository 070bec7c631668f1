"""Typed view of params.yaml, validated once: the whole configuration, and loading.

The sections are :mod:`cxr.core.sections`, the machinery that builds them (types, ranges)
:mod:`cxr.core.checks`, the checks across keys :mod:`cxr.core.semantics`, the DVC-declared view
:mod:`cxr.core.declared`.

Every stage reads its parameters through :func:`load`, so a typo in params.yaml (or in a
``dvc exp run -S`` override) fails fast with the key's full path and what it accepts. There
are no defaults here: a key missing from params.yaml is an error naming it, never a silent
value (the study's own settings are in recipes.yaml).
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml

from cxr.core.checks import PARAMS_FILE, ConfigError, build
from cxr.core.declared import DeclaredParams, declared_params
from cxr.core.sections import (
    Audit,
    Download,
    Duplicates,
    Evaluate,
    Filter,
    Finetune,
    Release,
    Sources,
    Split,
    Synthetic,
    Train,
)
from cxr.core.semantics import check_semantics


@dataclass(frozen=True)
class Config:
    seed: int
    task: str
    # The class the audit and the model card report recall for (the study's question): a class of the task.
    positive_class: str
    sources: Sources
    synthetic: Synthetic
    download: Download
    # A finding mapped to null is left out of every task (an unlabelled `todo`, a pneumonia of no stated type).
    labels: dict[str, str | None]
    duplicates: Duplicates
    classes: dict[str, dict[str, list[str] | Literal["*"]]]
    filter: Filter
    split: Split
    backbones: list[str]
    backbone: str
    train: Train
    finetune: Finetune
    evaluate: Evaluate
    audit: Audit
    release: Release

    def task_classes(self) -> dict[str, list[str]]:
        """Class -> labels for the configured task, with ``"*"`` expanded to the unclaimed labels."""
        groups = self.classes[self.task]
        claimed = {label for labels in groups.values() if labels != "*" for label in labels}
        known = set(self.label_names())
        return {name: sorted(known - claimed) if labels == "*" else list(labels) for name, labels in groups.items()}

    def label_names(self) -> list[str]:
        """The labels findings map to (null, "left out", is none)."""
        return sorted({label for label in self.labels.values() if label is not None})

    def class_names(self) -> list[str]:
        return sorted(self.task_classes())


def load(path: str | Path = PARAMS_FILE) -> Config:
    """Read and validate params.yaml; raise :class:`ConfigError` naming the bad key.

    Under DVC (``DVC_STAGE`` set, dvc.yaml next to params.yaml) the stage gets a view that
    refuses, naming it, any parameter its dvc.yaml entry does not declare: a stage never
    depends on a parameter DVC does not know it depends on.

    Parameters
    ----------
    path : str or Path, optional
        The parameter file (default: ``params.yaml``).

    Returns
    -------
    Config or DeclaredParams
        The configuration, or under DVC its view restricted to the stage's declared parameters.

    Raises
    ------
    ConfigError
        When the file is missing, is not valid YAML, or a parameter is unknown, missing, of the wrong
        type or inconsistent (:func:`from_dict`).
    """
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except FileNotFoundError:
        raise ConfigError(f"{path}: parameter file not found") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    config = from_dict(raw, source=str(path))
    stage, pipeline = os.environ.get("DVC_STAGE"), path.with_name("dvc.yaml")
    if stage and pipeline.is_file():
        return DeclaredParams(config, frozenset(declared_params(pipeline, stage)), stage)
    return config


def unrestricted(config: Config | DeclaredParams) -> Config:
    """Every parameter, for records that log the whole configuration (MLflow params and tags).

    Parameters
    ----------
    config : Config or DeclaredParams
        A configuration or a stage's restricted view of it.

    Returns
    -------
    Config
        The full configuration behind the view (``config`` itself when it is not a view).
    """
    return config._value if isinstance(config, DeclaredParams) else config


def as_dict(config: Config | DeclaredParams) -> dict[str, Any]:
    """Every parameter as plain data, keyed as params.yaml is (e.g. for a checkpoint's fingerprint).

    Parameters
    ----------
    config : Config or DeclaredParams
        The configuration; a stage's restricted view is unwrapped first (:func:`unrestricted`).

    Returns
    -------
    dict of str to Any
        Nested dicts and lists of every parameter; the source sections sit directly under ``sources``,
        as in params.yaml.
    """
    raw = dataclasses.asdict(unrestricted(config))
    raw["sources"] |= raw["sources"].pop("sections")
    return raw


def source_params(config: Config | DeclaredParams, name: str, kind: type) -> Any:
    """Section ``sources.<name>`` as the ``kind`` dataclass its source module defines, checked like the rest.

    Under DVC the result is restricted, as :func:`load`'s view is, to what the stage declares.
    """
    sections = unrestricted(config).sources.sections
    if name not in sections:
        raise ConfigError(f"{PARAMS_FILE}: missing key 'sources.{name}'; every source needs its section")
    built = build(kind, sections[name], f"sources.{name}", PARAMS_FILE)
    return config._child(f"sources.{name}", built) if isinstance(config, DeclaredParams) else built


def from_dict(raw: dict[str, Any], source: str = PARAMS_FILE) -> Config:
    """Build and check a configuration from parsed params.yaml data.

    Every key is checked against the configuration's types, then the parameters are checked against
    each other (task, classes, split fractions, sources, backbones...).

    Parameters
    ----------
    raw : dict of str to Any
        The parsed params.yaml.
    source : str, optional
        What the messages name as the origin of the parameters (default: ``params.yaml``).

    Returns
    -------
    Config
        The validated configuration.

    Raises
    ------
    ConfigError
        When a key is unknown, missing or of the wrong type, or parameters contradict each other; the
        message names the key.
    """
    config = build(Config, raw, key="", source=source)
    check_semantics(config, source)
    return config
