"""The unified image catalog: one row per image, one schema for every source.

``build`` merges the configured sources, maps each upstream finding to a label (an unknown
finding is an error, never a guess), opens every image once to record its size, mode, sha256
and perceptual fingerprint, and groups the images that are the same radiograph
(:mod:`cxr.data.duplicates`). ``filter_views`` keeps the views the study used.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd

from cxr.core import schema
from cxr.core.config import Config
from cxr.core.errors import CxrError
from cxr.core.schema import IMAGE_COLUMNS
from cxr.core.sections import Filter
from cxr.data import duplicates
from cxr.data.image_files import DEFAULT_LIMITS, TRAINING_FORMATS, Limits, decode, read_file
from cxr.data.sources import read_source
from cxr.data.sources.layout import SourceTable

# What describe_image may also compute from a file's decoded pixels (uint8, height x width x 3).
Measure = Callable[[np.ndarray], dict]
# Files decoded at once while the catalog is built.
IMAGE_READERS = 4


class CatalogError(CxrError):
    """An image or finding the catalog cannot accept; the message names it and its rows."""


def build(config: Config, raw_root: Path, names: list[str] | None = None) -> tuple[pd.DataFrame, dict]:
    """Merge sources ``names`` (default: ``sources.use``) into a catalog; return it with its data report.

    Each source's images are mapped to labels (findings the ``labels`` parameters do not list are
    left out and counted), opened and fingerprinted, grouped into duplicate groups, and their label
    conflicts settled as ``duplicates.conflicting_labels`` says.

    Parameters
    ----------
    config : Config
        The configuration (``sources``, ``labels``, ``duplicates``).
    raw_root : Path
        The folder holding each source's extracted folder ``raw_root/<name>``.
    names : list of str or None, optional
        The sources to merge; None: ``sources.use``.

    Returns
    -------
    catalog : pandas.DataFrame
        One row per image, in the catalog's column order, with its ``duplicate_group``.
    report : dict
        The data report (``reports/data/catalog.json``): counts per source, label, view and
        modality, metadata nulls, dropped rows, ``left_out_by_labels`` (images per finding no label
        lists), ``duplicates`` (how many duplicate groups, conflicting labels and what
        ``duplicates.conflicting_labels`` did) and ``duplicate_groups`` (every group of two or more
        images: ids, sources, patient ids, labels, the hash distances of its pairs).

    Raises
    ------
    CatalogError
        For an unmapped finding.
    cxr.data.image_files.ImageFileError
        For a file training could not read.
    cxr.data.duplicates.DuplicateError
        For conflicting labels when the params say so.
    SchemaError
        When a source's reader gives rows without the source columns.
    """
    names = config.sources.use if names is None else names
    tables = {name: read_source(name, raw_root / name, config) for name in names}
    for name, table in tables.items():
        schema.require_columns(table.images, schema.SOURCE_COLUMNS, f"source {name!r} (its reader's rows)")
    images = pd.concat([table.images for table in tables.values()], ignore_index=True)
    images["label"] = map_findings(images, config.labels)
    left_out = images["label"].isna()
    left_out_counts = images.loc[left_out, "finding"].value_counts().sort_index()
    images = images[~left_out].reset_index(drop=True)
    described = describe_images(
        images["path"].tolist(),
        measure=duplicates.fingerprint,
        measured=schema.FINGERPRINT_COLUMNS,
        at_least=duplicates.FINGERPRINT_SIDE,
    )
    catalog = pd.concat([images, described], axis=1)
    catalog["duplicate_group"], groups = duplicates.group(catalog, config.duplicates)
    catalog, settled = duplicates.settle_conflicts(catalog, groups, config.duplicates, where=f"sources {names}")
    catalog = schema.catalog_order(catalog)
    report = data_report(catalog, tables)
    report["left_out_by_labels"] = {finding: int(count) for finding, count in left_out_counts.items()}
    report["duplicates"] = settled
    report["duplicate_groups"] = groups
    return catalog, report


def read(path: Path) -> pd.DataFrame:
    """Load a catalog CSV written by a stage, with its columns typed.

    Parameters
    ----------
    path : Path
        The CSV file.

    Returns
    -------
    pandas.DataFrame
        The catalog: text columns as text, its integer columns (image size, orientation...) as integers.

    Raises
    ------
    SchemaError
        When a catalog column is missing.
    """
    return schema.read_catalog(path)


def map_findings(images: pd.DataFrame, labels: dict[str, str | None]) -> pd.Series:
    """The label of each row's finding (None: left out); unknown findings raise, naming them and their images.

    Later commits of the COVID collection write findings as a path, ``Pneumonia/Viral/COVID-19``:
    the whole text is looked up first, then its last part (``COVID-19``), so one map serves the
    April-2020 table and later ones.
    """
    findings = images["finding"].where(
        images["finding"].isin(list(labels)), images["finding"].str.rsplit("/", n=1).str[-1].str.strip()
    )
    unknown = images.loc[~findings.isin(list(labels))]
    if not unknown.empty:
        lines = [
            f"{finding!r} ({len(rows)} image(s), e.g. {rows['image_id'].head(3).tolist()})"
            for finding, rows in unknown.groupby("finding", sort=True)
        ]
        raise CatalogError(
            "finding(s) not in the `labels` map of params.yaml: "
            + "; ".join(lines)
            + ". Add each to `labels` with the label it means; unknown findings are never guessed."
        )
    return findings.map(labels)


def data_report(catalog: pd.DataFrame, tables: dict[str, SourceTable]) -> dict:
    """What the study printed about its data, and what it should have: counts and gaps."""

    def crosstab(column: str) -> dict:
        values = catalog[column].fillna("(none)")
        return pd.crosstab(catalog["source"], values).to_dict(orient="index")

    return {
        "images": len(catalog),
        "patients": int(catalog["patient_id"].nunique()),
        "images_per_source_label": crosstab("label"),
        "images_per_source_view": crosstab("view"),
        "images_per_source_modality": crosstab("modality"),
        "metadata_nulls": {
            name: {"rows": len(table.metadata), "nulls": table.metadata.isna().sum().to_dict()}
            for name, table in tables.items()
            if table.metadata is not None
        },
        "dropped_rows": [row for table in tables.values() for row in table.dropped],
    }


def filter_views(catalog: pd.DataFrame, rules: Filter) -> tuple[pd.DataFrame, dict]:
    """Keep ``rules.views`` and ``rules.modalities`` (exact match); return the kept rows and counts.

    Images from a source that records no view are kept or dropped by ``rules.missing_view``. An
    empty list of views or modalities keeps every one.

    Parameters
    ----------
    catalog : pandas.DataFrame
        The catalog, with ``view``, ``modality``, ``source`` and ``label`` columns.
    rules : Filter
        The ``filter`` parameters: ``views``, ``modalities`` and ``missing_view`` (``keep``/``drop``).

    Returns
    -------
    kept : pandas.DataFrame
        The rows kept, index reset.
    report : dict
        ``images_in``, ``images_kept``, ``dropped_by_rule`` (images dropped per rule),
        ``kept_without_view_record`` and ``kept_per_source_label`` (``{source: {label: images}}``).
    """
    no_view = catalog["view"].isna()
    kept = pd.Series(True, index=catalog.index)
    rules_applied = {}
    if rules.modalities:
        ok = catalog["modality"].isin(rules.modalities)
        rules_applied["modality not in filter.modalities"] = int((kept & ~ok).sum())
        kept &= ok
    if rules.views:
        ok = catalog["view"].isin(rules.views) | (no_view & (rules.missing_view == "keep"))
        rules_applied["view not in filter.views"] = int((kept & ~ok & ~no_view).sum())
        rules_applied["no view recorded (filter.missing_view=drop)"] = int((kept & ~ok & no_view).sum())
        kept &= ok
    report = {
        "images_in": len(catalog),
        "images_kept": int(kept.sum()),
        "dropped_by_rule": rules_applied,
        "kept_without_view_record": int((kept & no_view).sum()),
        "kept_per_source_label": pd.crosstab(catalog.loc[kept, "source"], catalog.loc[kept, "label"]).to_dict(
            orient="index"
        ),
    }
    return catalog.loc[kept].reset_index(drop=True), report


def describe_image(
    path: str, limits: Limits = DEFAULT_LIMITS, measure: Measure | None = None, at_least: int | None = None
) -> dict:
    """sha256, upright width and height, PIL mode and EXIF orientation (1-8; 1 when absent) of one
    training image (PNG or JPEG), decoded by training's decoder to prove training can read it (a JPEG
    at a reduced scale with ``at_least`` px on its shorter side); with ``measure``, also what it
    returns for the decoded upright pixels (uint8, height x width x 3)."""
    data = read_file(path, limits)
    decoded = decode(data, path, limits, TRAINING_FORMATS, at_least)
    found = decoded.header
    row = {
        "sha256": hashlib.sha256(data).hexdigest(),
        "width": found.width,
        "height": found.height,
        "mode": found.mode,
        "orientation": found.orientation,
    }
    if measure is not None:
        row.update(measure((decoded.pixels.numpy() * 255).round().astype(np.uint8)))
    return row


def describe_images(
    paths: list[str],
    limits: Limits = DEFAULT_LIMITS,
    measure: Measure | None = None,
    measured: tuple[str, ...] = (),
    at_least: int | None = None,
) -> pd.DataFrame:
    """:func:`describe_image` of every path (in parallel), one row each in the catalog's image columns
    and the ``measured`` keys that ``measure`` returns; the first file that cannot be read raises its
    :class:`ImageFileError`."""
    with ThreadPoolExecutor(IMAGE_READERS) as pool:
        rows = list(pool.map(lambda path: describe_image(path, limits, measure, at_least), paths))
    return pd.DataFrame(rows, columns=list(IMAGE_COLUMNS) + list(measured))
