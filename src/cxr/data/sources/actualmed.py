"""The Actualmed COVID-19 chest X-rays (agchung/Actualmed-COVID-chestxray-dataset), pinned commit.

Adult X-rays, PA and AP, from a site that contributes nothing to the training sources: the
shortcut audit's external test set. ``metadata.csv`` names each file in ``imagename`` (not
``filename`` as the COVID collection does); ``finding`` is ``COVID-19``, ``No finding``, or
empty for inconclusive cases, which are left out and listed in the data report. The archive is
GitHub's commit zip: ``Actualmed-COVID-chestxray-dataset-<commit>/{metadata.csv,images/}``.
"""

from __future__ import annotations

from pathlib import Path, PurePosixPath

import pandas as pd

from cxr.core.config import GitHubSource
from cxr.data.sources.layout import (METADATA, SourceLayoutError, SourceTable, absent_row, check_metadata_file,
                                     read_metadata, select_metadata_and_images, settle_absent_files)

NAME = "actualmed"
REQUIRED_COLUMNS = ["patientid", "finding", "view", "imagename"]
EXTRA_COLUMNS = ["sex", "age"]


select_member = select_metadata_and_images
check_layout = check_metadata_file


def read(root: Path, params: GitHubSource) -> SourceTable:
    """One row per image with a finding; every image is an X-ray (the collection holds nothing else)."""
    metadata_path = root / METADATA
    metadata = read_metadata(metadata_path, REQUIRED_COLUMNS)
    rows, dropped, absent = [], [], []
    for index, record in metadata.iterrows():
        line = int(index) + 2
        if pd.isna(record["imagename"]) or pd.isna(record["patientid"]):
            raise SourceLayoutError(f"{metadata_path}: line {line}: empty patientid or imagename")
        relative = PurePosixPath("images") / record["imagename"]
        if pd.isna(record["finding"]):
            dropped.append({"source": NAME, "line": str(line), "file": str(relative),
                            "reason": "finding is empty (inconclusive)"})
            continue
        if not (root / relative).is_file():
            absent.append(absent_row(NAME, line, relative, METADATA))
            continue
        rows.append({
            "image_id": f"{NAME}/{record['imagename']}",
            "source": NAME,
            "path": (root / relative).as_posix(),
            "patient_id": f"{NAME}:{record['patientid']}",
            "finding": record["finding"],
            "view": record["view"],
            "modality": record["modality"] if "modality" in metadata.columns else "X-ray",
            **{column: record.get(column) for column in EXTRA_COLUMNS},
        })
    dropped += settle_absent_files(metadata_path, absent, params.missing_files, NAME)
    if not rows:
        raise SourceLayoutError(f"{metadata_path}: no image with a finding")
    return SourceTable(images=pd.DataFrame(rows), metadata=metadata, dropped=dropped)
