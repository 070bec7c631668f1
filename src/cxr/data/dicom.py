"""DICOM chest X-rays -> the grey pixels a model takes, as a radiology viewer would show them.

The stored values go through the modality LUT (rescale slope and intercept), then the VOI LUT
or window centre and width the file carries, then MONOCHROME1 (white is low) is inverted, and
the result is scaled to 8 bits. PALETTE COLOR, RGB and YBR images are turned to luminance
(ITU-R BT.601 weights) after their colour lookup. Multi-frame files are refused: which frame is the
X-ray is not ours to guess.

Files are read as archives write them, not only as the standard says (PS3.5 6.2): a PatientAge of
``62`` (no unit, as NIH/Kaggle-derived DICOMs write it) is 62 years; decimal strings padded with
spaces are read; a Window Width of 0 or an empty Rescale Slope, which the standard forbids, is set
aside with a warning instead of failing the file. Compressed pixel data (JPEG baseline, extended and
lossless, JPEG-LS, JPEG 2000, RLE) is decoded through pydicom's plugins (GDCM, Pillow, pydicom's
own RLE decoder); sizes are checked on the header before any pixel is decompressed.
"""

from __future__ import annotations

import io
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.pixels import apply_color_lut, apply_modality_lut, apply_voi_lut
from pydicom.uid import (
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
)

from cxr.core.errors import CxrError, one_line

SUFFIXES = (".dcm", ".dicom")
# Modalities that are projection radiographs: computed, digital and digital radiography.
XRAY_MODALITIES = ("CR", "DX", "DR")
MONOCHROME = ("MONOCHROME1", "MONOCHROME2")
# Photometric interpretations pydicom turns into RGB (colour lookup, or YCbCr conversion).
COLOUR = ("PALETTE COLOR", "RGB", "YBR_FULL", "YBR_FULL_422", "YBR_ICT", "YBR_RCT", "YBR_PARTIAL_420")
# Units of PatientAge (PS3.5 table 6.2-1: nnnD, nnnW, nnnM, nnnY), per year.
AGE_UNITS = {"D": 365.25, "W": 52.18, "M": 12.0, "Y": 1.0}
# Luminance of RGB (ITU-R BT.601).
LUMINANCE = np.array([0.299, 0.587, 0.114])


class DicomError(CxrError):
    """A DICOM file that cannot be read as one chest X-ray; the message names the file."""


@dataclass(frozen=True)
class DicomHeader:
    """The header facts checked before decoding."""

    rows: int
    columns: int
    frames: int
    photometric: str
    transfer_syntax: str


@dataclass(frozen=True)
class DicomImage:
    pixels: np.ndarray  # uint8, (height, width)
    view: str | None  # ViewPosition (PA, AP, LL, ...), when the header records it
    age: float | None  # PatientAge in years, when the header records one that can be read
    photometric: str = "MONOCHROME2"  # PhotometricInterpretation as stored
    notes: tuple[str, ...] = ()  # what in the header is unusual for a chest X-ray or was read leniently


def is_dicom(name: str, data: bytes) -> bool:
    """By the ``DICM`` marker at byte 128, or by suffix (some files have no preamble)."""
    return data[128:132] == b"DICM" or Path(name).suffix.lower() in SUFFIXES


def age_in_years(text: object) -> tuple[float | None, str]:
    """DICOM's PatientAge (``nnnD``, ``nnnW``, ``nnnM``, ``nnnY``; also a bare number, read as years)
    in years, with a note when the value is not what the standard says: ``(None, "")`` when absent,
    ``(None, note)`` when it cannot be read."""
    raw = str(text or "").strip()
    if not raw:
        return None, ""
    value = raw.upper()
    if value[-1] in AGE_UNITS and value[:-1].strip().isdigit():
        return int(value[:-1]) / AGE_UNITS[value[-1]], ""
    try:
        years = float(value)
    except ValueError:
        return None, f"PatientAge {raw!r} cannot be read (expected e.g. 062Y); its age is not checked"
    if not 0 <= years < 150:
        return None, f"PatientAge {raw!r} is not an age; its age is not checked"
    return years, ""


