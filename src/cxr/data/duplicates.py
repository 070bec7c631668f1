"""Near-duplicate radiographs: one image published twice, re-encoded, resized, cropped, grey-converted
or with its contrast changed, under two patient ids or in two sources.

Public COVID-19 X-ray collections repackage one another and publish the same case twice (Roberts et
al., "Common pitfalls and recommendations for using machine learning to detect and prognosticate
for COVID-19 using chest radiographs and CT scans", Nature Machine Intelligence 3, 2021: their
"Frankenstein datasets"). A split that groups by patient id and identical bytes only lets such a
copy reach both training and test. Here every image gets a perceptual fingerprint once, as merge
decodes it, and images that are the same radiograph share a ``duplicate_group``.

The fingerprint is three hashes of the upright grey image, computed by ImageHash (J. Buchner's
``imagehash``, the perceptual hashes of Zauner 2010 and Krawetz 2011; chosen over our own code and
over CNN-embedding tools because it is small, pure Python on NumPy/SciPy/Pillow, and its hashes are
stable across releases):

- ``phash_64``: the 64-bit pHash (DCT of a 32 x 32 thumbnail). Chest radiographs all look alike to
  it, so it only proposes *candidate* pairs: at most :attr:`Duplicates.candidate_bits` bits apart.
- ``phash_256`` and ``dhash_256``: the 256-bit pHash (64 x 64 thumbnail) and 256-bit difference
  hash (17 x 16 gradient signs). A candidate pair is a *duplicate* only when both are at most
  :attr:`Duplicates.confirm_bits` bits apart: two independent, stricter tests.

Candidates are found by a vectorised XOR and popcount of the 64-bit hashes, block by block (every
pair compared in C, none in a Python loop; memory grows linearly with the images): at 50,000
images the scan takes seconds, far less than decoding the files (``bench/duplicates.py``).
Byte-identical files (equal sha256) are always duplicates. Groups are the connected components of
the duplicate pairs (SciPy's ``connected_components``), so a copy of a copy joins its original's group.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from cxr.core.errors import CxrError
from cxr.core.schema import FINGERPRINT_COLUMNS
from cxr.core.sections import Duplicates

# The shorter side, in pixels, merge decodes a JPEG at (at least) for its fingerprint: twice the
# largest thumbnail the hashes read (64 x 64), so Pillow's resize, not the decoder's scaling, sets it.
FINGERPRINT_SIDE = 128
# Rows of the candidate scan compared against every image at once (its XOR takes block x images x 8 bytes).
SCAN_BLOCK = 128


class DuplicateError(CxrError):
    """Duplicate groups the params say must stop the stage (``duplicates.conflicting_labels: error``)."""


def fingerprint(pixels: np.ndarray) -> dict[str, str]:
    """The perceptual fingerprint of an upright image.

    ``pixels``: uint8, (height, width) grey or (height, width, 3) RGB (converted to grey by Pillow's
    ITU-R 601 luma, as ImageHash does). Returns ``{"phash_64": 16 hex digits, "phash_256": 64 hex
    digits, "dhash_256": 64 hex digits}``.
    """
    import imagehash  # here: stages that only read the catalog never load it
    from PIL import Image

    image = Image.fromarray(np.ascontiguousarray(pixels)).convert("L")
    return {
        "phash_64": str(imagehash.phash(image, hash_size=8)),
        "phash_256": str(imagehash.phash(image, hash_size=16)),
        "dhash_256": str(imagehash.dhash(image, hash_size=16)),
    }


def hash_words(hexes: pd.Series | list[str]) -> np.ndarray:
    """Hex hashes of one length -> uint64 array (images, bits / 64), for vectorised comparison."""
    hexes = list(hexes)
    if not hexes:
        return np.zeros((0, 1), np.uint64)
    width = len(hexes[0])
    data = bytes.fromhex("".join(hexes))
    return np.frombuffer(data, dtype=">u8").astype(np.uint64).reshape(len(hexes), width // 16)


def distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Hamming distances (bits) between rows of two ``hash_words`` arrays of equal shape."""
    return np.bitwise_count(a ^ b).sum(axis=-1).astype(np.int64)


