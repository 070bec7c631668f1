"""A trained model on disk: ``models/<name>/`` holds ``model.keras``, ``meta.json`` (backbone,
input size, classes, task, what it was trained on) and ``history.csv``, written at once or not at
all, and byte-identical for the same weights (no save date, stable ids, fixed zip times).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import keras
import pandas as pd

from cxr.errors import CxrError
from cxr.outputs import make_zip_reproducible, staged_directory, write_csv, write_json


class ModelFileError(CxrError):
    """A model folder that cannot be read; the message names the file."""


def renumber_shared_objects(config: Any) -> Any:
    """Keras' config with each ``shared_object_id`` (a Python ``id()``, different in every
    process) replaced by its rank of first appearance: the same sharing, stable numbers."""
    ranks: dict[int, int] = {}

    def walk(node: Any) -> Any:
        if isinstance(node, dict):
            return {key: ranks.setdefault(value, len(ranks) + 1) if key == "shared_object_id" else walk(value)
                    for key, value in node.items()}
        return [walk(item) for item in node] if isinstance(node, list) else node

    return walk(config)


# What makes two saves of the same weights differ: the save date, and ids taken from memory.
KERAS_ARCHIVE_REWRITES = {
    "metadata.json": lambda metadata: {key: value for key, value in metadata.items() if key != "date_saved"},
    "config.json": renumber_shared_objects,
}


def trained_on(split: pd.DataFrame, views: list[str]) -> dict:
    """What a model's ``meta.json`` records about its training data for prediction's warnings: the
    views kept, and the age range of the training images that record an age (``None`` if none)."""
    train = split[split["split"] == "train"]
    ages = pd.to_numeric(train["age"], errors="coerce").dropna() if "age" in train else pd.Series(dtype=float)
    age_range = None if ages.empty else {"min": float(ages.min()), "max": float(ages.max()),
                                         "recorded": int(len(ages)), "images": int(len(train))}
    return {"views": list(views), "ages": age_range}


def save_model(model: keras.Model, folder: Path, meta: dict, history: pd.DataFrame) -> None:
    """Write ``model.keras``, ``meta.json`` and ``history.csv`` to ``folder`` at once, or not at all;
    the same weights always give the same ``model.keras`` bytes (no save date, fixed zip times)."""
    with staged_directory(folder) as staging:
        model.save(staging / "model.keras")
        make_zip_reproducible(staging / "model.keras", rewrite_json=KERAS_ARCHIVE_REWRITES)
        write_json(staging / "meta.json", meta)
        write_csv(staging / "history.csv", history)


def load_model(folder: Path) -> tuple[keras.Model, dict]:
    """A model written by :func:`save_model`; a missing or unreadable file is named."""
    path, meta_path = folder / "model.keras", folder / "meta.json"
    for required in (path, meta_path):
        if not required.is_file():
            raise ModelFileError(f"{required}: not found; run the stage that trains it (dvc repro)")
    try:
        model = keras.models.load_model(path)
    except Exception as exc:  # Keras raises many types for unreadable archives
        raise ModelFileError(f"{path}: cannot be loaded as a Keras model: {exc}") from None
    return model, json.loads(meta_path.read_text())
