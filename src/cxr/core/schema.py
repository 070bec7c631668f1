"""Every table's columns, stated once: a source's rows, the catalog, the split.

The source readers, the catalog, the split, the Great Expectations suites and the tests all
take their column names from here, so a column added or renamed is one edit.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from cxr.core.errors import CxrError

# What every source reader returns for each image (plus extras of its own, e.g. sex and age).
SOURCE_COLUMNS = ("image_id", "source", "path", "patient_id", "finding", "view", "modality")
# The perceptual fingerprint of an image (cxr.data.duplicates): hex digits of three hashes.
FINGERPRINT_COLUMNS = ("phash_64", "phash_256", "dhash_256")
# What reading the image file adds (cxr.data.image_files).
IMAGE_COLUMNS = ("sha256", "width", "height", "mode", "orientation")
# The catalog: the source's columns, the image's duplicate group (the smallest image id of the images
# that are the same radiograph), the finding's label and the file's description, in this order.
CATALOG_COLUMNS = (
    "image_id",
    "source",
    "path",
    "sha256",
    "patient_id",
    "duplicate_group",
    "finding",
    "label",
    "view",
    "modality",
    "width",
    "height",
    "mode",
    "orientation",
    *FINGERPRINT_COLUMNS,
)
# Catalog columns that are never empty (view and modality may be: not every source records them).
CATALOG_REQUIRED = (
    "image_id",
    "source",
    "path",
    "sha256",
    "patient_id",
    "duplicate_group",
    "finding",
    "label",
    *FINGERPRINT_COLUMNS,
)
CATALOG_INTEGERS = ("width", "height", "orientation")
# The split and the external test set lead with these, then the catalog's columns.
SPLIT_LEADING = ("image_id", "patient_id", "class", "split")
SPLIT_NAMES = ("train", "val", "test")


class SchemaError(CxrError):
    """A table lacks columns its schema requires; the message names the table and the columns."""


def require_columns(frame: pd.DataFrame, columns: tuple[str, ...], where: str) -> None:
    missing = [column for column in columns if column not in frame.columns]
    if missing:
        raise SchemaError(f"{where}: missing column(s) {missing}; expected {list(columns)}")


def catalog_order(frame: pd.DataFrame) -> pd.DataFrame:
    """The catalog's columns first, in schema order, then any extras; rows by image id."""
    extras = [column for column in frame.columns if column not in CATALOG_COLUMNS]
    return frame[list(CATALOG_COLUMNS) + extras].sort_values("image_id", ignore_index=True)


def split_part(frame: pd.DataFrame, part: str) -> pd.DataFrame:
    """The rows of a split table in ``part`` (one of :data:`SPLIT_NAMES`), in order, index kept.

    Parameters
    ----------
    frame : pandas.DataFrame
        A split table, with a ``split`` column.
    part : str
        ``train``, ``val`` or ``test``.

    Returns
    -------
    pandas.DataFrame
        The rows of that part.

    Raises
    ------
    ValueError
        For a name that is not a split part.
    """
    if part not in SPLIT_NAMES:
        raise ValueError(f"no split part {part!r}; the parts are {SPLIT_NAMES}")
    return frame[frame["split"] == part]


def split_order(frame: pd.DataFrame) -> pd.DataFrame:
    """The split's leading columns first, then the rest in their order."""
    return frame[list(SPLIT_LEADING) + [column for column in frame.columns if column not in SPLIT_LEADING]]


def read_catalog(path: Path) -> pd.DataFrame:
    """A catalog CSV written by a stage, text columns as text and its integer columns typed."""
    frame = pd.read_csv(path, dtype=str)
    require_columns(frame, CATALOG_COLUMNS, str(path))
    return frame.astype({column: int for column in CATALOG_INTEGERS})