@dataclass(frozen=True)
class Pairs:
    """Duplicate pairs: row positions ``left`` and ``right`` and their three distances (bits)."""

    left: np.ndarray
    right: np.ndarray
    phash_64: np.ndarray
    phash_256: np.ndarray
    dhash_256: np.ndarray

    def __len__(self) -> int:
        return len(self.left)


def near_pairs(first: pd.DataFrame, second: pd.DataFrame | None, rules: Duplicates) -> Pairs:
    """Pairs of rows that are the same radiograph, by their fingerprint columns.

    ``second`` None: pairs within ``first`` (``left < right``); else pairs across the two tables
    (``left`` indexes ``first``, ``right`` indexes ``second``). Candidates: ``phash_64`` at most
    ``rules.candidate_bits`` apart; confirmed when ``phash_256`` and ``dhash_256`` are each at
    most ``rules.confirm_bits`` apart.
    """
    within = second is None
    second = first if second is None else second
    words = {column: (hash_words(first[column]), hash_words(second[column])) for column in FINGERPRINT_COLUMNS}
    coarse_a, coarse_b = words["phash_64"][0][:, 0], words["phash_64"][1][:, 0]
    found: dict[str, list[np.ndarray]] = {
        name: [np.zeros(0, np.int64)] for name in ("left", "right", *FINGERPRINT_COLUMNS)
    }
    for start in range(0, len(coarse_a), SCAN_BLOCK):
        offset = start + 1 if within else 0  # within one table: only the pairs left < right
        block = coarse_a[start : start + SCAN_BLOCK, None] ^ coarse_b[None, offset:]
        left, right = np.nonzero(np.bitwise_count(block) <= rules.candidate_bits)
        left, right = left + start, right + offset
        if within:
            left, right = left[left < right], right[left < right]
        # Confirm the block's candidates at once, so memory stays block x images however many there are.
        bits = {column: distances(words[column][0][left], words[column][1][right]) for column in FINGERPRINT_COLUMNS}
        confirmed = (bits["phash_256"] <= rules.confirm_bits) & (bits["dhash_256"] <= rules.confirm_bits)
        for name, values in (("left", left), ("right", right), *bits.items()):
            found[name].append(values[confirmed])
    return Pairs(*(np.concatenate(found[name]) for name in ("left", "right", *FINGERPRINT_COLUMNS)))


