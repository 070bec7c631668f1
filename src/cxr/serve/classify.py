"""Applying a model to image files: each file's bytes -> the model's input, read as training read
it, with a warning where the file is outside what the model saw; then one row of probabilities per
file. ``cxr-predict`` and the registered (served) model both use it.

PNG and JPEG go through the catalog's checks and EXIF orientation and the pipeline's resize;
DICOMs through :mod:`cxr.serve.dicom` into the same resize. Warnings come from DICOM headers only
(a PNG or JPEG says nothing about view or age, so nothing is claimed for it).
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import tensorflow as tf
from tqdm import tqdm

from cxr.learn import images
from cxr.data.image_files import describe_image_bytes
from cxr.core.errors import CxrError
from cxr.core.spec import ModelSpec
from cxr.serve.dicom import DicomImage, is_dicom, read_dicom

# Shorter sides below this are refused: upscaled to the model's size they carry no detail.
MIN_SIDE = 64
# Images are decoded this many at a time, so a large folder never holds all its pixels at once.
CHUNK = 256

# A file to classify: its path, or (a name for it, its bytes).
Source = Path | tuple[str, bytes]
# Called with the model, the names and model inputs of a batch, and the predicted class indices.
Explain = Callable[[object, list[str], np.ndarray, np.ndarray], None]


@dataclass(frozen=True)
class ModelInput:
    pixels: np.ndarray  # float32 (size, size, 3) in [0, 255]
    warning: str  # "" when nothing is out of the ordinary


def model_input(data: bytes, name: str, spec: ModelSpec, views: list[str] | None = None) -> ModelInput:
    """``data``, the bytes of the file called ``name``, for the model described by ``spec``. ``views`` overrides the views the model records it was trained on. Raises
    :class:`CxrError` naming the file."""
    if not data:
        raise CxrError(f"{name}: empty file")
    size = spec.image_size
    if is_dicom(name, data):
        dicom = read_dicom(data, name)
        side = min(dicom.pixels.shape)
        pixels = images.grey_model_input(dicom.pixels, size)
        warning = dicom_warning(dicom, spec.views if views is None else views, spec.ages)
    else:
        described = describe_image_bytes(data, name)
        side = min(described["width"], described["height"])
        pixels = images.decode_bytes(tf.constant(data), size, described["orientation"])
        warning = ""
    if side < MIN_SIDE:
        raise CxrError(f"{name}: the image is {side} px on its shorter side; at least {MIN_SIDE} px are needed")
    return ModelInput(pixels.numpy(), warning)


def dicom_warning(dicom: DicomImage, views: list[str], ages: dict | None) -> str:
    """What in the header lies outside the training data: a view not in ``views``, an age outside
    ``ages`` (``{"min", "max", "recorded", "images"}`` over the training images that record one)."""
    warnings = []
    if views and dicom.view and dicom.view not in views:
        warnings.append(f"ViewPosition {dicom.view} is not among the views the model was trained on "
                        f"({', '.join(views)})")
    if ages and dicom.age is not None and not ages["min"] <= dicom.age <= ages["max"]:
        warnings.append(f"PatientAge {dicom.age:.1f} years is outside the ages of the training images that record "
                        f"one ({ages['min']:g}-{ages['max']:g} years; {ages['recorded']} of {ages['images']} "
                        "images record an age)")
    return "; ".join(warnings)


def read_source(source: Source, spec: ModelSpec, views: list[str] | None = None) -> ModelInput:
    """:func:`model_input` of a file on disk or of bytes already in hand."""
    if isinstance(source, tuple):
        return model_input(source[1], source[0], spec, views)
    if not source.is_file():
        raise CxrError(f"{source}: no such file")
    return model_input(source.read_bytes(), str(source), spec, views)


def source_name(source: Source) -> str:
    return source[0] if isinstance(source, tuple) else str(source)


def predict_sources(model, spec: ModelSpec, sources: list[Source], *, batch_size: int, views: list[str] | None = None,
                    progress: bool = False, explain: Explain | None = None) -> pd.DataFrame:
    """One row per source: path (its name), predicted class, ``p_<class>`` per class of ``spec``,
    warning and error. A source that cannot be read gets its error in its row; the others go on."""
    classes, rows = spec.classes, []
    bar = tqdm(total=len(sources), unit="image", disable=not progress, file=sys.stderr)
    for start in range(0, len(sources), CHUNK):
        chunk, decoded = sources[start:start + CHUNK], []
        for source in chunk:
            try:
                decoded.append(read_source(source, spec, views))
            except CxrError as exc:
                decoded.append(exc)
            bar.update(1)
        good = [index for index, item in enumerate(decoded) if isinstance(item, ModelInput)]
        probabilities = {}
        if good:
            pixels = np.stack([decoded[index].pixels for index in good])
            batches = tf.data.Dataset.from_tensor_slices(pixels).batch(batch_size)
            probabilities = dict(zip(good, model.predict(batches, verbose=0)))
            if explain is not None:
                explain(model, [source_name(chunk[index]) for index in good], pixels,
                        np.array([int(np.argmax(probabilities[index])) for index in good]))
        for index, source in enumerate(chunk):
            row = {"path": source_name(source), "predicted": None, **{f"p_{name}": None for name in classes},
                   "warning": "", "error": ""}
            if index in probabilities:
                row["predicted"] = classes[int(np.argmax(probabilities[index]))]
                row.update({f"p_{name}": float(value) for name, value in zip(classes, probabilities[index])})
                row["warning"] = decoded[index].warning
            else:
                row["error"] = str(decoded[index])
            rows.append(row)
    bar.close()
    return pd.DataFrame(rows, columns=["path", "predicted", *[f"p_{name}" for name in classes], "warning", "error"])

