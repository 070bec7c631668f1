"""Typed view of params.yaml, validated once.

Every stage reads its parameters through :func:`load`, so a typo in params.yaml (or in a
``dvc exp run -S`` override) fails fast with the key's full path and what it accepts. There
are no defaults here: a key missing from params.yaml is an error naming it, never a silent
value (the study's own settings are in recipes.yaml).
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Union

import yaml

from cxr.core.backbones import BACKBONES
from cxr.core.errors import CxrError

PARAMS_FILE = "params.yaml"
YAML12_FLOAT = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+")


class ConfigError(CxrError, ValueError):
    """A parameter is unknown, missing or of the wrong type; the message names it."""


def bounded(
    *,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
    high_open: bool = False,
    reason: str = "",
) -> Any:
    """A field whose numbers must lie in ``[low, high]`` (``(`` / ``)`` where open); None skips a side.

    The range lives next to the field's type so that one place says what a parameter accepts;
    :func:`_build` checks it for plain numbers and for every value of a mapping. ``reason`` says
    why the bound is where it is; it ends the error message.
    """
    return field(metadata={"range": (low, high, low_open, high_open), "reason": reason})


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
    # Share of the COVID collection's patients who also have a CT series (axial or coronal slices).
    ct_share: float = bounded(low=0, high=1)
    covid_chestxray_findings: Literal["flat", "hierarchical"]
    source_shift: bool
    missing_files: int = bounded(low=0)
    min_size: int = bounded(low=16)
    max_size: int = bounded(
        low=16, high=4096, reason="real radiographs are at most about 4300 px; larger generated ones only slow the demo"
    )
    large_images: int = bounded(low=0)


@dataclass(frozen=True)
class Download:
    retries: int = bounded(low=0)
    timeout_s: float = bounded(low=0, low_open=True)
    max_archive_bytes: int = bounded(low=1)
    max_member_bytes: int = bounded(low=1)
    max_total_bytes: int = bounded(low=1)


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


@dataclass(frozen=True)
class Audit:
    # Side of the central square (a fraction of the image side) taken as the lung region: blanked
    # for the lungs-hidden classifier, and where Grad-CAM saliency mass is measured.
    lung_box: float = bounded(low=0, high=1, low_open=True, high_open=True)
    saliency_images_per_class: int = bounded(low=1, high=100, reason="overlays are for a reader to look at")
    saliency_seed: int


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
    classes: dict[str, dict[str, list[str] | Literal["*"]]]
    filter: Filter
    split: Split
    backbones: list[str]
    backbone: str
    train: Train
    finetune: Finetune
    evaluate: Evaluate
    audit: Audit

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


def declared_params(pipeline: Path, stage: str) -> list[str]:
    """The params.yaml keys that dvc.yaml declares for ``stage`` (``name`` or ``name@item``)."""
    name, _, item = stage.partition("@")
    stages = (yaml.safe_load(pipeline.read_text()) or {}).get("stages", {})
    if name not in stages:
        raise ConfigError(f"{pipeline}: no stage {name!r} (DVC_STAGE={stage})")
    definition = stages[name].get("do", stages[name])
    keys = [key for entry in definition.get("params", []) for key in ([entry] if isinstance(entry, str) else [])]
    return [key.replace("${item}", item) for key in keys]


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
        return self._child(_join(self._prefix, name), getattr(self._value, name))

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


def unrestricted(config: Config | DeclaredParams) -> Config:
    """Every parameter, for records that log the whole configuration (MLflow params and tags)."""
    return config._value if isinstance(config, DeclaredParams) else config


def as_dict(config: Config | DeclaredParams) -> dict[str, Any]:
    """Every parameter as plain data, keyed as params.yaml is (e.g. for a checkpoint's fingerprint)."""
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
    built = _build(kind, sections[name], f"sources.{name}", PARAMS_FILE)
    return config._child(f"sources.{name}", built) if isinstance(config, DeclaredParams) else built


def from_dict(raw: dict[str, Any], source: str = PARAMS_FILE) -> Config:
    config = _build(Config, raw, key="", source=source)
    _check_semantics(config, source)
    return config


def _check_semantics(config: Config, source: str) -> None:
    if config.task not in config.classes:
        raise ConfigError(f"{source}: task: {config.task!r} is not a task; allowed: {sorted(config.classes)}")
    labels = set(config.label_names())
    for task, groups in config.classes.items():
        wildcards = [name for name, members in groups.items() if members == "*"]
        if len(wildcards) > 1:
            raise ConfigError(f"{source}: classes.{task}: at most one class may be '*', got {wildcards}")
        for name, members in groups.items():
            for label in [] if members == "*" else members:
                if label not in labels:
                    raise ConfigError(
                        f"{source}: classes.{task}.{name}: label {label!r} is not produced by "
                        f"`labels`; allowed: {sorted(labels)}"
                    )
    _check_label_typos(config, source)
    fractions = config.split.fractions
    if any(value <= 0 for value in fractions.values()) or abs(sum(fractions.values()) - 1) > 1e-6:
        raise ConfigError(f"{source}: split.train/val/test must be positive and sum to 1, got {fractions}")
    sections = sorted(config.sources.sections)
    if not config.sources.use:
        raise ConfigError(f"{source}: sources.use: at least one source is needed; allowed: {sections}")
    if not config.sources.external:
        raise ConfigError(
            f"{source}: sources.external: the shortcut audit needs one external test source; "
            f"allowed: {sections} not in sources.use"
        )
    for key in ("use", "external"):
        for name in getattr(config.sources, key):
            if name not in config.sources.sections:
                raise ConfigError(
                    f"{source}: sources.{key}: {name!r} has no section sources.{name}; "
                    f"sources with a section: {sections}"
                )
    both = sorted(set(config.sources.use) & set(config.sources.external))
    if both:
        raise ConfigError(
            f"{source}: sources.external: {both} also in sources.use; an external test source must never be trained on"
        )
    for key, names in (("backbones", config.backbones), ("backbone", [config.backbone])):
        for name in names:
            if name not in BACKBONES:
                raise ConfigError(f"{source}: {key}: unknown backbone {name!r}; known: {sorted(BACKBONES)}")
    if config.backbone not in config.backbones:
        raise ConfigError(
            f"{source}: backbone: {config.backbone!r} is not in backbones {config.backbones}; finetune refines "
            f"a trained backbone (set both, e.g. -S 'backbones=[{config.backbone}]' -S backbone={config.backbone})"
        )
    if config.positive_class not in config.class_names():
        raise ConfigError(
            f"{source}: positive_class: {config.positive_class!r} is not a class of task "
            f"{config.task!r}; allowed: {config.class_names()}"
        )
    if config.train.image_size != "native":
        for name in config.backbones:
            if config.train.image_size < BACKBONES[name].min_size:
                raise ConfigError(
                    f"{source}: train.image_size: {name} needs at least {BACKBONES[name].min_size} px, "
                    f"got {config.train.image_size}"
                )
    ceiling = BACKBONES[config.backbone].unfreezable_layers
    if config.finetune.unfreeze > ceiling:
        raise ConfigError(
            f"{source}: finetune.unfreeze: {config.finetune.unfreeze} is more than the "
            f"{ceiling} layers of {config.backbone}'s base that can be unfrozen"
        )
    if sorted(config.synthetic.patients) != sections:
        raise ConfigError(
            f"{source}: synthetic.patients: needs one count per source section {sections}, "
            f"got {sorted(config.synthetic.patients)}"
        )
    if config.synthetic.min_size > config.synthetic.max_size:
        raise ConfigError(f"{source}: synthetic.min_size must not exceed synthetic.max_size")


def _check_label_typos(config: Config, source: str) -> None:
    """A label of ``labels`` that no task's classes name, spelled like one they do name (``VIRALL`` for
    ``VIRAL``, ``Normal`` for ``NORMAL``), is a typo that would silently drop its images from every task
    that lists classes by name; labels no class names and like none (``LIPOID``) are left out by design."""
    named = {
        label
        for groups in config.classes.values()
        for members in groups.values()
        if members != "*"
        for label in members
    }
    for label in sorted(set(config.label_names()) - named):
        close = difflib.get_close_matches(label.upper(), {name.upper(): name for name in named}, n=1, cutoff=0.8)
        if close:
            findings = sorted(finding for finding, value in config.labels.items() if value == label)
            tasks = sorted(
                task
                for task, groups in config.classes.items()
                if not any(members == "*" for members in groups.values())
            )
            raise ConfigError(
                f"{source}: labels: {label!r} (for {', '.join(map(repr, findings))}) is named by no "
                f"class of any task; did you mean {close[0]!r}? Its images would be left out of "
                f"{', '.join(tasks) or 'every task'}"
            )


def _build(kind: Any, value: Any, key: str, source: str) -> Any:
    """Check ``value`` against the type annotation ``kind`` and convert it; ``key`` is its path."""
    where = f"{source}: {key or '<top level>'}"
    origin = typing.get_origin(kind)
    if dataclasses.is_dataclass(kind):
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping with keys {_field_names(kind)}, got {value!r}")
        hints = typing.get_type_hints(kind)
        rest = [item.name for item in dataclasses.fields(kind) if item.metadata.get("rest")]
        if rest:
            value = {
                **{name: item for name, item in value.items() if name in hints},
                rest[0]: {name: item for name, item in value.items() if name not in hints},
            }
        unknown = sorted(set(value) - set(hints))
        if unknown:
            raise ConfigError(f"{where}: unknown key {_join(key, unknown[0])!r}; allowed: {_field_names(kind)}")
        missing = [name for name in _field_names(kind) if name not in value]
        if missing:
            raise ConfigError(
                f"{where}: missing key {_join(key, missing[0])!r}; every parameter must be set "
                "(the shipped params.yaml has them all)"
            )
        built = {
            name: _build(hints[name], item, key if name in rest else _join(key, name), source)
            for name, item in value.items()
        }
        for item in dataclasses.fields(kind):
            if "range" in item.metadata and item.name in built:
                _check_range(
                    built[item.name], item.metadata["range"], _join(key, item.name), source, item.metadata["reason"]
                )
        return kind(**built)
    if origin in (Union, types.UnionType):
        options = typing.get_args(kind)
        if value is None and type(None) in options:
            return None
        errors = []
        for option in options:
            if option is type(None):
                continue
            try:
                return _build(option, value, key, source)
            except ConfigError as exc:
                errors.append(str(exc).split(": ", 2)[-1])
        raise ConfigError(f"{where}: {value!r} is none of: {'; '.join(errors)}")
    if origin is Literal:
        allowed = typing.get_args(kind)
        if value not in allowed:
            raise ConfigError(f"{where}: {value!r} is not allowed; allowed: {list(allowed)}")
        return value
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        (item_kind,) = typing.get_args(kind)
        return [_build(item_kind, item, f"{key}[{index}]", source) for index, item in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        key_kind, item_kind = typing.get_args(kind)
        return {
            _build(key_kind, name, key, source): _build(item_kind, item, _join(key, str(name)), source)
            for name, item in value.items()
        }
    if kind is Any:
        return value
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if kind is float and isinstance(value, str) and YAML12_FLOAT.fullmatch(value):
        # YAML 1.1 (PyYAML) reads 3e-05 as text, and `dvc exp run -S lr=0.00003` writes it so.
        return float(value)
    if kind in (int, float, str, bool):
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise ConfigError(f"{where}: expected {kind.__name__}, got {value!r}")
        return value
    raise TypeError(f"config type {kind!r} at {key} is not supported")


def _check_range(value: Any, bounds: tuple, key: str, source: str, reason: str = "") -> None:
    """Every number in ``value`` (a number, or a mapping's values) lies within ``bounds``."""
    low, high, low_open, high_open = bounds
    numbers = value.items() if isinstance(value, dict) else [(None, value)]
    for name, number in numbers:
        if isinstance(number, bool) or not isinstance(number, int | float):
            continue
        too_low = low is not None and (number <= low if low_open else number < low)
        too_high = high is not None and (number >= high if high_open else number > high)
        if too_low or too_high:
            accepted = " and ".join(
                part
                for part in (
                    None if low is None else f"{'>' if low_open else '>='} {low:g}",
                    None if high is None else f"{'<' if high_open else '<='} {high:g}",
                )
                if part
            )
            where = key if name is None else f"{key}.{name}"
            raise ConfigError(
                f"{source}: {where}: {number!r} is out of range; it must be {accepted}"
                + (f" ({reason})" if reason else "")
            )


def _field_names(kind: Any) -> list[str]:
    return [item.name for item in dataclasses.fields(kind)]


def _join(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name
