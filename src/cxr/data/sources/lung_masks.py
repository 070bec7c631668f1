"""V7 Labs' lung outlines of the COVID-19 image collection (v7labs/covid-19-xray-dataset), pinned commit.

An annotation set, not an image source (:data:`cxr.data.sources.ANNOTATIONS`), fetched, verified and
extracted as the image sources are. Of GitHub's commit zip (``covid-19-xray-dataset-<commit>/``) only
``annotations/covid-only.zip`` is kept: one Darwin 1.0 JSON (:mod:`cxr.data.sources.darwin`) per
annotated image, ``<darwin id>.json``, naming the image by ``image.original_filename`` (its file name
in the collection's ``images/``, the join key) and outlining each lung as a "Lung" polygon in pixels
of the upright image. "Ignore" regions (burned-in markers, text) are not lungs. The semantic masks
beside it are named by V7 id, not by file name, and are left out.
"""

from __future__ import annotations

import io
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import numpy as np
import pandas as pd
from PIL import Image, ImageDraw

from cxr.core.config import ConfigError
from cxr.core.sections import Download, Synthetic
from cxr.data.sources import covid_chestxray
from cxr.data.sources.darwin import IGNORE, LUNG, LungOutline, OutlineSet, annotation, document, rasterise, read_zip
from cxr.data.sources.drawing import ADULT, draw_chest_with_lungs
from cxr.data.sources.fetch import fetch_archive
from cxr.data.sources.layout import SourceLayoutError, select_below_top
from cxr.data.sources.synthetic import image_size, upright_size, writestr

__all__ = [
    "NAME",
    "LungOutline",
    "OutlineSet",
    "Params",
    "check_layout",
    "join",
    "rasterise",
    "read_outlines",
    "select_member",
    "synthetic_archive",
    "upstream_archive",
]

NAME = "lung_masks"
MEMBER = "annotations/covid-only.zip"
OUTLINES = "covid-only.zip"
# The largest change of aspect ratio (as a log ratio, about 2%) an outline may be scaled across.
MAX_ASPECT_CHANGE = 0.02
INDEX_COLUMNS = ["image_id", "mask", "lung_share", "rescaled"]


@dataclass(frozen=True)
class Params:
    """``sources.lung_masks``: the pinned commit, fetched as a GitHub source's is (``url``: a mirror of
    the commit's zip; ``manifest_sha256``: the extracted files), and ``annotates``, the image source
    whose file names the outlines carry."""

    repo: str
    commit: str
    url: str | None
    sha256: str | None
    manifest_sha256: str | None
    annotates: str

    @property
    def archive_url(self) -> str:
        return self.url or f"https://github.com/{self.repo}/archive/{self.commit}.zip"


def select_member(name: PurePosixPath) -> PurePosixPath | None:
    """``annotations/covid-only.zip`` below the commit zip's top folder, as ``covid-only.zip``; nothing else."""
    return PurePosixPath(OUTLINES) if select_below_top(name, (MEMBER,), ()) is not None else None


def check_layout(root: Path) -> None:
    """The extracted folder must hold ``covid-only.zip``.

    Parameters
    ----------
    root : Path
        The extracted folder.

    Raises
    ------
    SourceLayoutError
        Naming ``root`` when the archive had no ``annotations/covid-only.zip``.
    """
    if not (root / OUTLINES).is_file():
        raise SourceLayoutError(f"{root}: no {OUTLINES}: the archive has no {MEMBER} below its top folder")


def upstream_archive(params: Params, scratch: Path, settings: Download) -> tuple[Path, str, str | None]:
    """The commit's zip (archive, where it came from, its pinned sha256), from GitHub or the mirror."""
    url = params.archive_url
    return fetch_archive(url, scratch, params.sha256, settings), url, params.sha256


def read_outlines(root: Path) -> OutlineSet:
    """The outlines of ``root/covid-only.zip`` (:func:`cxr.data.sources.darwin.read_zip`).

    Parameters
    ----------
    root : Path
        The extracted folder (``download_source("lung_masks", ...)``).

    Returns
    -------
    OutlineSet
        The outlines with a Lung polygon, by ``image.original_filename``; the files annotated without one.

    Raises
    ------
    SourceLayoutError
        Naming the member: a JSON above 5 MB, not valid, without ``image.original_filename``, ``width``
        or ``height``, with a malformed Lung path, or naming the file another member names (both named).
    """
    return read_zip(root / OUTLINES)


