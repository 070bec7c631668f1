"""Where the lungs are in a model input: real lung masks (the ``lung_masks`` stage's, V7 Labs'
outlines of the COVID collection) resized to the input, and the region the shortcut audit's
lungs-hidden classifier blanks (:class:`HiddenRegion`).

A mask file is an 8-bit PNG at the image's upright size, 255 inside the lungs; resized to the
model's square input exactly as the image is (:func:`cxr.learn.images.model_input`), it lies over
the same pixels.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
from PIL import Image
from scipy import ndimage

from cxr.core.errors import CxrError
from cxr.learn.images import center_box

MASK_INDEX = "index.csv"
# A pixel belongs to the lung atlas when at least this share of the training split's masks cover it.
ATLAS_SHARE = 0.5


class LungMaskError(CxrError):
    """A lung mask index that does not match its folder; the message names the file and line."""


def read_masks(folder: Path | None) -> dict[str, Path]:
    """The lung masks of the ``lung_masks`` stage, by image id.

    Parameters
    ----------
    folder : Path or None
        The stage's output folder (``index.csv``: ``image_id``, ``mask`` relative to the folder);
        None, or a folder without an index: no masks.

    Returns
    -------
    dict of str to Path
        Image id -> its mask file.

    Raises
    ------
    LungMaskError
        When the index lacks a column, or a row names no mask file that exists (file and line named).
    """
    if folder is None or not (folder / MASK_INDEX).is_file():
        return {}
    path = folder / MASK_INDEX
    index = pd.read_csv(path, dtype={"image_id": str, "mask": str})
    lacking = sorted({"image_id", "mask"} - set(index.columns))
    if lacking:
        raise LungMaskError(f"{path}: no column(s) {lacking}; found {list(index.columns)}")
    masks = {}
    for line, (image_id, mask) in enumerate(zip(index["image_id"], index["mask"]), start=2):
        if pd.isna(image_id) or pd.isna(mask) or not (folder / mask).is_file():
            raise LungMaskError(f"{path}: line {line}: no mask file {mask!r} for image {image_id!r}")
        masks[image_id] = folder / mask
    return masks


def input_mask(path: Path, size: int) -> np.ndarray:
    """One mask file resized, as the image is, to the model's ``size`` x ``size`` input (bool)."""
    with Image.open(path) as mask:
        resized = mask.convert("L").resize((size, size), Image.Resampling.BILINEAR)
    return np.asarray(resized) >= 128


def box_mask(size: int, fraction: float) -> np.ndarray:
    """The central square of side ``fraction`` (``audit.lung_box``) of a ``size`` px input (bool)."""
    mask = np.zeros((size, size), bool)
    box = center_box(size, fraction)
    mask[box, box] = True
    return mask


def dilate(mask: np.ndarray, margin: int) -> np.ndarray:
    """``mask`` (bool, side x side) grown by ``margin`` pixels in every direction (a disc)."""
    if margin <= 0:
        return mask
    y, x = np.ogrid[-margin : margin + 1, -margin : margin + 1]
    return ndimage.binary_dilation(mask, structure=x * x + y * y <= margin * margin)


