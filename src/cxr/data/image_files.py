"""What an image file is, read with PIL: its sha256, upright size, mode and EXIF orientation, after
decoding it fully so a corrupt file is caught where it is named. The catalog describes every
source image with it; prediction checks new files with it.
"""

from __future__ import annotations

import hashlib
import io
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pandas as pd
from PIL import ExifTags, Image, UnidentifiedImageError

from cxr.core.errors import CxrError
from cxr.core.schema import IMAGE_COLUMNS

IMAGE_READERS = 4
# EXIF orientations that turn the image a quarter (5-8): width and height swap when upright.
QUARTER_TURNS = (5, 6, 7, 8)


class ImageFileError(CxrError):
    """A file that cannot be decoded as an image; the message names it."""


def describe_image(path: str) -> dict:
    """sha256, upright width and height, PIL mode and EXIF orientation (1-8; 1 when absent) of
    one image, decoding it fully to catch corruption."""
    return describe_image_bytes(Path(path).read_bytes(), path)


def describe_image_bytes(data: bytes, path: str) -> dict:
    """:func:`describe_image` of a file's bytes; ``path`` names it in errors."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            image.load()
            orientation = int(image.getexif().get(ExifTags.Base.Orientation, 1))
            orientation = orientation if 1 <= orientation <= 8 else 1
            width, height, mode = image.width, image.height, image.mode
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise ImageFileError(f"{path}: cannot be decoded as an image ({exc})") from None
    if orientation in QUARTER_TURNS:
        width, height = height, width
    return {"sha256": hashlib.sha256(data).hexdigest(), "width": width, "height": height, "mode": mode,
            "orientation": orientation}


def describe_images(paths: list[str]) -> pd.DataFrame:
    with ThreadPoolExecutor(IMAGE_READERS) as pool:
        return pd.DataFrame(list(pool.map(describe_image, paths)),
                            columns=list(IMAGE_COLUMNS))
