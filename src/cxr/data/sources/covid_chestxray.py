"""The COVID-19 image data collection (ieee8023/covid-chestxray-dataset) at a pinned commit.

Its ``metadata.csv`` has one row per image; rows in ``folder == "volumes"`` are CT volumes,
not images, and are left out. The archive is GitHub's commit zip, whose top folder is
``covid-chestxray-dataset-<commit>/``.
"""

from __future__ import annotations

from pathlib import Path, PurePosixPath

import pandas as pd

from cxr.core.config import GitHubSource
from cxr.data.sources.layout import (METADATA, SourceLayoutError, SourceTable, absent_row, check_metadata_file,
                                     read_metadata, select_metadata_and_images, settle_absent_files)

NAME = "covid_chestxray"
REQUIRED_COLUMNS = ["patientid", "finding", "view", "modality", "folder", "filename"]
EXTRA_COLUMNS = {"sex": "sex", "age": "age"}


select_member = select_metadata_and_images
check_layout = check_metadata_file


def read(root: Path, params: GitHubSource) -> SourceTable:
    """Rows for the images ``metadata.csv`` lists; rows without a file per ``missing_files``."""
    metadata_path = root / METADATA
    metadata = read_metadata(metadata_path, REQUIRED_COLUMNS)
    empty = metadata[REQUIRED_COLUMNS[:2] + ["folder", "filename"]].isna().any(axis=1)
    if empty.any():
        lines = (metadata.index[empty] + 2).tolist()
        raise SourceLayoutError(
            f"{metadata_path}: rows with an empty patientid, finding, folder or filename at lines {lines[:20]}"
        )

    dropped: list[dict[str, str]] = []
    rows = []
    missing = []
    for index, record in metadata.iterrows():
        line = int(index) + 2
        if record["folder"] != "images":
            dropped.append({"source": NAME, "line": str(line), "file": f"{record['folder']}/{record['filename']}",
                            "reason": f"folder={record['folder']} is not an image folder (CT volume)"})
            continue
        relative = PurePosixPath("images") / record["filename"]
        if not (root / relative).is_file():
            missing.append(absent_row(NAME, line, relative, METADATA))
            continue
        rows.append({
            "image_id": f"{NAME}/{record['filename']}",
            "source": NAME,
            "path": (root / relative).as_posix(),
            "patient_id": f"{NAME}:{record['patientid']}",
            "finding": record["finding"],
            "view": record["view"],
            "modality": record["modality"],
            **{column: record.get(original) for column, original in EXTRA_COLUMNS.items()},
        })
    missing = settle_absent_files(metadata_path, missing, params.missing_files, NAME)
    return SourceTable(images=pd.DataFrame(rows), metadata=metadata, dropped=dropped + missing)
