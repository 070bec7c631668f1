"""What an image file is and how cxr reads it: the one decode path.

Merge's image check, training, evaluation, the audit, ``cxr-predict`` and the served model all read
files through this module, in this order:

1. the size on disk is checked against :attr:`Limits.max_file_bytes` before a byte is read;
2. the format is told from the file's first bytes, never from its suffix (the COVID collection
   once shipped WebP files named ``.png``); PNG, JPEG and DICOM are read, any other format is
   refused with its name;
3. width and height (DICOM: rows x columns x frames, and the decoded bytes) are read from the
   header and checked against :attr:`Limits.max_pixels` before any pixel is decoded, so a
   decompression bomb (a 50 KB PNG claiming 20000 x 20000 px) costs nothing;
4. the pixels are decoded: PNG and JPEG by TensorFlow's decoder (:func:`decode_tensor`, the very
   op training's ``tf.data`` pipeline runs), DICOM by pydicom (:mod:`cxr.data.dicom`); a JPEG at
   libjpeg's reduced scale (1/2, 1/4, 1/8) when the reader needs a small image (``at_least``). Every
   coefficient is still read, so a broken file fails as it would at full size.

A file merge accepts is therefore a file training can read. Every failure is an
:class:`ImageFileError` whose one-line message names the file and the cause.
"""

from __future__ import annotations

import io
import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from PIL import ExifTags, Image, UnidentifiedImageError

from cxr.core.errors import CxrError, one_line
from cxr.data import dicom

if TYPE_CHECKING:
    import tensorflow as tf

# The denominators of libjpeg's DCT scaling a JPEG may be decoded at, smallest image first.
JPEG_SCALES = (8, 4, 2, 1)
# EXIF orientations that turn the image a quarter (5-8): width and height swap when upright.
QUARTER_TURNS = (5, 6, 7, 8)
# The formats training reads (the catalog's images) and the ones a trained model takes.
TRAINING_FORMATS = ("png", "jpeg")
MODEL_FORMATS = ("png", "jpeg", "dicom")
# Formats recognised by their first bytes, named in the refusal so the user knows what to convert.
OTHER_FORMATS = (
    (b"RIFF", 8, b"WEBP", "WebP"),
    (b"II*\x00", 0, b"", "TIFF"),
    (b"MM\x00*", 0, b"", "TIFF"),
    (b"GIF87a", 0, b"", "GIF"),
    (b"GIF89a", 0, b"", "GIF"),
    (b"BM", 0, b"", "BMP"),
    (b"\x00\x00\x00\x0cjP  ", 0, b"", "JPEG 2000"),
    (b"\xffO\xffQ", 0, b"", "JPEG 2000 codestream"),
    (b"8BPS", 0, b"", "Photoshop"),
    (b"%PDF", 0, b"", "PDF"),
    (b"\x00\x00\x01\x00", 0, b"", "ICO"),
)


class ImageFileError(CxrError):
    """A file that cannot be read as an image; the one-line message names the file and the cause."""


@dataclass(frozen=True)
class Limits:
    """How large a file may be before cxr reads it.

    ``max_file_bytes``: bytes on disk (or in a request cell). ``max_pixels``: width x height x frames
    of one image, checked on the header before decoding; the default, 8192 x 8192, is about four
    times the largest chest radiograph detectors (43 x 43 cm at 0.1 mm). A DICOM's pixel data once
    decompressed or inflated (rows x columns x frames x samples x bytes per sample) may take
    :attr:`max_decoded_bytes`, 4 bytes per allowed pixel (16-bit grey or 8-bit RGB at the pixel
    limit), checked before decompressing it.

    Decoding one image at the limit takes about 18 bytes per pixel at its peak for a PNG or JPEG
    (float32 RGB and its resize) and 27 for a 16-bit DICOM (its LUTs in float64): 1.2 and 1.8 GB at
    the defaults (``bench/inputs.py``). A server bounds its memory by the number of concurrent decodes.

    Parameters
    ----------
    max_file_bytes : int, optional
        Largest file, in bytes (default 512 MiB).
    max_pixels : int, optional
        Largest image, in pixels, width x height x frames (default 8192 x 8192).
    """

    max_file_bytes: int = 512 * 2**20
    max_pixels: int = 8192 * 8192

    @property
    def max_decoded_bytes(self) -> int:
        return 4 * self.max_pixels

    def check_file_size(self, size: int, name: str) -> None:
        if size > self.max_file_bytes:
            raise ImageFileError(
                f"{name}: {size:,} bytes, over the limit of {self.max_file_bytes:,} bytes per file (max_file_bytes)"
            )

    def check_pixels(self, width: int, height: int, name: str, frames: int = 1) -> None:
        pixels = int(width) * int(height) * int(frames)
        if pixels > self.max_pixels:
            shape = f"{width} x {height}" + (f" x {frames} frames" if frames > 1 else "")
            raise ImageFileError(
                f"{name}: {shape} px ({pixels:,} pixels), over the limit of {self.max_pixels:,} "
                "pixels per image (max_pixels); downscale it first"
            )