def read_header(data: bytes, name: str, *, max_pixels: int, max_decoded_bytes: int) -> DicomHeader:
    """Size, frames and photometric interpretation from the header, checked against the limits with
    no pixel decoded; a deflated file is inflated only up to ``max_decoded_bytes`` (plus its header).
    Raises :class:`DicomError` naming the file and the limit."""
    _check_inflated_size(data, name, max_decoded_bytes)
    dataset = _read(data, name, stop_before_pixels=True)
    rows, columns = _integer(dataset, "Rows", name), _integer(dataset, "Columns", name)
    frames = int(_number(dataset.get("NumberOfFrames", 1), 1) or 1)
    if rows * columns * frames > max_pixels:
        raise DicomError(
            f"{name}: {columns} x {rows} px"
            + (f" x {frames} frames" if frames > 1 else "")
            + f", over the limit of {max_pixels:,} pixels per image (max_pixels)"
        )
    samples = int(_number(dataset.get("SamplesPerPixel", 1), 1) or 1)
    allocated = int(_number(dataset.get("BitsAllocated", 16), 16) or 16)
    decoded = rows * columns * frames * samples * -(-allocated // 8)
    if decoded > max_decoded_bytes:
        raise DicomError(
            f"{name}: its pixel data decodes to {decoded:,} bytes, over the limit of "
            f"{max_decoded_bytes:,} (max_decoded_bytes)"
        )
    syntax = dataset.file_meta.get("TransferSyntaxUID", "") if hasattr(dataset, "file_meta") else ""
    return DicomHeader(
        rows, columns, frames, str(dataset.get("PhotometricInterpretation", "") or "").strip(), str(syntax)
    )


def read_dicom(data: bytes, name: str, *, max_pixels: int, max_decoded_bytes: int) -> DicomImage:
    """A DICOM file's bytes as one grey X-ray, after :func:`read_header`'s checks. Raises
    :class:`DicomError` (one line, naming the file) for what cannot be read: multi-frame files, no
    pixel data, an unsupported transfer syntax or photometric interpretation, a blank image."""
    found = read_header(data, name, max_pixels=max_pixels, max_decoded_bytes=max_decoded_bytes)
    if found.frames > 1:
        raise DicomError(
            f"{name}: multi-frame DICOM ({found.frames} frames) is not supported; save the X-ray frame "
            "as a single-frame file"
        )
    if found.photometric not in MONOCHROME + COLOUR:
        raise DicomError(
            f"{name}: PhotometricInterpretation {found.photometric or '(none)'} is not supported "
            f"(supported: {', '.join(MONOCHROME + COLOUR)})"
        )
    dataset = _read(data, name, stop_before_pixels=False)
    if "PixelData" not in dataset:
        raise DicomError(f"{name}: DICOM file without pixel data")
    notes = list(_header_notes(dataset))
    try:
        values = dataset.pixel_array
    except Exception as exc:  # pydicom raises many types for unsupported or broken pixel data
        raise DicomError(
            f"{name}: its pixel data ({_syntax_name(found.transfer_syntax)}) cannot be decoded ({one_line(exc)})"
        ) from None
    try:
        values = _grey(values, dataset, found.photometric, notes)
    except Exception as exc:  # a broken LUT or window: pydicom raises ValueError, TypeError, IndexError
        raise DicomError(f"{name}: its grey levels cannot be computed ({one_line(exc)})") from None
    low, high = float(np.min(values)), float(np.max(values))
    if not np.isfinite([low, high]).all():
        raise DicomError(f"{name}: its rescaled pixel values are not finite")
    if high <= low:
        raise DicomError(f"{name}: every pixel has the same value; there is no image to read")
    pixels = np.round((values - low) / (high - low) * 255).astype(np.uint8)
    view = str(dataset.get("ViewPosition", "") or "").strip().upper() or None
    age, age_note = age_in_years(dataset.get("PatientAge", ""))
    return DicomImage(
        pixels=pixels,
        view=view,
        age=age,
        photometric=found.photometric,
        notes=tuple(notes + ([age_note] if age_note else [])),
    )


def _read(data: bytes, name: str, *, stop_before_pixels: bool) -> Dataset:
    """The dataset of ``data``. A file without the preamble and file meta (older exports, some CD
    viewers) is read by its content, and its transfer syntax is the encoding it was read with."""
    try:
        dataset = pydicom.dcmread(
            io.BytesIO(data), stop_before_pixels=stop_before_pixels, force=data[128:132] != b"DICM"
        )
    except (
        InvalidDicomError,
        OSError,
        ValueError,
        EOFError,
        KeyError,
        TypeError,
        struct.error,
        zlib.error,
        NotImplementedError,
        AttributeError,
        IndexError,
    ) as exc:
        raise DicomError(f"{name}: not a readable DICOM file ({one_line(exc)})") from None
    if "TransferSyntaxUID" not in dataset.file_meta:
        implicit, little = dataset.original_encoding
        if implicit is None:
            raise DicomError(f"{name}: not a readable DICOM file (no file meta, and no data element could be read)")
        dataset.file_meta.TransferSyntaxUID = (
            ImplicitVRLittleEndian if implicit else ExplicitVRLittleEndian if little else ExplicitVRBigEndian
        )
    return dataset


def _check_inflated_size(data: bytes, name: str, max_decoded_bytes: int) -> None:
    """Deflated Explicit VR Little Endian (PS3.5 A.5) deflates everything after the file meta group;
    pydicom inflates it whole. Inflate at most ``max_decoded_bytes`` plus 1 MiB of header first."""
    if data[128:132] != b"DICM" or DeflatedExplicitVRLittleEndian.encode() not in data[132:2048]:
        return
    # (0002,0000) File Meta Information Group Length, UL, explicit VR (PS3.10 7.1): the meta group's end.
    if data[132:138] != b"\x02\x00\x00\x00UL":
        raise DicomError(f"{name}: deflated DICOM without a File Meta Information Group Length")
    start = 144 + struct.unpack("<I", data[140:144])[0]
    inflater = zlib.decompressobj(-zlib.MAX_WBITS)
    try:
        inflater.decompress(data[start:], max_decoded_bytes + 2**20)
    except zlib.error as exc:
        raise DicomError(f"{name}: deflated data cannot be inflated ({one_line(exc)})") from None
    if inflater.unconsumed_tail:
        raise DicomError(f"{name}: deflated data expands beyond {max_decoded_bytes:,} bytes (max_decoded_bytes)")


def _grey(values: np.ndarray, dataset: Dataset, photometric: str, notes: list[str]) -> np.ndarray:
    """Stored values -> float64 grey levels as displayed (modality LUT, VOI LUT or window, MONOCHROME1
    inverted), or the luminance of a colour image."""
    if photometric == "PALETTE COLOR":
        values = apply_color_lut(values, dataset)
        return (values[..., :3] @ LUMINANCE).astype(np.float64)
    if values.ndim == 3:  # RGB, or YCbCr that pydicom has already converted to RGB
        return (values[..., :3] @ LUMINANCE).astype(np.float64)
    _drop_invalid(dataset, notes)
    values = apply_voi_lut(apply_modality_lut(values, dataset), dataset).astype(np.float64)
    if photometric == "MONOCHROME1":
        values = values.max() + values.min() - values
    return values


def _drop_invalid(dataset: Dataset, notes: list[str]) -> None:
    """Set aside rescale and window values the standard forbids, so pydicom's LUTs do not fail on them."""
    for keyword, default in (("RescaleSlope", 1.0), ("RescaleIntercept", 0.0)):
        if keyword in dataset and _number(dataset.get(keyword), None) is None:
            notes.append(f"{keyword} {_shown(dataset[keyword].value)} is not a number; {default:g} is used")
            del dataset[keyword]
    if "WindowWidth" in dataset and "VOILUTSequence" not in dataset:
        width = _number(dataset.get("WindowWidth"), None)
        center = _number(dataset.get("WindowCenter"), None)
        if width is None or width < 1 or center is None:
            notes.append(
                f"window (WindowCenter {_shown(dataset.get('WindowCenter'))}, WindowWidth "
                f"{_shown(dataset.get('WindowWidth'))}) is not valid (width at least 1); the full range "
                "is shown"
            )
            for keyword in ("WindowWidth", "WindowCenter", "VOILUTFunction"):
                if keyword in dataset:
                    del dataset[keyword]


def _header_notes(dataset: Dataset) -> list[str]:
    """What in the header says this may not be a chest X-ray."""
    notes = []
    modality = str(dataset.get("Modality", "") or "").strip().upper()
    if modality and modality not in XRAY_MODALITIES:
        notes.append(f"Modality {modality} is not a projection radiograph ({', '.join(XRAY_MODALITIES)})")
    body_part = str(dataset.get("BodyPartExamined", "") or "").strip().upper()
    if body_part and body_part != "CHEST":
        notes.append(f"BodyPartExamined {body_part} is not CHEST")
    return notes


def _number(value: object, default: float | None) -> float | None:
    """A DS/IS/US value as a float (the first of several; spaces allowed); ``default`` when empty or not
    a number."""
    if isinstance(value, pydicom.multival.MultiValue | list | tuple):
        value = value[0] if len(value) else None
    if value is None:
        return default
    try:
        number = float(str(value).strip())
    except ValueError:
        return default
    return number if np.isfinite(number) else default


def _shown(value: object) -> str:
    """A header value as the file wrote it: numbers as numbers, text quoted, empty as ''."""
    number = _number(value, None)
    return f"{number:g}" if number is not None else repr(str(value if value is not None else ""))


def _integer(dataset: Dataset, keyword: str, name: str) -> int:
    value = _number(dataset.get(keyword), None)
    if value is None or value < 1:
        raise DicomError(f"{name}: {keyword} is missing or not a positive number; there is no image to read")
    return int(value)


def _syntax_name(uid: str) -> str:
    return getattr(pydicom.uid.UID(uid), "name", uid) if uid else "no transfer syntax"