def join(rows: pd.DataFrame, outlines: OutlineSet, annotates: str, out: Path) -> tuple[pd.DataFrame, dict]:
    """A mask for each image of source ``annotates`` whose file name an outline carries: ``out/masks/<k>.png``.

    Parameters
    ----------
    rows : pandas.DataFrame
        Images (columns ``image_id``, ``source``, ``path``, and ``width``, ``height``: the upright size).
    outlines : OutlineSet
        :func:`read_outlines`'s.
    annotates : str
        The source whose images the outlines name (``sources.lung_masks.annotates``).
    out : Path
        Where ``masks/`` is written (8-bit PNGs, 255 in the lungs, ``k`` counting in image_id order);
        nothing else is written there.

    Returns
    -------
    tuple of pandas.DataFrame and dict
        The index (image_id, mask relative to ``out``, lung_share: the mask's share of the image,
        rescaled: whether the outline's size differs from the image's), by image_id; and the counts:
        outlines, without_lungs, joined, rescaled, images_of_source, images_without_outline,
        outlines_without_image, with the image ids left out: ``left_out_other_aspect`` (an outline
        whose aspect ratio differs from the image's by more than :data:`MAX_ASPECT_CHANGE`, e.g.
        drawn on an EXIF-turned image's stored pixels), ``left_out_outside_image`` (no lung pixel
        inside the image).

    Raises
    ------
    FileExistsError
        When ``out/masks`` already holds files.
    """
    images = rows[rows["source"] == annotates].sort_values("image_id", kind="stable")
    names = [PurePosixPath(path).name for path in images["path"]]
    masks = out / "masks"
    if masks.is_dir() and any(masks.iterdir()):
        raise FileExistsError(f"{masks}: already holds files; join writes into an empty folder")
    masks.mkdir(parents=True, exist_ok=True)
    entries, skipped = [], {"other_aspect": [], "outside_image": []}
    for image_id, name, width, height in zip(images["image_id"], names, images["width"], images["height"]):
        outline = outlines.outlines.get(name)
        if outline is None:
            continue
        width, height = int(width), int(height)
        # An outline drawn on another shape (the stored pixels of an EXIF-turned image, another crop)
        # would be stretched onto the wrong lungs: left out, and listed.
        if abs(np.log((outline.width / outline.height) / (width / height))) > MAX_ASPECT_CHANGE:
            skipped["other_aspect"].append(image_id)
            continue
        mask = rasterise(outline, width, height)
        if not mask.any():
            skipped["outside_image"].append(image_id)
            continue
        relative = PurePosixPath("masks") / f"{len(entries):05d}.png"
        Image.fromarray(mask.astype(np.uint8) * 255).save(out / relative, format="PNG")
        rescaled = (outline.width, outline.height) != (width, height)
        entries.append((image_id, relative.as_posix(), round(float(mask.mean()), 6), rescaled))
    index = pd.DataFrame(entries, columns=INDEX_COLUMNS).astype({"rescaled": bool})
    report = {
        "outlines": len(outlines.outlines),
        "without_lungs": len(outlines.without_lungs),
        "joined": len(index),
        "rescaled": int(index["rescaled"].sum()),
        "images_of_source": len(images),
        "images_without_outline": len(images) - len(index) - sum(len(ids) for ids in skipped.values()),
        "outlines_without_image": len(set(outlines.outlines) - set(names)),
        **{f"left_out_{reason}": ids for reason, ids in skipped.items()},
    }
    return index, report


# The stand-in: shares of the X-rays left unannotated (about a fifth upstream) and annotated without a lung.
UNANNOTATED_SHARE = 0.2
NO_LUNG_SHARE = 0.06
# Images V7 annotated that the pinned collection does not hold (added to it later).
LATER_ADDITIONS = ("1-s2.0-S1684118220300608-main.pdf-002.jpg", "ryct.2020200034.fig5-day7.jpeg")
FIRST_DARWIN_ID = 1676199


