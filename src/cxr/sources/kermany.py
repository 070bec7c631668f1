"""Kermany et al.'s paediatric pneumonia X-rays (Kaggle ``paultimothymooney/chest-xray-pneumonia``).

Layout: ``chest_xray/{train,test,val}/{NORMAL,PNEUMONIA}/<file>.jpeg``. The class is in the
folder and, for pneumonia, in the file name (``person12_bacteria_47.jpeg``,
``person3_virus_16.jpeg``); normal files are ``IM-0115-0001.jpeg`` or
``NORMAL2-IM-0927-0001.jpeg``. The Kaggle zip also carries a second copy of everything under
``chest_xray/chest_xray/`` and macOS ``__MACOSX`` forks: both are skipped so each image counts
once. No view is recorded (the images are paediatric anterior-posterior films).
"""

from __future__ import annotations

import re
from pathlib import Path, PurePosixPath

import pandas as pd

from cxr.sources.layout import SourceLayoutError, SourceTable, is_macos_junk

NAME = "kermany"
TOP = "chest_xray"
SPLITS = ("train", "test", "val")
PNEUMONIA_FILE = re.compile(r"^(?P<patient>person\d+)_(?P<kind>bacteria|virus)_\d+\.jpe?g$")
NORMAL_FILE = re.compile(r"^(?P<patient>(?:NORMAL2-)?IM-\d+)(?:-\d+)+\.jpe?g$")


def select_member(name: PurePosixPath) -> PurePosixPath | None:
    """Keep ``chest_xray/<split>/<class>/<file>`` only: not the nested copy, not macOS forks."""
    parts = name.parts
    if is_macos_junk(name) or len(parts) != 4 or parts[0] != TOP or parts[1] not in SPLITS:
        return None
    return name


def check_layout(root: Path) -> None:
    if not any((root / TOP / split).is_dir() for split in SPLITS):
        raise SourceLayoutError(f"{root}: no {TOP}/{{train,test,val}} folders in the archive")


def read(root: Path, params: object = None) -> SourceTable:
    """One row per image; the patient is ``personN`` or the ``IM-xxxx`` prefix (no params needed)."""
    rows = []
    for path in sorted((root / TOP).glob("*/*/*")):
        split, folder, filename = path.relative_to(root / TOP).parts
        if folder == "NORMAL":
            match = NORMAL_FILE.match(filename)
            finding = "NORMAL"
        elif folder == "PNEUMONIA":
            match = PNEUMONIA_FILE.match(filename)
            finding = match["kind"] if match else ""
        else:
            raise SourceLayoutError(f"{path}: unexpected class folder {folder!r}; expected NORMAL or PNEUMONIA")
        if match is None:
            raise SourceLayoutError(
                f"{path}: file name does not follow the {folder} naming "
                f"({'IM-xxxx-xxxx.jpeg' if folder == 'NORMAL' else 'personN_bacteria|virus_M.jpeg'})"
            )
        rows.append({
            "image_id": f"{NAME}/{split}/{folder}/{filename}",
            "source": NAME,
            "path": path.as_posix(),
            "patient_id": f"{NAME}:{match['patient']}",
            "finding": finding,
            "view": None,
            "modality": "X-ray",
            "upstream_split": split,
        })
    if not rows:
        raise SourceLayoutError(f"{root / TOP}: no images found")
    return SourceTable(images=pd.DataFrame(rows))
