"""V7 Darwin 1.0 JSON, the format of V7 Labs' lung outlines (:mod:`cxr.data.sources.lung_masks`): read
from a zip of them, drawn as masks, and written for the offline stand-in.

One JSON per image: ``image`` (``original_filename``, the file as its collection names it; ``width``,
``height``: the upright image the outlines were drawn on) and ``annotations``, each a class ``name``
("Lung", "Ignore") with a ``polygon`` (``{"path": [{"x", "y"}, ...]}``) or a ``complex_polygon``
(``{"path": [[...], [...]]}``, several paths). Coordinates are pixels with (0, 0) the top-left
corner of the top-left pixel, so pixel (column, row) is centred at (column + 0.5, row + 0.5).
"""

from __future__ import annotations

import json
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import numpy as np
from matplotlib.path import Path as MplPath

from cxr.data.sources.layout import SourceLayoutError, is_macos_junk

# The largest JSON read; upstream's are a few kB.
MAX_JSON_BYTES = 5_000_000
LUNG = "Lung"
IGNORE = "Ignore"

Polygon = tuple[tuple[float, float], ...]


@dataclass(frozen=True)
class LungOutline:
    """One image's lungs as annotated: per Lung annotation, its paths (one for a ``polygon``, one or
    more for a ``complex_polygon``, filled even-odd), each of (x, y) pixels of the upright image at
    ``width`` x ``height``; ``filename``: the image's file name (``image.original_filename``)."""

    filename: str
    darwin_id: str
    width: int
    height: int
    lungs: tuple[tuple[Polygon, ...], ...]


@dataclass(frozen=True)
class OutlineSet:
    """The outlines with at least one lung, by file name, and the files annotated without a lung (sorted)."""

    outlines: dict[str, LungOutline]
    without_lungs: tuple[str, ...]


def read_zip(path: Path) -> OutlineSet:
    """Every Darwin JSON in the zip at ``path``, read member by member (nothing is extracted).

    Parameters
    ----------
    path : Path
        A zip of ``<darwin id>.json`` files (folders and macOS junk are skipped).

    Returns
    -------
    OutlineSet
        The outlines with a Lung polygon, by ``image.original_filename``; the files without one.

    Raises
    ------
    SourceLayoutError
        Naming the member: a JSON above :data:`MAX_JSON_BYTES`, not valid, without
        ``image.original_filename``/``width``/``height``, with a malformed Lung path, or naming a file
        another member names (both are named); naming the zip when it is unreadable.
    """
    outlines, without, members = {}, [], {}
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as exc:
        raise SourceLayoutError(f"{path}: not a readable zip archive: {exc}") from None
    with archive:
        for info in sorted(archive.infolist(), key=lambda info: info.filename):
            name = PurePosixPath(info.filename)
            if info.is_dir() or is_macos_junk(name) or name.suffix.lower() != ".json":
                continue
            where = f"{path}: member {info.filename!r}"
            outline = _parse(where, name.stem, _read_member(archive, info, where))
            if outline.filename in members:
                raise SourceLayoutError(
                    f"{path}: members {members[outline.filename]!r} and {info.filename!r} both annotate "
                    f"{outline.filename!r}"
                )
            members[outline.filename] = info.filename
            if outline.lungs:
                outlines[outline.filename] = outline
            else:
                without.append(outline.filename)
    return OutlineSet(outlines, tuple(sorted(without)))


def _read_member(archive: zipfile.ZipFile, info: zipfile.ZipInfo, where: str) -> bytes:
    if info.file_size > MAX_JSON_BYTES:
        raise SourceLayoutError(f"{where} is {info.file_size} bytes, above the {MAX_JSON_BYTES}-byte bound")
    try:
        with archive.open(info) as reader:
            data = reader.read(MAX_JSON_BYTES + 1)
    except (zipfile.BadZipFile, EOFError, OSError, zlib.error) as exc:
        raise SourceLayoutError(f"{where} is corrupt or truncated: {exc}") from None
    if len(data) > MAX_JSON_BYTES:
        raise SourceLayoutError(f"{where} inflates past the {MAX_JSON_BYTES}-byte bound")
    return data


