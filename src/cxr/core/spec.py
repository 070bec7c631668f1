"""What a saved model is: the typed record written next to every ``model.keras`` as ``meta.json``.

Training writes it, and fine-tuning, evaluation, the audit, the model card and prediction read
it, so the input size, the class order and what the model was trained on are stated once.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from cxr.core.errors import CxrError


class SpecError(CxrError):
    """A model's meta.json lacks a field or holds one of the wrong kind; the message names it."""


@dataclass(frozen=True)
class ModelSpec:
    backbone: str
    image_size: int  # square input side in pixels; the model takes raw 0-255 RGB
    classes: list[str]  # output order of the probabilities
    task: str
    weights: str | None  # the base's starting weights: imagenet, null (random init) or a file
    views: list[str]  # views kept for training ([] : every view); prediction warns on others
    ages: dict | None  # {min, max, recorded, images} of the training images that record an age
    finetuned_from: str | None = None  # the trained backbone whose model was fine-tuned
    unfrozen_layers: list[str] = field(default_factory=list)
    unchanged_from_base: bool = False  # no fine-tuning epoch beat the base: same weights

    def finetuned(self, base: str, unfrozen: list[str], unchanged: bool) -> ModelSpec:
        return dataclasses.replace(
            self, finetuned_from=base, unfrozen_layers=list(unfrozen), unchanged_from_base=unchanged
        )

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any], path: Path | str = "meta.json") -> ModelSpec:
        fields = {item.name: item for item in dataclasses.fields(cls)}
        required = [
            name
            for name, item in fields.items()
            if item.default is dataclasses.MISSING and item.default_factory is dataclasses.MISSING
        ]
        missing = [name for name in required if name not in data]
        if missing:
            raise SpecError(f"{path}: missing {', '.join(missing)}; retrain the model (dvc repro) to rewrite it")
        unknown = sorted(set(data) - set(fields))
        if unknown:
            raise SpecError(f"{path}: unknown field {unknown[0]!r}; known: {sorted(fields)}")
        if not isinstance(data["image_size"], int) or not isinstance(data["classes"], list):
            raise SpecError(f"{path}: image_size must be an integer and classes a list")
        return cls(**data)


def trained_on(split: pd.DataFrame, views: list[str]) -> dict[str, Any]:
    """The spec's ``views`` and ``ages`` for a model trained on the train part of ``split``."""
    train = split[split["split"] == "train"]
    ages = pd.to_numeric(train["age"], errors="coerce").dropna() if "age" in train else pd.Series(dtype=float)
    age_range = (
        None
        if ages.empty
        else {"min": float(ages.min()), "max": float(ages.max()), "recorded": int(len(ages)), "images": int(len(train))}
    )
    return {"views": list(views), "ages": age_range}
