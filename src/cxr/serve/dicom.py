"""DICOM chest X-rays -> the grey pixels a model takes, as a radiology viewer would show them.

The stored values go through the modality LUT (rescale slope and intercept), then the VOI LUT
or window centre and width the file carries, then MONOCHROME1 (white is low) is inverted, and
the result is scaled to 8 bits. Multi-frame files are refused: which frame is the X-ray is not
ours to guess.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom
from pydicom.errors import InvalidDicomError
from pydicom.pixels import apply_modality_lut, apply_voi_lut

from cxr.core.errors import CxrError

SUFFIXES = (".dcm", ".dicom")


class DicomError(CxrError):
    """A DICOM file that cannot be read as one chest X-ray; the message names the file."""


@dataclass(frozen=True)
class DicomImage:
    pixels: np.ndarray  # uint8, (height, width)
    view: str | None  # ViewPosition (PA, AP, LL, ...), when the header records it
    age: float | None  # PatientAge in years, when the header records it


def is_dicom(name: str, data: bytes) -> bool:
    """By suffix, or by the ``DICM`` marker at byte 128 (DICOM files often have no suffix)."""
    return Path(name).suffix.lower() in SUFFIXES or data[128:132] == b"DICM"


def age_in_years(text: str) -> float | None:
    """DICOM's PatientAge (``nnnD``, ``nnnW``, ``nnnM`` or ``nnnY``) in years; None when absent or
    malformed."""
    text = str(text or "").strip().upper()
    per_year = {"D": 365.25, "W": 52.18, "M": 12.0, "Y": 1.0}
    if len(text) < 2 or text[-1] not in per_year or not text[:-1].isdigit():
        return None
    return int(text[:-1]) / per_year[text[-1]]


def read_dicom(source: Path | bytes, path: str | Path | None = None) -> DicomImage:
    """A DICOM file, or its bytes (``path`` then names it in errors), as one grey X-ray."""
    path = path or source
    try:
        dataset = pydicom.dcmread(io.BytesIO(source) if isinstance(source, bytes) else source)
    except (InvalidDicomError, OSError, ValueError) as exc:
        raise DicomError(f"{path}: not a readable DICOM file ({exc})") from None
    frames = int(dataset.get("NumberOfFrames", 1) or 1)
    if frames > 1:
        raise DicomError(f"{path}: multi-frame DICOM ({frames} frames) is not supported; save the X-ray frame "
                         "as a single-frame file")
    if "PixelData" not in dataset:
        raise DicomError(f"{path}: DICOM file without pixel data")
    try:
        values = dataset.pixel_array
    except Exception as exc:  # pydicom raises many types for unsupported transfer syntaxes
        raise DicomError(f"{path}: its pixel data cannot be decoded ({exc})") from None
    if values.ndim == 3:  # colour (SamplesPerPixel 3): the luminance
        values = values @ np.array([0.299, 0.587, 0.114])
    else:
        values = apply_voi_lut(apply_modality_lut(values, dataset), dataset)
    values = values.astype(np.float64)
    if dataset.get("PhotometricInterpretation") == "MONOCHROME1":
        values = values.max() + values.min() - values
    low, high = values.min(), values.max()
    if high <= low:
        raise DicomError(f"{path}: every pixel has the same value; there is no image to read")
    pixels = np.round((values - low) / (high - low) * 255).astype(np.uint8)
    view = str(dataset.get("ViewPosition", "") or "").strip() or None
    return DicomImage(pixels=pixels, view=view, age=age_in_years(dataset.get("PatientAge", "")))
