"""Reading one input for a model: a file's bytes -> the model's input, read as training read it, with a
warning where a DICOM header says the image is outside what the model saw; any failure -> the
one-line error its row shows.

Files are read by :mod:`cxr.data.image_files` (the decoder merge and training use), within its
:class:`~cxr.data.image_files.Limits`, then resized as training resizes. Warnings come from DICOM
headers only (a PNG or JPEG says nothing about view, age or modality, so nothing is claimed for it).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from cxr.core.errors import CxrError, one_line
from cxr.core.spec import ModelSpec
from cxr.data import image_files
from cxr.data.dicom import DicomImage
from cxr.data.image_files import DEFAULT_LIMITS, Limits
from cxr.learn import images

LOG = logging.getLogger(__name__)
# Shorter sides below this are refused: upscaled to the model's size they carry no detail.
MIN_SIDE = 64
# Views of a chest radiograph taken from the front; any other (LL, RL, LATERAL, ...) gets a warning.
FRONTAL_VIEWS = ("PA", "AP")
PREVIEW_SIDE = 512  # the long side of an image's preview (cxr-predict --explain overlays), in pixels


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


@dataclass(frozen=True)
class ModelInput:
    pixels: np.ndarray  # float32 (size, size, 3) in [0, 255]
    warning: str  # "" when nothing is out of the ordinary
    preview: np.ndarray | None = None  # gray uint8 at the image's aspect (preview_image), when asked


def model_input(
    data: bytes,
    name: str,
    spec: ModelSpec,
    views: list[str] | None = None,
    limits: Limits = DEFAULT_LIMITS,
    preview: bool = False,
) -> ModelInput:
    """``data``, the bytes of the file called ``name`` (PNG, JPEG or DICOM), for the model described by
    ``spec``. ``views`` overrides the views the model records it was trained on; ``preview`` adds the
    image at its own aspect for an overlay. Raises :class:`CxrError` naming the file."""
    decoded = image_files.decode(data, name, limits, at_least=images.decode_side(spec.image_size))
    side = min(decoded.header.width, decoded.header.height)
    if side < MIN_SIDE:
        raise CxrError(f"{name}: the image is {side} px on its shorter side; at least {MIN_SIDE} px are needed")
    pixels = images.model_input(decoded.pixels, spec.image_size)
    warning = ""
    if decoded.dicom is not None:
        warning = dicom_warning(decoded.dicom, spec.views if views is None else views, spec.ages)
    if preview and decoded.header.format == "jpeg":  # the model's decode may be smaller than a preview
        decoded = image_files.decode(data, name, limits, at_least=PREVIEW_SIDE)
    return ModelInput(pixels.numpy(), warning, preview_image(decoded.pixels.numpy()) if preview else None)


def preview_image(pixels: np.ndarray) -> np.ndarray:
    """An upright (height, width, 3) image in [0, 1] -> gray uint8 (height', width') at the same
    aspect with the long side :data:`PREVIEW_SIDE` (up- or downscaled; Lanczos)."""
    height, width = pixels.shape[:2]
    factor = PREVIEW_SIDE / max(height, width)
    size = (max(1, round(width * factor)), max(1, round(height * factor)))
    gray = (np.clip(np.asarray(pixels, np.float32).mean(axis=-1), 0.0, 1.0) * 255).astype(np.uint8)
    return np.asarray(Image.fromarray(gray).resize(size, Image.Resampling.LANCZOS))


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
    source: Source,
    spec: ModelSpec,
    views: list[str] | None = None,
    limits: Limits = DEFAULT_LIMITS,
    preview: bool = False,
) -> ModelInput:
    """:func:`model_input` of a file on disk or of bytes already in hand."""
    if isinstance(source, Unreadable):
        raise CxrError(source.message)
    if isinstance(source, tuple):
        return model_input(source[1], source[0], spec, views, limits, preview)
    return model_input(image_files.read_file(source, limits), str(source), spec, views, limits, preview)


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