def _parse(where: str, darwin_id: str, data: bytes) -> LungOutline:
    """One JSON as a :class:`LungOutline` (without lungs when it has no Lung annotation)."""
    try:
        document = json.loads(data)
    except ValueError as exc:
        raise SourceLayoutError(f"{where} is not valid JSON: {exc}") from None
    image = document.get("image") if isinstance(document, dict) else None
    filename = image.get("original_filename") if isinstance(image, dict) else None
    if not isinstance(filename, str) or not filename:
        raise SourceLayoutError(f"{where} has no image.original_filename (a Darwin 1.0 JSON has one)")
    size = [image.get(key) for key in ("width", "height")]
    numbers = all(isinstance(value, int | float) and not isinstance(value, bool) for value in size)
    if not numbers or not all(float(value).is_integer() and value >= 1 for value in size):
        raise SourceLayoutError(f"{where}: image.width/height are {size}, not whole numbers of pixels")
    lungs = []
    try:
        for annotation in document.get("annotations") or []:
            if annotation.get("name") != LUNG:
                continue
            if "polygon" in annotation:
                paths = [annotation["polygon"]["path"]]
            elif "complex_polygon" in annotation:
                paths = annotation["complex_polygon"]["path"]
            else:
                raise ValueError("neither polygon nor complex_polygon")
            # A complex polygon's paths are filled even-odd: a path inside another is a hole (V7's
            # outer and inner contours); fewer than 3 points outline nothing.
            shape = tuple(tuple((float(p["x"]), float(p["y"])) for p in path) for path in paths if len(path) >= 3)
            if not np.isfinite(np.asarray([point for path in shape for point in path], float)).all():
                raise ValueError("a coordinate is not a finite number")
            lungs += [shape] if shape else []
    except (AttributeError, KeyError, TypeError, ValueError) as exc:
        raise SourceLayoutError(f"{where}: a Lung annotation is malformed ({type(exc).__name__}: {exc})") from None
    return LungOutline(filename, darwin_id, int(size[0]), int(size[1]), tuple(lungs))


def rasterise(outline: LungOutline, width: int, height: int) -> np.ndarray:
    """The lungs of ``outline`` filled at ``width`` x ``height`` (its polygons scaled when that differs).

    Parameters
    ----------
    outline : LungOutline
        The annotation; only its Lung polygons are drawn ("Ignore" regions are not lungs).
    width, height : int
        The image's upright size in pixels.

    Returns
    -------
    numpy.ndarray
        Bool, ``(height, width)``: True inside a lung.
    """
    scale = np.array([width / outline.width, height / outline.height])
    mask = np.zeros((height, width), bool)
    for shape in outline.lungs:
        mask |= fill([np.asarray(path, float) * scale for path in shape], width, height)
    return mask


def fill(polygons: list[np.ndarray], width: int, height: int) -> np.ndarray:
    """The pixels whose centre lies inside an odd number of the polygons (even-odd: a polygon inside
    another is a hole), by matplotlib's ``Path.contains_points`` over each polygon's bounding box.

    Pillow's ``ImageDraw.polygon`` is not used: it rounds the vertices to whole pixels and adds the
    edge pixels, about a pixel too wide all round.

    Parameters
    ----------
    polygons : list of numpy.ndarray
        ``(n, 2)`` (x, y) vertices each, in Darwin's pixel coordinates (pixel centres at + 0.5).
    width, height : int
        The mask's size.

    Returns
    -------
    numpy.ndarray
        Bool, ``(height, width)``.
    """
    inside = np.zeros((height, width), bool)
    for polygon in polygons:
        left, top = np.clip(np.floor(polygon.min(axis=0)).astype(int), 0, [width, height])
        right, bottom = np.clip(np.ceil(polygon.max(axis=0)).astype(int) + 1, 0, [width, height])
        rows, columns = np.mgrid[top:bottom, left:right]
        centres = np.column_stack([columns.ravel() + 0.5, rows.ravel() + 0.5])
        inside[top:bottom, left:right] ^= MplPath(polygon).contains_points(centres).reshape(rows.shape)
    return inside


def document(darwin_id: int, filename: str, size: tuple[int, int], annotations: list[dict]) -> str:
    """A Darwin 1.0 JSON as V7 exports it, for the stand-in.

    Parameters
    ----------
    darwin_id : int
        V7's image id (the JSON is ``<darwin_id>.json``; V7 stores the image as ``<darwin_id>.<ext>``).
    filename : str
        ``image.original_filename``.
    size : tuple of int
        ``image.width``, ``image.height``.
    annotations : list of dict
        :func:`annotation`'s.

    Returns
    -------
    str
        The JSON text.
    """
    image = {
        "width": size[0],
        "height": size[1],
        "original_filename": filename,
        "filename": f"{darwin_id}{PurePosixPath(filename).suffix}",
        "url": f"https://darwin.v7labs.com/api/images/{darwin_id}/original",
        "path": "/",
    }
    return json.dumps({"dataset": "covid-19-xray", "image": image, "annotations": annotations}, indent=2) + "\n"


def annotation(name: str, paths: list[np.ndarray], complex_polygon: bool = False) -> dict:
    """One annotation of class ``name``: a ``polygon`` of ``paths[0]``, or a ``complex_polygon`` of them all.

    Parameters
    ----------
    name : str
        The class (:data:`LUNG`, :data:`IGNORE`).
    paths : list of numpy.ndarray
        Polygons, ``(n, 2)`` (x, y) pixel vertices each.
    complex_polygon : bool, optional
        Write a ``complex_polygon`` (a list of paths) rather than a ``polygon``.

    Returns
    -------
    dict
        The annotation, coordinates rounded to 1/100 pixel.
    """
    points = [[{"x": round(float(x), 2), "y": round(float(y), 2)} for x, y in path] for path in paths]
    shape = {"complex_polygon": {"path": points}} if complex_polygon else {"polygon": {"path": points[0]}}
    return {"name": name, **shape}
