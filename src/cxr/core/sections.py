"""The sections of params.yaml as frozen dataclasses, one per stage's job (``train``, ``split``...).

Each field's type and range is its check (:mod:`cxr.core.checks` builds them); comments say what a
key means where its name does not. :class:`cxr.core.config.Config` gathers them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from cxr.core.checks import bounded


@dataclass(frozen=True)
class Sources:
    origin: Literal["synthetic", "upstream"]
    use: list[str]
    # Sources never trained on: the audit's external test set.
    external: list[str]
    # Every other key of ``sources`` is one source's own section (``sources.kermany``, ...): its
    # module in cxr.data.sources types and checks it, so adding a source never touches this file.
    sections: dict[str, dict[str, Any]] = field(metadata={"rest": True})

    def image_sources(self) -> list[str]:
        """The sections that are image sources, sorted; an annotation set's section (``lung_masks``)
        names the image source it ``annotates`` instead."""
        return sorted(name for name, section in self.sections.items() if "annotates" not in (section or {}))


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
    distribute: Literal["auto", "mirrored", "multi_worker", "none"]
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
    # Side of the central square (a fraction of the image side) taken as the lung region where no
    # real lung mask is had: Grad-CAM mass is measured inside it, and without any real mask it is
    # what the lungs-hidden classifier blanks.
    lung_box: float = bounded(low=0, high=1, low_open=True, high_open=True)
    # How far the lungs-hidden blank reaches beyond a real lung mask (or the atlas of them), as a
    # fraction of the image side: outlines are drawn by hand and images are positioned loosely.
    mask_margin: float = bounded(low=0, high=0.2)
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
