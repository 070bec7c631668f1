"""Applying a model to image files: each file's bytes -> the model's input, read as training read
it, with a warning where the file is outside what the model saw; then one row of probabilities per
file. ``cxr-predict`` and the registered (served) model both use it.

Files are read by :mod:`cxr.data.image_files` (the decoder merge and training use), within its
:class:`~cxr.data.image_files.Limits`, then resized as training resizes. Warnings come from DICOM
headers only (a PNG or JPEG says nothing about view, age or modality, so nothing is claimed for it).

Every failure stays in its row: whatever reading a file raises (a format cxr does not read, a
decompression bomb, a broken DICOM window, pydicom or TensorFlow errors, memory) becomes a one-line
``error`` naming the file, and the other files go on. Unexpected errors are also logged with their
traceback (the server's log), never returned.
"""

from __future__ import annotations

import logging
import sys
import threading
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import tensorflow as tf
from tqdm import tqdm

from cxr.core.errors import CxrError, one_line
from cxr.core.spec import ModelSpec
from cxr.data import image_files
from cxr.data.dicom import DicomImage
from cxr.data.image_files import DEFAULT_LIMITS, Limits
from cxr.learn import images
from cxr.report.calibration import apply_temperature

LOG = logging.getLogger(__name__)
# Shorter sides below this are refused: upscaled to the model's size they carry no detail.
MIN_SIDE = 64
# Views of a chest radiograph taken from the front; any other (LL, RL, LATERAL, ...) gets a warning.
FRONTAL_VIEWS = ("PA", "AP")
# Images are decoded this many at a time, so a large folder never holds all its pixels at once.
CHUNK = 256


@dataclass(frozen=True)
class Unreadable:
    """An input known to fail before it is read (a null request cell, a row over the limit, a symlink loop).

    Parameters
    ----------
    name : str
        The input's name in its row (``path``).
    message : str
        Its row's error.
    """

    name: str
    message: str


# A file to classify: its path, (a name for it, its bytes), or an input that already failed.
Source = Path | tuple[str, bytes] | Unreadable
# Called with the model, the names and model inputs of a batch, and the predicted class indices;
# returns what it wrote for each image (a path, or "" for nothing), in order.
# (model, names, pixels, predicted class indices) -> per image: (overlay path or "", a note or "").
Explain = Callable[[object, list[str], np.ndarray, np.ndarray], list[tuple[str, str]]]


@dataclass(frozen=True)
class Decision:
    """What a registered model adds to its probabilities.

    The ``temperature`` fitted on the validation split (1: none), the ``threshold`` on the calibrated
    p(``positive_class``) chosen on it (None: none), and ``release``, the release gate's one-line
    result for this model. A model folder, which no gate has judged, gets the defaults.

    Parameters
    ----------
    temperature : float, optional
        The temperature that divides the logits (temperature scaling, Guo et al. 2017); 1: none.
    positive_class : str or None, optional
        The class the threshold is on.
    threshold : float or None, optional
        Decide ``positive_class`` when its calibrated probability is at least this (0-1); None: no
        decision.
    release : str, optional
        The release gate's one-line result.

    References
    ----------
    Guo, C., Pleiss, G., Sun, Y. & Weinberger, K. Q. (2017). On Calibration of Modern Neural
    Networks. ICML 2017.
    """

    temperature: float = 1.0
    positive_class: str | None = None
    threshold: float | None = None
    release: str = "not judged (a model folder: only registered versions pass the release gate)"

    def calibrated(self, probabilities: np.ndarray) -> np.ndarray:
        """(n, classes) softmax output -> the same after temperature scaling."""
        return probabilities if self.temperature == 1.0 else apply_temperature(probabilities, self.temperature)

    def label(self, probabilities: np.ndarray, classes: list[str]) -> str:
        """``<positive_class>`` or ``not <positive_class>`` at the threshold; "" without one."""
        if self.threshold is None or self.positive_class not in classes:
            return ""
        score = probabilities[classes.index(self.positive_class)]
        return self.positive_class if score >= self.threshold else f"not {self.positive_class}"


@dataclass(frozen=True)
class ModelInput:
    pixels: np.ndarray  # float32 (size, size, 3) in [0, 255]
    warning: str  # "" when nothing is out of the ordinary


