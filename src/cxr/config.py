"""Typed view of params.yaml, validated once.

Every stage reads its parameters through :func:`load`, so a typo in params.yaml (or in a
``dvc exp run -S`` override) fails fast with the key's full path and what it accepts,
instead of surfacing later as a silent default.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Union

import yaml

from cxr.backbones import BACKBONES
from cxr.errors import CxrError

PARAMS_FILE = "params.yaml"
SOURCE_NAMES = ("covid_chestxray", "kermany", "actualmed")
SourceName = Literal["covid_chestxray", "kermany", "actualmed"]


class ConfigError(CxrError, ValueError):
    """A parameter is unknown, missing or of the wrong type; the message names it."""


@dataclass(frozen=True)
class GitHubSource:
    """A source published as a GitHub repository, fetched as the zip of one pinned commit."""

    repo: str
    commit: str
    sha256: str | None = None
    manifest_sha256: str | None = None

    @property
    def url(self) -> str:
        return f"https://github.com/{self.repo}/archive/{self.commit}.zip"


@dataclass(frozen=True)
class CovidChestXraySource(GitHubSource):
    repo: str = "ieee8023/covid-chestxray-dataset"
    commit: str = "a64215bea3982e9f0d3a10c2b316d357d7fa7ed2"
    missing_files: Literal["error", "drop"] = "error"


@dataclass(frozen=True)
class ActualmedSource(GitHubSource):
    repo: str = "agchung/Actualmed-COVID-chestxray-dataset"
    commit: str = "27240dd8dec9454bc97f9f3c0c432ef434de2517"


@dataclass(frozen=True)
class KermanySource:
    method: Literal["kaggle", "url"] = "kaggle"
    dataset: str = "paultimothymooney/chest-xray-pneumonia"
    url: str | None = None
    sha256: str | None = None
    manifest_sha256: str | None = None


@dataclass(frozen=True)
class Sources:
    origin: Literal["synthetic", "upstream"] = "synthetic"
    use: list[SourceName] = field(default_factory=lambda: ["covid_chestxray", "kermany"])
    # Sources never trained on: the audit's external test set.
    external: list[SourceName] = field(default_factory=lambda: ["actualmed"])
    covid_chestxray: CovidChestXraySource = field(default_factory=CovidChestXraySource)
    kermany: KermanySource = field(default_factory=KermanySource)
    actualmed: ActualmedSource = field(default_factory=ActualmedSource)


@dataclass(frozen=True)
class Synthetic:
    seed: int = 0
    covid_chestxray_patients: int = 90
    kermany_patients_per_class: int = 60
    actualmed_patients: int = 60
    source_shift: bool = True
    missing_files: int = 0
    min_size: int = 160
    max_size: int = 320


@dataclass(frozen=True)
class Download:
    retries: int = 4
    timeout_s: float = 60.0
    max_archive_bytes: int = 20_000_000_000
    max_member_bytes: int = 200_000_000
    max_total_bytes: int = 40_000_000_000


@dataclass(frozen=True)
class Filter:
    views: list[str] = field(default_factory=lambda: ["PA"])
    modalities: list[str] = field(default_factory=lambda: ["X-ray"])
    missing_view: Literal["keep", "drop"] = "keep"


@dataclass(frozen=True)
class Split:
    seed: int = 42
    train: float = 0.64
    val: float = 0.16
    test: float = 0.20
    max_per_class: int | dict[str, int] | None = None
    tolerance: float = 0.08

    @property
    def fractions(self) -> dict[str, float]:
        return {"train": self.train, "val": self.val, "test": self.test}


@dataclass(frozen=True)
class Head:
    units: int = 256
    dropout: float = 0.5
    normalize: bool = False


@dataclass(frozen=True)
class Augment:
    enabled: bool = True
    rotation: float = 0.05
    zoom: float = 0.1
    shift: float = 0.05
    contrast: float = 0.1
    horizontal_flip: bool = False


@dataclass(frozen=True)
class Train:
    weights: str | None = "imagenet"
    image_size: int | Literal["native"] = "native"
    batch_size: int = 32
    epochs: int = 50
    learning_rate: float = 0.001
    amsgrad: bool = True
    class_weights: bool = True
    early_stopping_patience: int | None = None
    head: Head = field(default_factory=Head)
    augment: Augment = field(default_factory=Augment)
    cache: Literal["memory", "disk"] = "memory"
    cache_memory_limit_mb: float | None = 8192
    distribute: Literal["auto", "mirrored", "none"] = "auto"
    mixed_precision: bool = False
    xla: bool = False
    deterministic: bool = True


@dataclass(frozen=True)
class Finetune:
    unfreeze: int = 2
    learning_rate: float = 0.0001
    epochs: int = 10


@dataclass(frozen=True)
class Evaluate:
    bootstrap_resamples: int = 1000
    bootstrap_seed: int = 0


@dataclass(frozen=True)
class Audit:
    # Side of the central square (a fraction of the image side) taken as the lung region: blanked
    # for the lungs-hidden classifier, and where Grad-CAM saliency mass is measured.
    lung_box: float = 0.6
    saliency_images_per_class: int = 4
    saliency_seed: int = 0


@dataclass(frozen=True)
class Config:
    seed: int = 42
    task: str = "multiclass"
    sources: Sources = field(default_factory=Sources)
    synthetic: Synthetic = field(default_factory=Synthetic)
    download: Download = field(default_factory=Download)
    labels: dict[str, str] = field(default_factory=dict)
    classes: dict[str, dict[str, list[str] | Literal["*"]]] = field(default_factory=dict)
    filter: Filter = field(default_factory=Filter)
    split: Split = field(default_factory=Split)
    backbones: list[str] = field(default_factory=lambda: list(BACKBONES))
    backbone: str = "xception"
    train: Train = field(default_factory=Train)
    finetune: Finetune = field(default_factory=Finetune)
    evaluate: Evaluate = field(default_factory=Evaluate)
    audit: Audit = field(default_factory=Audit)

    def task_classes(self) -> dict[str, list[str]]:
        """Class -> labels for the configured task, with ``"*"`` expanded to the unclaimed labels."""
        groups = self.classes[self.task]
        claimed = {label for labels in groups.values() if labels != "*" for label in labels}
        known = set(self.labels.values())
        return {
            name: sorted(known - claimed) if labels == "*" else list(labels)
            for name, labels in groups.items()
        }

    def class_names(self) -> list[str]:
        return sorted(self.task_classes())


def load(path: str | Path = PARAMS_FILE) -> Config:
    """Read and validate params.yaml; raise :class:`ConfigError` naming the bad key."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except FileNotFoundError:
        raise ConfigError(f"{path}: parameter file not found") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    return from_dict(raw, source=str(path))


