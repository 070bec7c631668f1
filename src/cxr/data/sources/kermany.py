"""Kermany et al.'s paediatric pneumonia X-rays (Kaggle ``paultimothymooney/chest-xray-pneumonia``).

Layout: ``chest_xray/{train,test,val}/{NORMAL,PNEUMONIA}/<file>.jpeg``. The class is in the
folder and, for pneumonia, in the file name (``person12_bacteria_47.jpeg``,
``person3_virus_16.jpeg``, some with a further ``_K``: ``person447_virus_921_1.jpeg``); normal
files are ``IM-0115-0001.jpeg`` or ``NORMAL2-IM-0927-0001.jpeg``. Mendeley's version 3 renamed
them ``BACTERIA-<patient>-0001.jpeg``, ``VIRUS-...``, ``NORMAL-...``: both are read. The Kaggle
zip also carries a second copy of everything under ``chest_xray/chest_xray/`` and macOS
``__MACOSX`` forks: both are skipped so each image counts once. No view is recorded (the images
are paediatric anterior-posterior films).
"""

from __future__ import annotations

import os
import re
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Literal

import numpy as np
import pandas as pd

from cxr.core.sections import Download, Synthetic
from cxr.data.sources.drawing import CHILD, NEUTRAL, PATTERN_OF_FINDING, draw_chest
from cxr.data.sources.fetch import FetchError, fetch_archive
from cxr.data.sources.layout import SourceLayoutError, SourceTable, is_macos_junk
from cxr.data.sources.synthetic import encode, image_size, writestr

NAME = "kermany"
TOP = "chest_xray"
SPLITS = ("train", "test", "val")
MENDELEY_V3_TOP = "CellData"
CLASS_FOLDERS = ("NORMAL", "PNEUMONIA")
# Every naming the published versions use, per class folder; ``patient`` and (for pneumonia)
# ``kind`` are read from the name. Extensions are matched without regard to case.
NAMINGS = {
    "PNEUMONIA": (
        # Kaggle and Mendeley v2: person12_bacteria_47.jpeg, person447_virus_921_1.jpeg (a further _K).
        re.compile(r"^(?P<patient>person\d+)_(?P<kind>bacteria|virus)_\d+(?:_\d+)*\.(?i:jpe?g)$"),
        # Mendeley v3 renamed every file: BACTERIA-1008087-0001.jpeg, VIRUS-1003233-0001.jpeg.
        re.compile(r"^(?P<kind>BACTERIA|VIRUS)-(?P<patient>\d+)-\d+\.(?i:jpe?g)$"),
    ),
    "NORMAL": (
        # IM-0115-0001.jpeg, NORMAL2-IM-0927-0001.jpeg (the patient is the name without the shot).
        re.compile(r"^(?P<patient>(?:NORMAL2-)?IM-\d+)(?:-\d+)+\.(?i:jpe?g)$"),
        # Mendeley v3: NORMAL-1003233-0001.jpeg.
        re.compile(r"^NORMAL-(?P<patient>\d+)-\d+\.(?i:jpe?g)$"),
    ),
}
NAMING_HELP = {
    "PNEUMONIA": "personN_bacteria|virus_M[_K].jpeg or BACTERIA|VIRUS-N-M.jpeg",
    "NORMAL": "[NORMAL2-]IM-xxxx-xxxx.jpeg or NORMAL-N-M.jpeg",
}
UNKNOWN_SHOWN = 10


@dataclass(frozen=True)
class Params:
    """``sources.kermany``: from Kaggle (official API) or from a URL laid out as Kaggle's zip."""

    method: Literal["kaggle", "url"]
    dataset: str
    url: str | None
    sha256: str | None
    manifest_sha256: str | None
    # File names that follow none of the set's namings: error (all listed) | drop (listed in the report).
    unknown_names: Literal["error", "drop"]


def select_member(name: PurePosixPath) -> PurePosixPath | None:
    """Keep ``chest_xray/<split>/<class>/<file>`` only: not the nested copy, not macOS forks.

    Mendeley's version 3 (``ZhangLabData.zip``) holds the same tree under ``CellData/`` beside
    OCT scans: that prefix is dropped and the OCT scans are skipped.
    """
    parts = name.parts[1:] if name.parts[:1] == (MENDELEY_V3_TOP,) else name.parts
    if is_macos_junk(name) or len(parts) != 4 or parts[0] != TOP or parts[1] not in SPLITS:
        return None
    return PurePosixPath(*parts)


