"""A trained model on disk: a folder holding ``model.keras``, ``meta.json`` (its
:class:`~cxr.core.spec.ModelSpec`) and ``history.csv``, written at once or not at
all, and byte-identical for the same weights (no save date, stable ids, fixed zip times).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import keras
import pandas as pd

from cxr.core.errors import CxrError
from cxr.core.outputs import make_zip_reproducible, staged_directory, write_csv, write_json
from cxr.core.spec import HISTORY_FILE, MODEL_FILE, SPEC_FILE, ModelSpec


class ModelFileError(CxrError):
    """A model folder that cannot be read; the message names the file."""


def renumber_shared_objects(config: Any) -> Any:
    """Keras' config with each ``shared_object_id`` (a Python ``id()``, different in every
    process) replaced by its rank of first appearance: the same sharing, stable numbers."""
    ranks: dict[int, int] = {}

    def walk(node: Any) -> Any:
        if isinstance(node, dict):
            return {
                key: ranks.setdefault(value, len(ranks) + 1) if key == "shared_object_id" else walk(value)
                for key, value in node.items()
            }
        return [walk(item) for item in node] if isinstance(node, list) else node

    return walk(config)


# What makes two saves of the same weights differ: the save date, and ids taken from memory.
KERAS_ARCHIVE_REWRITES = {
    "metadata.json": lambda metadata: {key: value for key, value in metadata.items() if key != "date_saved"},
    "config.json": renumber_shared_objects,
}


def save_model(model: keras.Model, folder: Path, spec: ModelSpec, history: pd.DataFrame) -> None:
    """Write ``model.keras``, ``meta.json`` and ``history.csv`` to ``folder`` at once, or not at all;
    the same weights always give the same ``model.keras`` bytes (no save date, fixed zip times)."""
    with staged_directory(folder) as staging:
        model.save(staging / MODEL_FILE)
        make_zip_reproducible(staging / MODEL_FILE, rewrite_json=KERAS_ARCHIVE_REWRITES)
        write_json(staging / SPEC_FILE, spec.to_json())
        write_csv(staging / HISTORY_FILE, history)


def load_model(folder: Path) -> tuple[keras.Model, ModelSpec]:
    """A model written by :func:`save_model`; a missing or unreadable file is named.

    Parameters
    ----------
    folder : Path
        The model folder (the Keras model file and ``meta.json``).

    Returns
    -------
    model : keras.Model
        The model.
    spec : ModelSpec
        What it is (:func:`read_spec`).

    Raises
    ------
    ModelFileError
        When a file is missing, the model cannot be loaded, or ``meta.json`` is not valid JSON.
    SpecError
        When ``meta.json`` lacks a required field or has a wrong type.
    """
    path, meta_path = folder / MODEL_FILE, folder / SPEC_FILE
    for required in (path, meta_path):
        if not required.is_file():
            raise ModelFileError(f"{required}: not found; run the stage that trains it (dvc repro)")
    try:
        model = keras.models.load_model(path)
    except Exception as exc:  # Keras raises many types for unreadable archives
        raise ModelFileError(f"{path}: cannot be loaded as a Keras model: {exc}") from None
    return model, read_spec(folder)


def read_spec(folder: Path) -> ModelSpec:
    """The spec of the model in ``folder``, without loading the model.

    Parameters
    ----------
    folder : Path
        The model folder.

    Returns
    -------
    ModelSpec
        The spec read from its ``meta.json``.

    Raises
    ------
    ModelFileError
        When ``meta.json`` is missing or not valid JSON.
    SpecError
        When a required field is missing or has a wrong type (:meth:`ModelSpec.from_json`).
    """
    path = folder / SPEC_FILE
    if not path.is_file():
        raise ModelFileError(f"{path}: not found; run the stage that trains it (dvc repro)")
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ModelFileError(f"{path}: not valid JSON: {exc}") from None
    return ModelSpec.from_json(data, path)