def model_input(
    data: bytes, name: str, spec: ModelSpec, views: list[str] | None = None, limits: Limits = DEFAULT_LIMITS
) -> ModelInput:
    """``data``, the bytes of the file called ``name`` (PNG, JPEG or DICOM), for the model described by
    ``spec``. ``views`` overrides the views the model records it was trained on. Raises
    :class:`CxrError` naming the file."""
    decoded = image_files.decode(data, name, limits)
    side = min(decoded.header.width, decoded.header.height)
    if side < MIN_SIDE:
        raise CxrError(f"{name}: the image is {side} px on its shorter side; at least {MIN_SIDE} px are needed")
    pixels = images.model_input(decoded.pixels, spec.image_size)
    warning = ""
    if decoded.dicom is not None:
        warning = dicom_warning(decoded.dicom, spec.views if views is None else views, spec.ages)
    return ModelInput(pixels.numpy(), warning)


def dicom_warning(dicom: DicomImage, views: list[str], ages: dict | None) -> str:
    """What in the header lies outside the training data: a view not in ``views``, an age outside
    ``ages`` (``{"min", "max", "recorded", "images"}`` over the training images that record one), a
    modality or body part that is not a chest radiograph, values read leniently."""
    warnings = list(dicom.notes)
    if dicom.view and dicom.view not in FRONTAL_VIEWS and not (views and dicom.view in views):
        warnings.append(f"ViewPosition {dicom.view} is not a frontal view (PA or AP)")
    if views and dicom.view and dicom.view not in views:
        warnings.append(
            f"ViewPosition {dicom.view} is not among the views the model was trained on ({', '.join(views)})"
        )
    if ages and dicom.age is not None and not ages["min"] <= dicom.age <= ages["max"]:
        warnings.append(
            f"PatientAge {dicom.age:.1f} years is outside the ages of the training images that record "
            f"one ({ages['min']:g}-{ages['max']:g} years; {ages['recorded']} of {ages['images']} "
            "images record an age)"
        )
    return "; ".join(warnings)


def read_source(
    source: Source, spec: ModelSpec, views: list[str] | None = None, limits: Limits = DEFAULT_LIMITS
) -> ModelInput:
    """:func:`model_input` of a file on disk or of bytes already in hand."""
    if isinstance(source, Unreadable):
        raise CxrError(source.message)
    if isinstance(source, tuple):
        return model_input(source[1], source[0], spec, views, limits)
    return model_input(image_files.read_file(source, limits), str(source), spec, views, limits)


def source_name(source: Source) -> str:
    """The name a source's row shows: an Unreadable's name, a pair's name, or the path as text.

    Parameters
    ----------
    source : Source
        A Path, a ``(name, bytes)`` pair or an :class:`Unreadable`.

    Returns
    -------
    str
        Its name.
    """
    if isinstance(source, Unreadable):
        return source.name
    return source[0] if isinstance(source, tuple) else str(source)


def row_error(source: Source, error: BaseException) -> str:
    """The one-line error of a source whose reading raised ``error``; unexpected errors are logged
    with their traceback."""
    name = one_line(source_name(source))  # a file name may hold a newline
    if isinstance(error, CxrError):
        message = one_line(error)
        return message if message.startswith(name) else f"{name}: {message}"
    if isinstance(error, MemoryError):
        return f"{name}: out of memory while decoding it; lower the limits or free memory"
    LOG.error("%s: unexpected error while reading it", name, exc_info=error)
    return f"{name}: cannot be read ({type(error).__name__}: {one_line(error)})"