def check_layout(root: Path) -> None:
    if not any((root / TOP / split).is_dir() for split in SPLITS):
        raise SourceLayoutError(f"{root}: no {TOP}/{{train,test,val}} folders in the archive")


def parse_name(folder: str, filename: str) -> tuple[str, str] | None:
    """(patient, finding) of one file in class folder ``folder``; None if no naming fits."""
    for naming in NAMINGS[folder]:
        match = naming.match(filename)
        if match:
            finding = match["kind"].lower() if folder == "PNEUMONIA" else "NORMAL"
            return match["patient"], finding
    return None


def read(root: Path, params: Params) -> SourceTable:
    """One row per image; the class is the folder (and the name's bacteria/virus token), the
    patient is ``personN``, the ``IM-xxxx`` prefix or v3's number.

    Names that follow no known naming are all collected: an error listing them, or, with
    ``unknown_names: drop``, rows of the data report's ``dropped_rows``.
    """
    rows, unknown = [], []
    for path in sorted((root / TOP).glob("*/*/*")):
        split, folder, filename = path.relative_to(root / TOP).parts
        if folder not in CLASS_FOLDERS:
            raise SourceLayoutError(f"{path}: unexpected class folder {folder!r}; expected NORMAL or PNEUMONIA")
        parsed = parse_name(folder, filename)
        if parsed is None:
            unknown.append(path)
            continue
        patient, finding = parsed
        rows.append(
            {
                "image_id": f"{NAME}/{split}/{folder}/{filename}",
                "source": NAME,
                "path": path.as_posix(),
                "patient_id": f"{NAME}:{patient}",
                "finding": finding,
                "view": None,
                "modality": "X-ray",
                "upstream_split": split,
            }
        )
    if unknown and params.unknown_names == "error":
        shown = ", ".join(path.relative_to(root).as_posix() for path in unknown[:UNKNOWN_SHOWN])
        raise SourceLayoutError(
            f"{root / TOP}: {len(unknown)} file name(s) follow none of the Kermany namings "
            f"(PNEUMONIA: {NAMING_HELP['PNEUMONIA']}; NORMAL: {NAMING_HELP['NORMAL']}): {shown}"
            f"{', ...' if len(unknown) > UNKNOWN_SHOWN else ''}. Set sources.kermany.unknown_names=drop to leave "
            "them out (they are listed in the data report)"
        )
    if not rows:
        raise SourceLayoutError(f"{root / TOP}: no images found")
    dropped = [
        {
            "source": NAME,
            "line": "",
            "file": path.relative_to(root).as_posix(),
            "reason": "file name follows no Kermany naming (sources.kermany.unknown_names=drop)",
        }
        for path in unknown
    ]
    return SourceTable(images=pd.DataFrame(rows), dropped=dropped)


def upstream_archive(params: Params, scratch: Path, settings: Download) -> tuple[Path, str, str | None]:
    """The Kaggle zip (archive, where it came from, its pinned sha256), through the API or a mirror URL."""
    if params.method == "url":
        if not params.url:
            raise FetchError("sources.kermany.method is 'url' but sources.kermany.url is not set")
        return fetch_archive(params.url, scratch, params.sha256, settings), params.url, params.sha256
    return _kaggle_download(params.dataset, scratch), f"kaggle:{params.dataset}", params.sha256


def _kaggle_download(dataset: str, scratch: Path) -> Path:
    """Download through the official Kaggle API; its credentials are never logged or echoed."""
    has_env = bool(os.environ.get("KAGGLE_USERNAME") and os.environ.get("KAGGLE_KEY"))
    config_dir = Path(os.environ.get("KAGGLE_CONFIG_DIR", Path.home() / ".kaggle"))
    if not has_env and not (config_dir / "kaggle.json").is_file():
        raise FetchError(
            f"kaggle:{dataset}: no Kaggle credentials (set KAGGLE_USERNAME and KAGGLE_KEY, or put "
            f"kaggle.json in {config_dir}); or download from a mirror with "
            "sources.kermany.method=url and sources.kermany.url=<http(s) or file URL of the zip>"
        )
    try:
        from kaggle.api.kaggle_api_extended import KaggleApi
    except ImportError:
        raise FetchError("the Kaggle API is not installed: pip install -e '.[kaggle]'") from None
    try:
        api = KaggleApi()
        api.authenticate()
        api.dataset_download_files(dataset, path=str(scratch), unzip=False, quiet=False)
    except Exception as exc:  # the Kaggle client raises many types; report them without secrets
        raise FetchError(f"kaggle:{dataset}: download failed: {_redact(str(exc))}") from None
    archive = scratch / f"{dataset.split('/')[-1]}.zip"
    if not archive.is_file():
        raise FetchError(f"kaggle:{dataset}: the Kaggle API did not produce {archive.name}")
    return archive


