"""Kermany et al.'s paediatric pneumonia X-rays (Kaggle ``paultimothymooney/chest-xray-pneumonia``).

Layout: ``chest_xray/{train,test,val}/{NORMAL,PNEUMONIA}/<file>.jpeg``. The class is in the
folder and, for pneumonia, in the file name (``person12_bacteria_47.jpeg``,
``person3_virus_16.jpeg``, some with a further ``_K``: ``person447_virus_921_1.jpeg``); normal
files are ``IM-0115-0001.jpeg`` or ``NORMAL2-IM-0927-0001.jpeg``. Mendeley's version 3 renamed
them ``BACTERIA-<patient>-0001.jpeg``, ``VIRUS-...``, ``NORMAL-...``: both are read. The Kaggle
zip also carries a second copy of everything under ``chest_xray/chest_xray/`` and macOS
``__MACOSX`` forks: both are skipped so each image counts once. No view is recorded (the images are paediatric anterior-posterior films).
"""

from __future__ import annotations

import re
from pathlib import Path, PurePosixPath

import pandas as pd

from cxr.core.config import KermanySource
from cxr.data.sources.layout import SourceLayoutError, SourceTable, is_macos_junk

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


def read(root: Path, params: KermanySource) -> SourceTable:
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
        rows.append({
            "image_id": f"{NAME}/{split}/{folder}/{filename}",
            "source": NAME,
            "path": path.as_posix(),
            "patient_id": f"{NAME}:{patient}",
            "finding": finding,
            "view": None,
            "modality": "X-ray",
            "upstream_split": split,
        })
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
    dropped = [{"source": NAME, "line": "", "file": path.relative_to(root).as_posix(),
                "reason": "file name follows no Kermany naming (sources.kermany.unknown_names=drop)"}
               for path in unknown]
    return SourceTable(images=pd.DataFrame(rows), dropped=dropped)
