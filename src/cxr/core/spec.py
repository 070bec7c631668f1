"""What a saved model is: the typed record written next to every ``model.keras`` as ``meta.json``.

Training writes it, and fine-tuning, evaluation, the audit, the model card and prediction read
it, so the input size, the class order and what the model was trained on are stated once. Like a
MONAI bundle's ``metadata.json`` it carries a ``format_version`` and states the input (shape,
channels, dtype, value range) and the output (what the numbers are, one name per class); the
registered model carries it as its MLflow ``metadata``.

Format versions: 1 (no ``format_version`` field, no ``input``/``output``); 2 (this one). An older
file is migrated on reading; a field this version does not know (a newer cxr wrote it) is a
warning, not an error, so an older ``cxr-predict`` still reads a newer model.
"""

from __future__ import annotations

import dataclasses
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

import cxr
from cxr.core.errors import CxrError
from cxr.core.schema import split_part

FORMAT_VERSION = 2
# The files of a model folder.
MODEL_FILE = "model.keras"
SPEC_FILE = "meta.json"
HISTORY_FILE = "history.csv"


class SpecError(CxrError):
    """A model's meta.json lacks a field or holds one of the wrong kind; the message names it."""


@dataclass(frozen=True)
class ModelSpec:
    """What a trained model is: written beside it as ``meta.json``, read back by every user of it.

    Parameters
    ----------
    backbone : str
        The backbone's name in the registry.
    image_size : int
        Square input side in pixels; the model takes raw 0-255 RGB.
    classes : list of str
        Output order of the probabilities.
    task : str
        The task the model was trained for.
    weights : str or None
        The base's starting weights: ``imagenet``, None (random init) or a file.
    views : list of str
        Views kept for training (``[]``: every view); prediction warns on others.
    ages : dict or None
        ``{min, max, recorded, images}`` of the training images that record an age, or None.
    finetuned_from : str or None, optional
        The trained backbone whose model was fine-tuned.
    unfrozen_layers : list of str, optional
        Names of the base's layers unfrozen for fine-tuning.
    unchanged_from_base : bool, optional
        True when no fine-tuning epoch beat the base: same weights.
    """

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
        """The ``meta.json`` record: ``format_version``, the fields, then ``input``, ``output`` and
        ``cxr_version``."""
        return {
            "format_version": FORMAT_VERSION,
            **dataclasses.asdict(self),
            "input": self.input,
            "output": self.output,
            "cxr_version": cxr.__version__,
        }

    @property
    def input(self) -> dict[str, Any]:
        """What the model takes: a batch of upright RGB images at ``image_size``, raw pixel values
        (the backbone's own preprocessing is inside the model)."""
        return {
            "shape": [None, self.image_size, self.image_size, 3],
            "channels": "RGB",
            "dtype": "float32",
            "value_range": [0, 255],
        }

    @property
    def output(self) -> dict[str, Any]:
        """What the model gives: one probability per class (softmax), in ``classes`` order."""
        return {
            "shape": [None, len(self.classes)],
            "dtype": "float32",
            "kind": "softmax probabilities, sum 1",
            "names": list(self.classes),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any], path: Path | str = "meta.json") -> ModelSpec:
        """Read a ``meta.json`` record of any format version up to :data:`FORMAT_VERSION`.

        Raises SpecError (naming ``path`` and the field) when a required field is missing or
        ``image_size``/``classes`` have the wrong type. Warns (UserWarning) on fields it does not
        know and on a format version newer than its own.
        """
        data = dict(data)
        version = data.pop("format_version", 1)
        if not isinstance(version, int) or version < 1:
            raise SpecError(f"{path}: format_version must be a positive integer, got {version!r}")
        for derived in ("input", "output", "cxr_version"):
            data.pop(derived, None)
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
        if version > FORMAT_VERSION or unknown:
            warnings.warn(
                f"{path}: format_version {version} (this cxr reads up to {FORMAT_VERSION})"
                + (f"; ignoring fields it does not know: {', '.join(unknown)}" if unknown else ""),
                stacklevel=2,
            )
        if not isinstance(data["image_size"], int) or not isinstance(data["classes"], list):
            raise SpecError(f"{path}: image_size must be an integer and classes a list")
        return cls(**{name: value for name, value in data.items() if name in fields})


def trained_on(split: pd.DataFrame, views: list[str]) -> dict[str, Any]:
    """The spec's ``views`` and ``ages`` for a model trained on the train part of ``split``.

    Parameters
    ----------
    split : pandas.DataFrame
        The split table; its optional ``age`` column is read (non-numbers ignored).
    views : list of str
        The views kept for training (``filter.views``).

    Returns
    -------
    dict of str to Any
        ``views``: the list of views; ``ages``: ``{"min", "max"}`` of the recorded ages,
        ``recorded`` (train images with an age) and ``images`` (train images), or None when no train
        image records an age.
    """
    train = split_part(split, "train")
    ages = pd.to_numeric(train["age"], errors="coerce").dropna() if "age" in train else pd.Series(dtype=float)
    age_range = (
        None
        if ages.empty
        else {"min": float(ages.min()), "max": float(ages.max()), "recorded": int(len(ages)), "images": int(len(train))}
    )
    return {"views": list(views), "ages": age_range}