def _redact(text: str) -> str:
    secret = os.environ.get("KAGGLE_KEY")
    return text.replace(secret, "***") if secret else text


# Shares of the stand-in's images in the zip's train, test and val folders.
SPLIT_SHARES = {"train": 0.8, "test": 0.15, "val": 0.05}


def synthetic_archive(folder: Path, params: Synthetic, source: Params) -> Path:
    """A Kaggle-style ``chest-xray-pneumonia.zip`` with the real one's quirks.

    The duplicate ``chest_xray/chest_xray`` tree, ``__MACOSX`` forks and ``.DS_Store`` files; names
    with a further ``_K``, three-block ``IM-0608-0001-0001.jpeg`` and ``NORMAL2-`` names; grey JPEGs
    stored as RGB (train/PNEUMONIA); byte-identical files under two names; a few images over
    2000 px. ``params.patients["kermany"]`` is per class.
    """
    path = folder / f"{source.dataset.split('/')[-1]}.zip"
    rng = np.random.default_rng([params.seed, 2])
    style = CHILD if params.source_shift else NEUTRAL
    files: dict[str, bytes] = {}
    splits = list(SPLIT_SHARES)
    shares = np.array(list(SPLIT_SHARES.values()))
    large_left = params.large_images

    def add(folder: str, filename: str, pattern: str) -> str:
        nonlocal large_left
        split = splits[int(rng.choice(len(splits), p=shares))]
        width, height = image_size(rng, params, large=large_left > 0)
        large_left -= 1
        # The real set's RGB files (grey in three channels) are all in train/PNEUMONIA.
        rgb = split == "train" and folder == "PNEUMONIA" and rng.random() < 0.1
        files[name := f"{split}/{folder}/{filename}"] = encode(
            draw_chest(rng, width, height, pattern, style), "jpeg-rgb" if rgb else "jpeg"
        )
        return name

    for index in range(params.patients[NAME]):
        prefix = f"NORMAL2-IM-{1000 + index:04d}" if index % 4 == 3 else f"IM-{100 + index:04d}"
        for shot in range(1, int(rng.integers(1, 3)) + 1):
            add("NORMAL", f"{prefix}-{shot:04d}.jpeg", "normal")
            if index % 9 == 4:  # IM-0608-0001-0001.jpeg beside IM-0608-0001.jpeg
                add("NORMAL", f"{prefix}-{shot:04d}-0001.jpeg", "normal")
    counter = {"bacteria": 0, "virus": 0}
    for index in range(2 * params.patients[NAME]):
        person = f"person{index + 1}"
        kinds = ["bacteria"] if index % 2 == 0 else ["virus"]
        if index % 10 == 5:
            kinds = ["bacteria", "virus"]
        for kind in kinds:
            for _ in range(int(rng.integers(1, 3))):
                counter[kind] += 1
                add("PNEUMONIA", f"{person}_{kind}_{counter[kind]}.jpeg", PATTERN_OF_FINDING[kind])
                if index % 7 == 3:  # person447_virus_921_1.jpeg: a further _K
                    add("PNEUMONIA", f"{person}_{kind}_{counter[kind]}_1.jpeg", PATTERN_OF_FINDING[kind])
    # Byte-identical images filed under a second patient (the real set has 30 such groups).
    for number, original in enumerate(sorted(files)[5::40], start=9001):
        split, folder, filename = original.split("/")
        kind = "virus" if "virus" in filename else "bacteria"
        copy = f"IM-{number}-0001.jpeg" if folder == "NORMAL" else f"person{number}_{kind}_{number}.jpeg"
        files[f"{split}/{folder}/{copy}"] = files[original]

    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in sorted(files.items()):
            writestr(archive, f"chest_xray/{name}", data)
        for name, data in sorted(files.items()):
            writestr(archive, f"chest_xray/chest_xray/{name}", data)
        for name in sorted(files)[::7]:
            folder, _, filename = name.rpartition("/")
            writestr(
                archive, f"chest_xray/__MACOSX/chest_xray/{folder}/._{filename}", b"\x00\x05\x16\x07 resource fork"
            )
        for split in splits:
            writestr(archive, f"chest_xray/{split}/.DS_Store", b"\x00\x00\x00\x01Bud1")
        writestr(archive, "chest_xray/.DS_Store", b"\x00\x00\x00\x01Bud1")
    return path