DEFAULT_LIMITS = Limits()


@dataclass(frozen=True)
class Header:
    """What a file's header says, before any pixel is decoded."""

    format: str  # png | jpeg | dicom
    width: int  # upright (after the EXIF orientation), in pixels
    height: int
    mode: str  # PIL's mode (L, RGB, I;16, ...); DICOM: its PhotometricInterpretation
    orientation: int  # EXIF orientation 1-8; 1 when absent (and for DICOM)


def sniff(data: bytes, name: str) -> str:
    """``png``, ``jpeg`` or ``dicom``, told from the first bytes (a DICOM also by its ``.dcm`` or
    ``.dicom`` suffix, as some files lack the 128-byte preamble). Raises :class:`ImageFileError`
    naming the format found (WebP, TIFF, ...) or saying it is none that cxr knows."""
    if not data:
        raise ImageFileError(f"{name}: empty file")
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if data.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if data[128:132] == b"DICM":
        return "dicom"
    for magic, offset, more, label in OTHER_FORMATS:
        if data.startswith(magic) and data[offset : offset + len(more)] == more:
            raise ImageFileError(
                f"{name}: a {label} file (whatever its name says); cxr reads PNG, JPEG and DICOM: convert it to PNG"
            )
    if re.match(rb"P[1-7]\s", data):
        raise ImageFileError(
            f"{name}: a Netpbm (PBM/PGM/PPM) file (whatever its name says); cxr reads PNG, JPEG and "
            "DICOM: convert it to PNG"
        )
    if dicom.is_dicom(name, data):  # by its suffix: a DICOM written without the preamble
        return "dicom"
    raise ImageFileError(f"{name}: not a PNG, JPEG or DICOM file (it starts with {data[:8]!r})")


def read_file(path: str | Path, limits: Limits = DEFAULT_LIMITS) -> bytes:
    """The bytes of the file at ``path``, its size checked before reading. Raises
    :class:`ImageFileError` for a missing, unreadable (permissions, symlink loop) or oversized file."""
    path = Path(path)
    try:
        size = path.stat().st_size
        if not path.is_file():
            raise ImageFileError(f"{path}: not a file")
        limits.check_file_size(size, str(path))
        return path.read_bytes()
    except OSError as exc:
        raise ImageFileError(f"{path}: cannot be read ({exc.strerror or type(exc).__name__})") from None


def accepted_format(data: bytes, name: str, limits: Limits, formats: tuple[str, ...]) -> str:
    """The file's format (:func:`sniff`) after its size check; raises when ``formats`` excludes it."""
    limits.check_file_size(len(data), name)
    kind = sniff(data, name)
    if kind not in formats:
        raise ImageFileError(
            f"{name}: a {kind.upper()} file; here only {', '.join(f.upper() for f in formats)} are read"
        )
    return kind


def header(data: bytes, name: str, limits: Limits = DEFAULT_LIMITS, formats: tuple[str, ...] = MODEL_FORMATS) -> Header:
    """Format, upright size, mode and orientation of a file's bytes, with every limit checked and
    no pixel decoded. ``formats``: those accepted here (merge takes only what training reads).
    Raises :class:`ImageFileError` (or :class:`cxr.data.dicom.DicomError`) naming the file."""
    kind = accepted_format(data, name, limits, formats)
    if kind == "dicom":
        found = dicom.read_header(data, name, max_pixels=limits.max_pixels, max_decoded_bytes=limits.max_decoded_bytes)
        return Header("dicom", found.columns, found.rows, found.photometric, 1)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as image:  # reads the header only
                limits.check_pixels(image.width, image.height, name)
                orientation = int(image.getexif().get(ExifTags.Base.Orientation, 1))
                width, height, mode = image.width, image.height, image.mode
    except Image.DecompressionBombError as exc:  # PIL's own guard (twice its MAX_IMAGE_PIXELS) fired first
        claimed = re.search(r"\((\d+) pixels\)", str(exc))
        count = int(claimed[1]) if claimed else None
        if count is not None and count <= limits.max_pixels:
            raise ImageFileError(
                f"{name}: {count:,} pixels, over Pillow's own limit of "
                f"{2 * Image.MAX_IMAGE_PIXELS:,} pixels per image; downscale it first"
            ) from None
        raise ImageFileError(
            f"{name}: {f'{count:,} pixels' if count else 'more pixels than Pillow opens'}, over the "
            f"limit of {limits.max_pixels:,} pixels per image (max_pixels); downscale it first"
        ) from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError) as exc:
        raise ImageFileError(f"{name}: cannot be decoded as an image ({one_line(exc)})") from None
    orientation = orientation if 1 <= orientation <= 8 else 1
    if orientation in QUARTER_TURNS:
        width, height = height, width
    return Header(kind, width, height, mode, orientation)


