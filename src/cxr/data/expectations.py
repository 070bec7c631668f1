"""The Great Expectations suites of the data stages: what each stage's tables must meet.

:func:`cxr.data.validation.validate` runs them; each builder here returns the expectations (or the
:class:`~cxr.data.validation.Table` objects) for one stage: merge and external (the catalog),
filter_pa (the kept views), split (no patient, identical image or duplicate group in two splits,
class counts and shares) and external (no duplicate group across the split and the external set).
"""

from __future__ import annotations

import pandas as pd

from cxr.core.schema import CATALOG_COLUMNS, CATALOG_REQUIRED, SPLIT_NAMES
from cxr.core.sections import Duplicates
from cxr.data import duplicates
from cxr.data.validation import Table, gxe


def catalog_expectations(labels: list[str], sources: list[str]) -> list[gxe.Expectation]:
    """After merge: the schema, one row per image, known labels, files that opened.

    Parameters
    ----------
    labels : list of str
        The labels a row may have.
    sources : list of str
        The sources a row may come from.

    Returns
    -------
    list of great_expectations.expectations.Expectation
        The catalog's expectations.
    """
    return [
        gxe.ExpectTableColumnsToMatchSet(
            column_set=list(CATALOG_COLUMNS), exact_match=False, description="catalog has every schema column"
        ),
        gxe.ExpectColumnValuesToBeUnique(column="image_id", description="image ids are unique"),
        *[
            gxe.ExpectColumnValuesToNotBeNull(column=column, description="required value present")
            for column in CATALOG_REQUIRED
        ],
        gxe.ExpectColumnValuesToBeInSet(column="label", value_set=labels, description="label is known"),
        gxe.ExpectColumnValuesToBeInSet(column="source", value_set=sources, description="source is configured"),
        gxe.ExpectColumnValuesToMatchRegex(column="sha256", regex=r"^[0-9a-f]{64}$", description="file was hashed"),
        *[
            gxe.ExpectColumnValuesToBeInTypeList(
                column=column, type_list=["int64", "int32"], description="image size is an integer"
            )
            for column in ("width", "height")
        ],
        gxe.ExpectColumnValuesToBeBetween(column="width", min_value=1, description="image opened"),
        gxe.ExpectColumnValuesToBeBetween(
            column="orientation", min_value=1, max_value=8, description="EXIF orientation is 1-8"
        ),
        gxe.ExpectColumnValuesToBeBetween(column="height", min_value=1, description="image opened"),
    ]


def filter_expectations(views: list[str], modalities: list[str], missing_view: str) -> list[gxe.Expectation]:
    """After filter_pa: only the kept views and modalities remain.

    Parameters
    ----------
    views : list of str
        ``filter.views`` (empty: no view expectation).
    modalities : list of str
        ``filter.modalities`` (empty: no modality expectation).
    missing_view : str
        ``filter.missing_view``; ``drop`` expects every row to record a view.

    Returns
    -------
    list of great_expectations.expectations.Expectation
        The expectations, always including that at least one row is left.
    """
    expectations: list[gxe.Expectation] = []
    if views:
        expectations.append(
            gxe.ExpectColumnValuesToBeInSet(column="view", value_set=views, description="only filter.views remain")
        )
    if modalities:
        expectations.append(
            gxe.ExpectColumnValuesToBeInSet(
                column="modality", value_set=modalities, description="only filter.modalities remain"
            )
        )
    if missing_view == "drop":
        expectations.append(gxe.ExpectColumnValuesToNotBeNull(column="view", description="no image without a view"))
    expectations.append(gxe.ExpectTableRowCountToBeBetween(min_value=1, description="something is left"))
    return expectations


def split_tables(split: pd.DataFrame, classes: list[str], fractions: dict[str, float], tolerance: float) -> list[Table]:
    """After split: no patient, identical image or duplicate group in two splits, every class everywhere, shares.

    Parameters
    ----------
    split : pandas.DataFrame
        The split table.
    classes : list of str
        The task's classes.
    fractions : dict of str to float
        The intended share of each split (``split.train``/``val``/``test``), 0-1.
    tolerance : float
        ``split.tolerance``: how far a class's share in a split may deviate from its fraction.

    Returns
    -------
    list of Table
        ``split``, ``patients``, ``identical_images``, ``duplicate_groups`` and ``class_counts``.
    """
    patients = split[["patient_id", "split"]].drop_duplicates()
    images = split[["sha256", "split"]].drop_duplicates()
    groups = split[["duplicate_group", "split"]].drop_duplicates()
    counts = (
        pd.crosstab(split["split"], split["class"])
        .reindex(index=list(SPLIT_NAMES), columns=classes, fill_value=0)
        .stack()
        .rename("images")
        .reset_index()
    )
    totals = counts.groupby("class")["images"].transform("sum")
    counts["deviation"] = (counts["images"] / totals.where(totals > 0) - counts["split"].map(fractions)).abs()
    counts["cell"] = counts["split"] + "/" + counts["class"]
    return [
        Table(
            "split",
            split,
            [
                gxe.ExpectColumnValuesToBeInSet(column="split", value_set=list(SPLIT_NAMES), description="known split"),
                gxe.ExpectColumnValuesToBeInSet(column="class", value_set=classes, description="class of the task"),
                gxe.ExpectColumnValuesToBeUnique(column="image_id", description="each image once"),
            ],
        ),
        Table(
            "patients",
            patients,
            [
                gxe.ExpectColumnValuesToBeUnique(column="patient_id", description="no patient in two splits"),
            ],
        ),
        Table(
            "identical_images",
            images,
            [
                gxe.ExpectColumnValuesToBeUnique(column="sha256", description="no identical image in two splits"),
            ],
        ),
        Table(
            "duplicate_groups",
            groups,
            [
                gxe.ExpectColumnValuesToBeUnique(
                    column="duplicate_group", description="no duplicate group in two splits"
                ),
            ],
        ),
        Table(
            "class_counts",
            counts,
            [
                gxe.ExpectColumnValuesToBeBetween(
                    column="images", min_value=1, description="every class in every split"
                ),
                gxe.ExpectColumnValuesToBeBetween(
                    column="deviation", max_value=tolerance, description="class share per split within split.tolerance"
                ),
            ],
        ),
    ]


def firewall_table(split: pd.DataFrame, external: pd.DataFrame, rules: Duplicates) -> Table:
    """After external: no radiograph is both in the split and in the external test set.

    The split's and the external set's images are grouped afresh, together
    (:func:`cxr.data.duplicates.group`), independently of how the external stage dropped copies;
    each joint group must lie on one side only.

    Parameters
    ----------
    split : pandas.DataFrame
        The split table.
    external : pandas.DataFrame
        The external test set.
    rules : Duplicates
        The ``duplicates`` parameters.

    Returns
    -------
    Table
        ``split_and_external``: one row per joint group and side, expected unique per group.
    """
    both = pd.concat([split.assign(side="split"), external.assign(side="external")], ignore_index=True)
    joint, _ = duplicates.group(both, rules)
    sides = both.assign(joint_group=joint)[["joint_group", "side"]].drop_duplicates()
    return Table(
        "split_and_external",
        sides,
        [
            gxe.ExpectColumnValuesToBeUnique(
                column="joint_group", description="no duplicate group spans the split and the external set"
            ),
        ],
    )
