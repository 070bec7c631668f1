"""Packaging kit for the offline stand-ins of the upstream archives (``sources.origin: synthetic``).

Each source module writes its own stand-in archive, laid out like the real one with its quirks
(see each module's ``synthetic_archive``); this module holds what they share: the file encodings
found upstream, the radiographs two collections both publish and how a copy differs, image sizes,
byte-stable zip members and CSVs. The images themselves are drawn by :mod:`cxr.data.sources.drawing`.
"""

from __future__ import annotations

import csv
import io
import zipfile

import numpy as np
from PIL import ExifTags, Image

from cxr.core.sections import Synthetic
from cxr.data.sources.drawing import Style, draw_chest

FIXED_ZIP_TIME = (2020, 4, 17, 0, 0, 0)

LARGE_SIZE = (2000, 2600)


def encode(image: np.ndarray, encoding: str) -> bytes:
    """An upright grey image (uint8) as file bytes in one of the encodings found upstream.

    ``jpeg-exif-rotated`` stores the pixels turned a quarter left with EXIF orientation 6, so a
    reader that honours EXIF shows it upright and one that ignores it shows it on its side.
    """
    fmt, _, variant = encoding.partition("-")
    picture = Image.fromarray(image, mode="L")
    options: dict = {"quality": 92} if fmt == "jpeg" else {}
    if variant == "rgb":
        picture = picture.convert("RGB")
    elif variant == "rgba":
        picture = picture.convert("RGBA")
    elif variant == "palette":
        picture = picture.convert("RGB").quantize(colors=256)
    elif variant == "16bit":
        picture = Image.fromarray(image.astype(np.uint16) * 257)
    elif variant == "exif-rotated":
        picture = Image.fromarray(np.ascontiguousarray(np.rot90(image, k=1)), mode="L")
        exif = Image.Exif()
        exif[ExifTags.Base.Orientation] = 6
        options["exif"] = exif.tobytes()
    elif variant:
        raise ValueError(f"unknown synthetic encoding {encoding!r}")
    buffer = io.BytesIO()
    picture.save(buffer, format="JPEG" if fmt == "jpeg" else "PNG", **options)
    return buffer.getvalue()


# How a republished copy differs from its original, in turn: the ways public COVID-19 collections
# repackaged one another's images (Roberts et al. 2021, "Frankenstein datasets").
COPY_CHANGES = ("reencoded", "resized", "cropped", "grey", "contrast")


def shared_radiographs(params: Synthetic, style: Style) -> list[np.ndarray]:
    """The ``params.near_duplicates`` radiographs (COVID-19, adult) that two stand-ins both publish.

    Drawn 512-1024 px wide (three times ``params.max_size``, within those bounds), larger than the
    rest, so that a copy cropped by a few pixels loses about half a percent of each side, as it
    does on a real 1000-3000 px radiograph. The COVID collection's stand-in holds each one and a copy
    under a second patient id; the Actualmed stand-in holds a further copy.
    """
    rng = np.random.default_rng([params.seed, 9])
    side = int(np.clip(3 * params.max_size, 512, 1024))
    return [
        draw_chest(rng, side, int(side * rng.uniform(1.0, 1.15)), "covid", style) for _ in range(params.near_duplicates)
    ]


def original_bytes(image: np.ndarray, change: str) -> bytes:
    """How the first publication stores a shared radiograph: a JPEG; an RGB JPEG with a slight
    warm tint (a figure scanned from print) when its copy is the ``grey`` one."""
    if change != "grey":
        return encode(image, "jpeg")
    tinted = np.stack([image, (image * 0.97).astype(np.uint8), (image * 0.9).astype(np.uint8)], axis=-1)
    buffer = io.BytesIO()
    Image.fromarray(tinted, mode="RGB").save(buffer, format="JPEG", quality=92)
    return buffer.getvalue()


def republished(image: np.ndarray, change: str, fmt: str) -> bytes:
    """A second publication of ``image`` (uint8 grey) as ``fmt`` (``jpeg`` or ``png``) bytes, changed
    as ``change`` (one of :data:`COPY_CHANGES`) says: re-encoded at JPEG quality 60; resized to 70%;
    cropped by 1-3 pixels per side; converted to grey (its original is a tinted RGB); contrast
    stretched by a quarter and brightened."""
    picture = Image.fromarray(image, mode="L")
    quality = 92
    if change == "reencoded":
        quality = 60
    elif change == "resized":
        picture = picture.resize((round(picture.width * 0.7), round(picture.height * 0.7)), Image.Resampling.LANCZOS)
    elif change == "cropped":
        picture = picture.crop((2, 1, picture.width - 3, picture.height - 2))
    elif change == "contrast":
        stretched = (image.astype(np.float32) - image.mean()) * 1.25 + image.mean() + 8
        picture = Image.fromarray(np.clip(stretched, 0, 255).astype(np.uint8), mode="L")
    elif change != "grey":
        raise ValueError(f"unknown copy change {change!r}")
    buffer = io.BytesIO()
    picture.save(buffer, format="JPEG" if fmt == "jpeg" else "PNG", **({"quality": quality} if fmt == "jpeg" else {}))
    return buffer.getvalue()


def writestr(archive: zipfile.ZipFile, name: str, data: bytes | str) -> None:
    """Write with a fixed timestamp, so the same parameters give byte-identical archives."""
    info = zipfile.ZipInfo(name, date_time=FIXED_ZIP_TIME)
    info.compress_type = zipfile.ZIP_DEFLATED
    info.external_attr = 0o644 << 16
    archive.writestr(info, data)


def csv_text(rows: list[dict[str, str]], columns: list[str]) -> str:
    """A metadata.csv as upstream writes it: header, then one line per row, ``\n`` line ends."""
    table = io.StringIO()
    writer = csv.DictWriter(table, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return table.getvalue()


def image_size(rng: np.random.Generator, params: Synthetic, large: bool = False) -> tuple[int, int]:
    low, high = LARGE_SIZE if large else (params.min_size, params.max_size)
    width = int(rng.integers(low, high + 1))
    height = int(np.clip(width * rng.uniform(0.85, 1.2), low, high))
    return width, height


def pick(rng: np.random.Generator, shares: dict[str, float]) -> str:
    names = list(shares)
    weights = np.array([shares[name] for name in names])
    return names[int(rng.choice(len(names), p=weights / weights.sum()))]


def upright_size(data: bytes) -> tuple[int, int]:
    """(width, height) of an image file as shown upright (EXIF orientations 5-8 turn it a quarter)."""
    with Image.open(io.BytesIO(data)) as image:
        turned = image.getexif().get(ExifTags.Base.Orientation, 1) in (5, 6, 7, 8)
        return (image.height, image.width) if turned else image.size