def identical_pairs(frame: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """Row positions of byte-identical files (equal sha256): each repeat linked to the first of its kind."""
    codes, _ = pd.factorize(frame["sha256"])
    first = pd.Series(np.arange(len(frame))).groupby(codes).transform("min").to_numpy()
    repeat = first != np.arange(len(frame))
    return first[repeat], np.nonzero(repeat)[0]


def group(frame: pd.DataFrame, rules: Duplicates) -> tuple[pd.Series, list[dict]]:
    """The ``duplicate_group`` of every row and the groups of more than one image.

    ``frame``: rows by image, with ``image_id``, ``sha256``, ``source``, ``patient_id``, ``label``
    and the fingerprint columns, in any order. A row's group is the smallest ``image_id`` of its
    group (its own id when it has no duplicate), so groups are stable names. Each listed group is
    ``{"group", "images", "sources", "patient_ids", "labels", "conflicting_labels", "pairs"}``
    with ``pairs`` the confirmed links ``{"images": [a, b], "phash_64", "phash_256", "dhash_256"}``
    (bits; identical files have 0), sorted.
    """
    frame = frame.reset_index(drop=True)
    pairs = near_pairs(frame, None, rules)
    same_left, same_right = identical_pairs(frame)
    left, right = np.concatenate([pairs.left, same_left]), np.concatenate([pairs.right, same_right])
    graph = coo_matrix((np.ones(len(left)), (left, right)), shape=(len(frame), len(frame)))
    _, component = connected_components(graph, directed=False)
    ids = frame["image_id"].to_numpy()
    names = pd.Series(ids).groupby(component).transform("min")
    links: dict[str, list[dict]] = {}
    for index in range(len(pairs)):
        a, b = sorted((ids[pairs.left[index]], ids[pairs.right[index]]))
        links.setdefault(names[pairs.left[index]], []).append(
            {"images": [a, b], **{column: int(getattr(pairs, column)[index]) for column in FINGERPRINT_COLUMNS}}
        )
    listed = []
    for name, rows in frame.groupby(names.to_numpy(), sort=True):
        if len(rows) < 2:
            continue
        labels = sorted(rows["label"].dropna().unique().tolist())
        listed.append(
            {
                "group": name,
                "images": sorted(rows["image_id"]),
                "sources": sorted(rows["source"].unique()),
                "patient_ids": sorted(rows["patient_id"].unique()),
                "labels": labels,
                "conflicting_labels": len(labels) > 1,
                "pairs": sorted(links.get(name, []), key=lambda link: link["images"]),
            }
        )
    return pd.Series(names.to_numpy(), index=frame.index, name="duplicate_group"), listed


def settle_conflicts(
    catalog: pd.DataFrame, groups: list[dict], rules: Duplicates, where: str
) -> tuple[pd.DataFrame, dict]:
    """Apply ``rules.conflicting_labels`` to the groups whose images carry different labels.

    ``report``: keep them (listed); ``drop``: remove every image of such a group; ``error``: raise
    :class:`DuplicateError` naming the groups and their labels. Returns the catalog and
    ``{"groups": n, "images_in_groups": n, "conflicting_groups": [names], "dropped_images": n}``.
    """
    conflicting = [entry for entry in groups if entry["conflicting_labels"]]
    summary = {
        "groups": len(groups),
        "images_in_groups": sum(len(entry["images"]) for entry in groups),
        "conflicting_groups": [entry["group"] for entry in conflicting],
        "conflicting_labels": rules.conflicting_labels,
        "dropped_images": 0,
    }
    if conflicting and rules.conflicting_labels == "error":
        listed = "; ".join(
            f"{entry['group']} ({', '.join(entry['images'])}: labels {entry['labels']})" for entry in conflicting[:5]
        )
        raise DuplicateError(
            f"{where}: {len(conflicting)} duplicate group(s) whose images carry different labels: "
            f"{listed}. Fix the labels upstream, or set duplicates.conflicting_labels to drop or report"
        )
    if conflicting and rules.conflicting_labels == "drop":
        dropped = catalog["duplicate_group"].isin(summary["conflicting_groups"])
        summary["dropped_images"] = int(dropped.sum())
        catalog = catalog[~dropped].reset_index(drop=True)
    return catalog, summary


def spanning(first: pd.DataFrame, second: pd.DataFrame, rules: Duplicates) -> pd.DataFrame:
    """The rows of ``second`` that are the same radiograph as a row of ``first`` (identical bytes or a
    confirmed near-duplicate), each with the first such image of ``first`` in column ``duplicate_of``."""
    first, second = first.reset_index(drop=True), second.reset_index(drop=True)
    pairs = near_pairs(first, second, rules)
    near = pd.DataFrame({"row": pairs.right, "duplicate_of": first["image_id"].to_numpy()[pairs.left]})
    identical = (
        second[["sha256"]]
        .reset_index(names="row")
        .merge(first[["sha256", "image_id"]].rename(columns={"image_id": "duplicate_of"}), on="sha256")
    )
    matches = (
        pd.concat([near, identical[["row", "duplicate_of"]]])
        .sort_values(["row", "duplicate_of"])
        .drop_duplicates("row")
    )
    return second.loc[matches["row"]].assign(duplicate_of=matches["duplicate_of"].to_numpy())