def decode_tensor(data: tf.Tensor, orientation: tf.Tensor | int = 1, at_least: int | None = None) -> tf.Tensor:
    """A PNG or JPEG file's bytes -> float32 (height, width, 3) in [0, 1], upright. The decode op of
    the whole project: training's ``tf.data`` pipeline calls it in graph mode, :func:`decode` eagerly.

    ``at_least``: a JPEG is decoded at the smallest of libjpeg's scales 1/8, 1/4, 1/2 and 1 whose shorter
    side (``ceil(side / denominator)``) is at least that many pixels; None: full size. PNGs: full size."""
    import tensorflow as tf  # here, not at the top: the stages that only read the catalog never load it

    def full() -> tf.Tensor:
        return tf.io.decode_image(data, channels=3, dtype=tf.float32, expand_animations=False)

    if at_least is None:
        return upright(full(), orientation)
    return upright(tf.cond(tf.io.is_jpeg(data), lambda: _scaled_jpeg(data, at_least), full), orientation)


def _scaled_jpeg(data: tf.Tensor, at_least: int) -> tf.Tensor:
    """A JPEG at the smallest :data:`JPEG_SCALES` scale with at least ``at_least`` px on its shorter side."""
    import tensorflow as tf

    side = tf.reduce_min(tf.image.extract_jpeg_shape(data)[:2])
    enough = tf.stack([(side + scale - 1) // scale >= at_least for scale in JPEG_SCALES[:-1]] + [tf.constant(True)])
    branches = [
        lambda scale=scale: tf.image.convert_image_dtype(tf.io.decode_jpeg(data, channels=3, ratio=scale), tf.float32)
        for scale in JPEG_SCALES
    ]
    return tf.switch_case(tf.argmax(tf.cast(enough, tf.int32), output_type=tf.int32), branches)


def upright(image: tf.Tensor, orientation: tf.Tensor | int) -> tf.Tensor:
    """Apply EXIF orientation 1-8 (anything else: as stored); TensorFlow's decoders ignore EXIF.

    The eight cases are PIL's ``ImageOps.exif_transpose``: 2 mirror, 3 half turn, 4 flip,
    5 transpose, 6 quarter turn clockwise, 7 transverse, 8 quarter turn anticlockwise.
    """
    import tensorflow as tf

    orientation = tf.cast(orientation, tf.int32)
    branches = [
        lambda: image,
        lambda: tf.image.flip_left_right(image),
        lambda: tf.image.rot90(image, 2),
        lambda: tf.image.flip_up_down(image),
        lambda: tf.image.transpose(image),
        lambda: tf.image.rot90(image, 3),
        lambda: tf.image.rot90(tf.image.transpose(image), 2),
        lambda: tf.image.rot90(image, 1),
    ]
    known = (orientation >= 1) & (orientation <= 8)
    return tf.switch_case(tf.where(known, orientation - 1, 0), branches)


@dataclass(frozen=True)
class Decoded:
    """A file read for a model: its pixels and what its header said."""

    pixels: tf.Tensor  # float32 (height, width, 3) in [0, 1], upright
    header: Header
    dicom: dicom.DicomImage | None  # the DICOM's header facts (view, age, modality, ...), for DICOMs


def decode(
    data: bytes,
    name: str,
    limits: Limits = DEFAULT_LIMITS,
    formats: tuple[str, ...] = MODEL_FORMATS,
    at_least: int | None = None,
) -> Decoded:
    """A file's bytes -> :class:`Decoded`: limits and format checked, the header read before any pixel
    is decoded (a DICOM's once, by :func:`cxr.data.dicom.read_dicom`), then the format's decoder
    (a JPEG at a reduced scale with ``at_least`` px on its shorter side: :func:`decode_tensor`).
    Raises :class:`ImageFileError` (a :class:`cxr.core.errors.CxrError`) with one line naming the file."""
    import tensorflow as tf

    if accepted_format(data, name, limits, formats) == "dicom":
        # read_dicom checks the DICOM header against the limits itself, before decoding.
        image = dicom.read_dicom(data, name, max_pixels=limits.max_pixels, max_decoded_bytes=limits.max_decoded_bytes)
        grey = tf.convert_to_tensor(image.pixels[..., None], tf.float32) / 255.0
        height, width = image.pixels.shape
        return Decoded(tf.image.grayscale_to_rgb(grey), Header("dicom", width, height, image.photometric, 1), image)
    found = header(data, name, limits, formats)
    try:
        pixels = decode_tensor(tf.constant(data), found.orientation, at_least)
    except tf.errors.OpError as exc:
        raise ImageFileError(
            f"{name}: cannot be decoded as an image ({found.format.upper()}: {one_line(exc.message)})"
        ) from None
    return Decoded(pixels, found, None)
