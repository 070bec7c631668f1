"""Typed view of params.yaml, validated once: the sections as frozen dataclasses, and loading.

The machinery that builds them (types, ranges) is :mod:`cxr.core.checks`, the checks across
keys :mod:`cxr.core.semantics`, the DVC-declared view :mod:`cxr.core.declared`.

Every stage reads its parameters through :func:`load`, so a typo in params.yaml (or in a
``dvc exp run -S`` override) fails fast with the key's full path and what it accepts. There
are no defaults here: a key missing from params.yaml is an error naming it, never a silent
value (the study's own settings are in recipes.yaml).
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from cxr.core.checks import PARAMS_FILE, ConfigError, bounded, build
from cxr.core.declared import DeclaredParams, declared_params
from cxr.core.semantics import check_semantics


@dataclass(frozen=True)
class Sources:
    origin: Literal["synthetic", "upstream"]
    use: list[str]
    # Sources never trained on: the audit's external test set.
    external: list[str]
    # Every other key of ``sources`` is one source's own section (``sources.kermany``, ...): its
    # module in cxr.data.sources types and checks it, so adding a source never touches this file.
    sections: dict[str, dict[str, Any]] = field(metadata={"rest": True})


@dataclass(frozen=True)
class Synthetic:
    seed: int
    # Patients per source (Kermany: per class), by source name.
    patients: dict[str, int] = bounded(low=1)
    source_shift: bool
    missing_files: int = bounded(low=0)
    min_size: int = bounded(low=16)
    max_size: int = bounded(
        low=16, high=4096, reason="real radiographs are at most about 4300 px; larger generated ones only slow the demo"
    )
    large_images: int = bounded(low=0)
    # Radiographs published twice (the COVID collection under two patient ids, and in the Actualmed
    # collection), the second copy re-encoded, resized, cropped, grey-converted or with changed contrast.
    near_duplicates: int = bounded(low=0)


@dataclass(frozen=True)
class Download:
    retries: int = bounded(low=0)
    timeout_s: float = bounded(low=0, low_open=True)
    max_archive_bytes: int = bounded(low=1)
    max_member_bytes: int = bounded(low=1)
    max_total_bytes: int = bounded(low=1)


@dataclass(frozen=True)
class Duplicates:
    # Candidate pairs: 64-bit pHashes at most this many bits apart (of 64).
    candidate_bits: int = bounded(low=0, high=64)
    # Confirmed duplicates: the 256-bit pHash and dHash each at most this many bits apart (of 256).
    confirm_bits: int = bounded(low=0, high=256)
    # A duplicate group whose images carry different labels: report (kept, listed) | drop (all its
    # images) | error (the stage stops, naming the groups).
    conflicting_labels: Literal["report", "drop", "error"]


@dataclass(frozen=True)
class Filter:
    views: list[str]
    modalities: list[str]
    missing_view: Literal["keep", "drop"]


@dataclass(frozen=True)
class Split:
    seed: int
    train: float
    val: float
    test: float
    max_per_class: int | dict[str, int] | None = bounded(low=1)
    tolerance: float = bounded(low=0, high=1, low_open=True)

    @property
    def fractions(self) -> dict[str, float]:
        return {"train": self.train, "val": self.val, "test": self.test}


@dataclass(frozen=True)
class Head:
    units: int = bounded(low=1, high=65536, reason="a head wider than 65,536 units is a typo, not a head")
    dropout: float = bounded(low=0, high=1, high_open=True)
    normalize: bool


@dataclass(frozen=True)
class Augment:
    enabled: bool
    rotation: float = bounded(low=0, high=1)
    zoom: float = bounded(low=0, high=1, high_open=True)
    shift: float = bounded(low=0, high=1, high_open=True)
    contrast: float = bounded(low=0, high=1, high_open=True)
    horizontal_flip: bool


@dataclass(frozen=True)
class Train:
    weights: str | None
    image_size: int | Literal["native"] = bounded(
        low=32,
        high=1024,
        reason="the backbones' native sizes are 224-331 px; above 1024 px a batch of float32 "
        "activations no longer fits a GPU or this machine's memory",
    )
    batch_size: int = bounded(low=1, high=4096, reason="larger batches exceed memory at any image size")
    epochs: int = bounded(low=1, high=10000, reason="the study ran 50 epochs; more than 10,000 is a typo")
    learning_rate: float = bounded(low=0, low_open=True)
    amsgrad: bool
    class_weights: bool
    early_stopping_patience: int | None = bounded(low=1)
    head: Head
    augment: Augment
    cache: Literal["memory", "disk"]
    cache_dir: str
    cache_memory_limit_mb: float | None = bounded(low=0, low_open=True)
    distribute: Literal["auto", "mirrored", "none"]
    mixed_precision: bool
    xla: bool
    deterministic: bool


@dataclass(frozen=True)
class Finetune:
    unfreeze: int = bounded(low=1)
    learning_rate: float = bounded(low=0, low_open=True)
    epochs: int = bounded(low=1, high=10000, reason="fine-tuning runs a few epochs; more than 10,000 is a typo")


@dataclass(frozen=True)
class Evaluate:
    bootstrap_resamples: int = bounded(
        low=1, high=1_000_000, reason="intervals settle long before a million resamples; more only costs time"
    )
    bootstrap_seed: int
    # How the decision threshold for positive_class is chosen on the validation split:
    # target_sensitivity (the highest threshold whose sensitivity reaches target_sensitivity) or
    # youden (maximises sensitivity + specificity - 1).
    operating_point: Literal["target_sensitivity", "youden"]
    target_sensitivity: float = bounded(low=0, high=1, low_open=True)


@dataclass(frozen=True)
class Audit:
    # Side of the central square (a fraction of the image side) taken as the lung region: blanked
    # for the lungs-hidden classifier, and where Grad-CAM saliency mass is measured.
    lung_box: float = bounded(low=0, high=1, low_open=True, high_open=True)
    saliency_images_per_class: int = bounded(low=1, high=100, reason="overlays are for a reader to look at")
    saliency_seed: int


@dataclass(frozen=True)
class Release:
    # What a model's shortcut audit must show for it to become @champion (report/release.py).
    max_lungs_hidden_above_chance: float = bounded(low=0, high=1)
    max_within_class_probe: float = bounded(low=0, high=1)
    max_external_drop: float = bounded(low=0, high=1)
    # A score resting on fewer images is reported but marked not interpretable; the gate skips it.
    min_images: int = bounded(low=1)
    # The validation statistic that ranks the models (the champion is chosen, not assumed).
    select_by: Literal["macro_f1", "balanced_accuracy", "accuracy"]


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