def predict_sources(
    model,
    spec: ModelSpec,
    sources: list[Source],
    *,
    batch_size: int,
    views: list[str] | None = None,
    progress: bool = False,
    explain: Explain | None = None,
    limits: Limits = DEFAULT_LIMITS,
    decode_slots: threading.Semaphore | None = None,
    decision: Decision = Decision(),
) -> pd.DataFrame:
    """Classify images: one row per source, in order.

    A row holds path (its name), predicted class, ``p_<class>`` per class of ``spec`` (calibrated by
    ``decision``; None where the row failed), ``decision`` (at the operating point), ``release`` (the
    model's release gate result), warning, error, and overlay (what ``explain`` wrote for it, when
    given). A source that cannot be read gets its one-line error in its row; the others go on, and a
    batch the model fails on gets the failure in each of its rows. ``decode_slots`` bounds how many
    files are decoded at once across threads (a server's memory).

    Parameters
    ----------
    model : keras.Model
        The classifier (or anything with Keras' ``predict``).
    spec : ModelSpec
        What it is (classes, input size).
    sources : list of Source
        Image files (Path), ``(name, bytes)`` pairs or :class:`Unreadable` inputs.
    batch_size : int
        Images per model call.
    views : list of str or None, optional
        Overrides the views the model records it was trained on (None: ``spec.views``); a DICOM of
        another view gets a warning.
    progress : bool, optional
        Show a progress bar on stderr.
    explain : callable or None, optional
        Writes an overlay per image from ``(model, names, pixels, predicted class indices)`` and
        returns ``(overlay, note)`` pairs; None: no overlay column.
    limits : Limits, optional
        File and image size limits.
    decode_slots : threading.Semaphore or None, optional
        Bounds concurrent decodes; None: unbounded.
    decision : Decision, optional
        Temperature, threshold and release gate result (default: none).

    Returns
    -------
    pandas.DataFrame
        Columns ``path``, ``predicted``, ``p_<class>``..., ``decision``, ``release``, ``warning``,
        ``error`` and, with ``explain``, ``overlay``.
    """
    classes, rows = spec.classes, []
    columns = ["path", "predicted", *[f"p_{name}" for name in classes], "decision", "release", "warning", "error"]
    columns += ["overlay"] if explain is not None else []
    bar = tqdm(total=len(sources), unit="image", disable=not progress, file=sys.stderr)
    for start in range(0, len(sources), CHUNK):
        chunk, decoded = sources[start : start + CHUNK], []
        for source in chunk:
            try:
                with decode_slots or nullcontext():
                    decoded.append(read_source(source, spec, views, limits))
            except Exception as exc:  # noqa: BLE001 - every failure (MemoryError too) is its row's answer
                decoded.append(row_error(source, exc))
            bar.update(1)
        good = [index for index, item in enumerate(decoded) if isinstance(item, ModelInput)]
        probabilities, overlays, overlay_failure = {}, {}, ""
        if good:
            pixels = np.stack([decoded[index].pixels for index in good])
            batches = tf.data.Dataset.from_tensor_slices(pixels).batch(batch_size)
            try:
                probabilities = dict(zip(good, decision.calibrated(model.predict(batches, verbose=0))))
            except Exception as exc:  # noqa: BLE001 - memory, a broken model: the batch's rows say so
                LOG.error("the model failed on a batch of %d images", len(good), exc_info=exc)
                for index in good:
                    decoded[index] = (
                        f"{source_name(chunk[index])}: the model failed on the batch of this file "
                        f"({type(exc).__name__}: {one_line(exc)})"
                    )
                good = []
        if explain is not None and good:
            try:
                written = explain(
                    model,
                    [source_name(chunk[index]) for index in good],
                    pixels,
                    np.array([int(np.argmax(probabilities[index])) for index in good]),
                )
                overlays = dict(zip(good, written))
            except Exception as exc:  # noqa: BLE001 - the prediction stands; the row says the overlay failed
                LOG.error("Grad-CAM overlays failed", exc_info=exc)
                overlay_failure = f"Grad-CAM overlay not written ({type(exc).__name__}: {one_line(exc)})"
        for index, source in enumerate(chunk):
            row = {
                "path": source_name(source),
                "predicted": None,
                **{f"p_{name}": None for name in classes},
                "decision": "",
                "release": decision.release,
                "warning": "",
                "error": "",
            } | ({"overlay": ""} if explain is not None else {})
            if index in probabilities:
                row["predicted"] = classes[int(np.argmax(probabilities[index]))]
                row.update({f"p_{name}": float(value) for name, value in zip(classes, probabilities[index])})
                row["decision"] = decision.label(probabilities[index], classes)
                overlay, note = overlays.get(index, ("", ""))
                row["warning"] = "; ".join(part for part in (decoded[index].warning, overlay_failure, note) if part)
                if explain is not None:
                    row["overlay"] = overlay
            else:
                row["error"] = decoded[index]
            rows.append(row)
    bar.close()
    return pd.DataFrame(rows, columns=columns)
