"""The audit's lungs-hidden test: the classifier retrained and tested on images whose lungs are
blanked (Maguolo & Nanni 2021), and what the blank covered of the real lungs."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from cxr.core.backbones import Backbone
from cxr.core.config import Config
from cxr.core.schema import split_part
from cxr.learn import training
from cxr.learn.lungs import HiddenRegion
from cxr.report.audit.measures import predicted_table


def lungs_hidden(
    backbone: Backbone,
    split: pd.DataFrame,
    classes: list[str],
    size: int,
    config: Config,
    work_dir: Path,
    region: HiddenRegion,
) -> pd.DataFrame:
    """Train and test the classifier on images whose lungs are blanked; its test predictions.

    The test follows Maguolo & Nanni (2021): a classifier that still scores above chance without the
    lungs uses something else.

    Parameters
    ----------
    backbone : Backbone
        The backbone's registry entry.
    split : pandas.DataFrame
        The split table.
    classes : list of str
        The task's classes.
    size : int
        The input side, in pixels.
    config : Config
        The configuration (``train``, ``seed``).
    work_dir : Path
        The fit's checkpoint folder.
    region : HiddenRegion
        What is blanked (:func:`cxr.learn.lungs.hidden_region`).

    Returns
    -------
    pandas.DataFrame
        One row per test image: actual, predicted and ``p_<class>``.

    References
    ----------
    Maguolo, G. & Nanni, L. (2021). A critic evaluation of methods for COVID-19 automatic detection
    from X-ray images.
    """
    model, _ = training.train_classifier(
        backbone, split, classes, size, config.train, config.seed, work_dir, hidden=region
    )
    return predicted_table(model, split_part(split, "test"), classes, size, config, hidden=region)


def region_report(region: HiddenRegion, split: pd.DataFrame, masks: dict, box: float) -> dict:
    """What the lungs-hidden classifier blanked, for the audit report.

    Parameters
    ----------
    region : HiddenRegion
        The blanked region (:func:`cxr.learn.lungs.hidden_region`).
    split : pandas.DataFrame
        The split table.
    masks : dict of str to Path
        The real lung masks, by image id.
    box : float
        The central box's side, a fraction of the image side (``audit.lung_box``).

    Returns
    -------
    dict
        ``kind`` (``mask``, ``atlas`` or ``box``), ``masks`` (the real masks it rests on),
        ``margin_px`` (its growth beyond them, pixels at the input size), ``images_with_mask``
        (split images with a real mask) and, over the test images with one, ``test_images``,
        ``lungs_blanked``, ``lungs_blanked_min`` and ``box_lungs_blanked``
        (:meth:`cxr.learn.lungs.HiddenRegion.coverage`).
    """
    coverage = region.coverage(split_part(split, "test"), masks, box)
    return {
        "kind": region.kind,
        "masks": region.masks,
        "margin_px": region.margin,
        "images_with_mask": int(split["image_id"].isin(masks).sum()),
        "test_images": coverage.pop("images"),
        **coverage,
    }