def synthetic_archive(folder: Path, params: Synthetic, source: Params, *, annotated: covid_chestxray.Params) -> Path:
    """A GitHub-style archive at ``source.commit`` outlining the lungs the COVID collection's stand-in drew.

    ``covid-19-xray-dataset-<commit>/``: README.md, ``annotations/covid-only.zip`` (a Darwin JSON per
    annotated X-ray, its exact lungs), two ``all-images-semantic-masks/<id>.png`` and placeholders of
    ``covid-only-coco.zip`` and ``all-images.zip``. As upstream: about a fifth of the X-rays (and every
    CT slice and shared radiograph) unannotated; a few annotations with only an "Ignore" complex
    polygon around the burned-in marker and a label; one Lung as a ``complex_polygon``; one outline at
    half its image's size; two annotations of images the collection does not hold.

    Parameters
    ----------
    folder : Path
        Where the zip is written.
    params : Synthetic
        The generator's settings (as the collection's stand-in got them).
    source : Params
        ``sources.lung_masks``.
    annotated : covid_chestxray.Params
        ``sources.covid_chestxray``, whose stand-in is outlined.

    Returns
    -------
    Path
        The zip, ``covid-19-xray-dataset-<commit>.zip``.

    Raises
    ------
    ConfigError
        When ``source.annotates`` is not the COVID collection (the only source the stand-in outlines).
    """
    if source.annotates != covid_chestxray.NAME:
        raise ConfigError(
            f"sources.lung_masks.annotates: {source.annotates!r}; the stand-in outlines {covid_chestxray.NAME} only"
        )
    rng = np.random.default_rng([params.seed, 12])
    drawn = covid_chestxray.drawings(params, annotated)
    xrays = [(row["filename"], upright_size(data), lungs.outlines) for row, data, lungs in drawn if lungs is not None]
    kept = [xray for xray, draw in zip(xrays, rng.random(len(xrays))) if draw >= UNANNOTATED_SHARE]
    order = [int(index) for index in rng.permutation(len(kept))]
    few = max(2, round(NO_LUNG_SHARE * len(kept)))
    no_lungs, complex_lung, halved = order[:few], order[few : few + 1], order[few + 1 : few + 2]
    for filename in LATER_ADDITIONS:
        size = image_size(rng, params)
        kept.append((filename, size, draw_chest_with_lungs(rng, *size, "covid", ADULT)[1].outlines))
    documents, masks, darwin_id = {}, {}, FIRST_DARWIN_ID
    for index, (filename, size, lungs) in enumerate(kept):
        darwin_id += int(rng.integers(1, 40))
        if index in halved:  # V7 annotated a copy at half the size
            half = (max(1, round(size[0] / 2)), max(1, round(size[1] / 2)))
            lungs, size = tuple(lung * np.divide(half, size) for lung in lungs), half
        marker = _marker_and_label(size)
        if index in no_lungs:
            annotations = [annotation(IGNORE, marker, complex_polygon=True)]
        elif index in complex_lung:
            annotations = [annotation(LUNG, list(lungs), complex_polygon=True)]
        else:
            annotations = [annotation(LUNG, [lung]) for lung in lungs]
            if rng.random() < 0.3:
                annotations.append(annotation(IGNORE, marker[:1]))
        documents[f"{darwin_id}.json"] = document(darwin_id, filename, size, annotations)
        if index not in no_lungs and len(masks) < 2:
            masks[darwin_id] = _semantic_mask(size, lungs, marker)
    inner = io.BytesIO()
    with zipfile.ZipFile(inner, "w") as outlines:
        for name, text in documents.items():
            writestr(outlines, name, text)
    top = f"covid-19-xray-dataset-{source.commit}"
    path = folder / f"{top}.zip"
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w") as archive:
        writestr(archive, f"{top}/README.md", "# COVID-19 X-ray lung annotations (synthetic stand-in)\n")
        for darwin_id, png in masks.items():
            writestr(archive, f"{top}/annotations/all-images-semantic-masks/{darwin_id}.png", png)
        writestr(archive, f"{top}/annotations/all-images.zip", b"PK\x03\x04 synthetic: all images' annotations")
        writestr(archive, f"{top}/annotations/covid-only-coco.zip", b"PK\x03\x04 synthetic: COCO export")
        writestr(archive, f"{top}/{MEMBER}", inner.getvalue())
    return path


def _marker_and_label(size: tuple[int, int]) -> list[np.ndarray]:
    """Boxes around the stand-in's burned-in marker (top right) and around a label (bottom left)."""
    boxes = ((0.83, 0.05, 0.93, 0.15), (0.04, 0.9, 0.2, 0.96))
    return [np.array([(x0, y0), (x1, y0), (x1, y1), (x0, y1)]) * size for x0, y0, x1, y1 in boxes]


def _semantic_mask(size: tuple[int, int], lungs: tuple[np.ndarray, ...], ignore: list[np.ndarray]) -> bytes:
    """A PNG as ``all-images-semantic-masks/`` holds: 0 background, 127 "Ignore", 255 "Lung"."""
    canvas = Image.new("L", size, 0)
    draw = ImageDraw.Draw(canvas)
    for polygon, value in [(polygon, 127) for polygon in ignore] + [(polygon, 255) for polygon in lungs]:
        draw.polygon([(x - 0.5, y - 0.5) for x, y in polygon], fill=value)
    buffer = io.BytesIO()
    canvas.save(buffer, format="PNG")
    return buffer.getvalue()