def from_dict(raw: dict[str, Any], source: str = PARAMS_FILE) -> Config:
    config = _build(Config, raw, key="", source=source)
    _check_semantics(config, source)
    return config


def _check_semantics(config: Config, source: str) -> None:
    if config.task not in config.classes:
        raise ConfigError(
            f"{source}: task: {config.task!r} is not a task; allowed: {sorted(config.classes)}"
        )
    labels = set(config.labels.values())
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
    fractions = config.split.fractions
    if any(value <= 0 for value in fractions.values()) or abs(sum(fractions.values()) - 1) > 1e-6:
        raise ConfigError(
            f"{source}: split.train/val/test must be positive and sum to 1, got {fractions}"
        )
    if not config.sources.use:
        raise ConfigError(f"{source}: sources.use: at least one source is needed; allowed: {list(SOURCE_NAMES)}")
    if not config.sources.external:
        raise ConfigError(f"{source}: sources.external: the shortcut audit needs one external test source; "
                          f"allowed: {list(SOURCE_NAMES)} not in sources.use")
    both = sorted(set(config.sources.use) & set(config.sources.external))
    if both:
        raise ConfigError(f"{source}: sources.external: {both} also in sources.use; an external test source "
                          "must never be trained on")
    if not 0 < config.audit.lung_box < 1:
        raise ConfigError(f"{source}: audit.lung_box must be between 0 and 1, got {config.audit.lung_box}")
    for key, names in (("backbones", config.backbones), ("backbone", [config.backbone])):
        for name in names:
            if name not in BACKBONES:
                raise ConfigError(f"{source}: {key}: unknown backbone {name!r}; known: {sorted(BACKBONES)}")
    if config.backbone not in config.backbones:
        raise ConfigError(
            f"{source}: backbone: {config.backbone!r} is not in backbones {config.backbones}; finetune refines "
            f"a trained backbone (set both, e.g. -S 'backbones=[{config.backbone}]' -S backbone={config.backbone})"
        )
    if config.synthetic.min_size > config.synthetic.max_size:
        raise ConfigError(f"{source}: synthetic.min_size must not exceed synthetic.max_size")


def _build(kind: Any, value: Any, key: str, source: str) -> Any:
    """Check ``value`` against the type annotation ``kind`` and convert it; ``key`` is its path."""
    where = f"{source}: {key or '<top level>'}"
    origin = typing.get_origin(kind)
    if dataclasses.is_dataclass(kind):
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping with keys {_field_names(kind)}, got {value!r}")
        hints = typing.get_type_hints(kind)
        unknown = sorted(set(value) - set(hints))
        if unknown:
            raise ConfigError(
                f"{where}: unknown key {_join(key, unknown[0])!r}; allowed: {_field_names(kind)}"
            )
        return kind(**{name: _build(hints[name], item, _join(key, name), source) for name, item in value.items()})
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
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if kind in (int, float, str, bool):
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise ConfigError(f"{where}: expected {kind.__name__}, got {value!r}")
        return value
    raise TypeError(f"config type {kind!r} at {key} is not supported")


def _field_names(kind: Any) -> list[str]:
    return [item.name for item in dataclasses.fields(kind)]


def _join(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name