@dataclass(frozen=True)
class HiddenRegion:
    """What the lungs-hidden classifier blanks in each image, at a ``size`` px input.

    ``kind``: ``mask``, each image's own real mask grown by ``margin`` pixels (only when every image
    has one: a blank whose shape differs between sources would itself tell the sources apart);
    ``atlas``, one region for every image, the pixels inside at least :data:`ATLAS_SHARE` of the
    training images' real masks, grown by ``margin``; ``box``, the central square
    (``audit.lung_box``), where no training image has a mask. ``masks``: the real masks it rests on.
    """

    kind: Literal["mask", "atlas", "box"]
    size: int
    margin: int
    masks: int
    fixed: np.ndarray | None = None
    paths: dict[str, Path] | None = None

    def fingerprint(self) -> str:
        """md5 of what is blanked (kind, size, margin, and the atlas or box pixels or every mask file):
        an interrupted lungs-hidden fit resumes only under the same blank."""
        digest = hashlib.md5(f"{self.kind} {self.size} {self.margin}".encode())
        if self.fixed is not None:
            digest.update(np.packbits(self.fixed).tobytes())
        for image_id in sorted(self.paths or {}):
            digest.update(image_id.encode() + self.paths[image_id].read_bytes())
        return digest.hexdigest()

    def blanks(self, frame: pd.DataFrame) -> np.ndarray:
        """The blanked pixels of each row's image: bool, shape (rows, size, size)."""
        if self.fixed is not None:
            return np.broadcast_to(self.fixed, (len(frame), self.size, self.size))
        own = [input_mask(self.paths[image_id], self.size) for image_id in frame["image_id"]]
        return np.stack([dilate(mask, self.margin) for mask in own])

    def coverage(self, frame: pd.DataFrame, masks: dict[str, Path], box: float) -> dict:
        """How much of the real lungs this region, and the central box, blank in ``frame``'s images.

        Parameters
        ----------
        frame : pandas.DataFrame
            Split rows (``image_id``); only those with a real mask count.
        masks : dict of str to Path
            The real masks, by image id (:func:`read_masks`).
        box : float
            The central box's side, a fraction of the image side (``audit.lung_box``).

        Returns
        -------
        dict
            ``images`` (with a real mask), ``lungs_blanked`` and ``lungs_blanked_min`` (mean and
            smallest share of each image's lung pixels this region blanks), ``box_lungs_blanked``
            (the mean share the central box would blank); shares are None without such images.
        """
        rows = frame[frame["image_id"].isin(masks)]
        if rows.empty:
            return {"images": 0, "lungs_blanked": None, "lungs_blanked_min": None, "box_lungs_blanked": None}
        lungs = np.stack([input_mask(masks[image_id], self.size) for image_id in rows["image_id"]])
        area = np.maximum(lungs.sum(axis=(1, 2)), 1)
        blanked = (lungs & self.blanks(rows)).sum(axis=(1, 2)) / area
        in_box = (lungs & box_mask(self.size, box)).sum(axis=(1, 2)) / area
        return {
            "images": len(rows),
            "lungs_blanked": float(blanked.mean()),
            "lungs_blanked_min": float(blanked.min()),
            "box_lungs_blanked": float(in_box.mean()),
        }


def hidden_region(split: pd.DataFrame, masks: dict[str, Path], size: int, box: float, margin: float) -> HiddenRegion:
    """The region the lungs-hidden classifier blanks for ``split`` (see :class:`HiddenRegion`).

    Parameters
    ----------
    split : pandas.DataFrame
        The split table (``image_id``, ``split``).
    masks : dict of str to Path
        Real lung masks by image id (:func:`read_masks`).
    size : int
        The model's input side, in pixels.
    box : float
        The central box's side, a fraction of the image side (``audit.lung_box``).
    margin : float
        How far the blank reaches beyond a real mask, a fraction of the image side
        (``audit.mask_margin``).

    Returns
    -------
    HiddenRegion
        Each image's own mask when all of ``split`` has one; else the atlas of the training rows'
        masks; else the central box.
    """
    pixels = int(round(margin * size))
    if masks and split["image_id"].isin(masks).all():
        return HiddenRegion("mask", size, pixels, len(split), paths=masks)
    train = split[(split["split"] == "train") & split["image_id"].isin(masks)]
    if train.empty:
        return HiddenRegion("box", size, 0, 0, fixed=box_mask(size, box))
    share = np.mean([input_mask(masks[image_id], size) for image_id in train["image_id"]], axis=0)
    return HiddenRegion("atlas", size, pixels, len(train), fixed=dilate(share >= ATLAS_SHARE, pixels))
