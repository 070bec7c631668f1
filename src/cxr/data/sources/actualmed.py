"""The Actualmed COVID-19 chest X-rays (agchung/Actualmed-COVID-chestxray-dataset), pinned commit.

Adult X-rays, PA and AP, from a site that contributes nothing to the training sources: the
shortcut audit's external test set. ``metadata.csv`` names each file in ``imagename`` (not
``filename`` as the COVID collection does); ``finding`` is ``COVID-19``, ``No finding``, or
empty for inconclusive cases, which are left out and listed in the data report. The archive is
GitHub's commit zip: ``Actualmed-COVID-chestxray-dataset-<commit>/{metadata.csv,images/}``.
"""

from __future__ import annotations

import zipfile
from pathlib import Path, PurePosixPath

import numpy as np
import pandas as pd

from cxr.core.sections import Synthetic
from cxr.data.sources.drawing import ADULT, NEUTRAL, OTHER_SITE, draw_chest
from cxr.data.sources.layout import (
    METADATA,
    GitHubParams,
    SourceLayoutError,
    SourceTable,
    absent_row,
    check_metadata_file,
    fetch_github_archive,
    read_metadata,
    select_metadata_and_images,
    settle_absent_files,
)
from cxr.data.sources.synthetic import (
    COPY_CHANGES,
    csv_text,
    encode,
    image_size,
    pick,
    republished,
    shared_radiographs,
    writestr,
)

NAME = "actualmed"
REQUIRED_COLUMNS = ["patientid", "finding", "view", "imagename"]
EXTRA_COLUMNS = ["sex", "age"]


Params = GitHubParams
select_member = select_metadata_and_images
check_layout = check_metadata_file
upstream_archive = fetch_github_archive


def read(root: Path, params: GitHubParams) -> SourceTable:
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
            dropped.append(
                {"source": NAME, "line": str(line), "file": str(relative), "reason": "finding is empty (inconclusive)"}
            )
            continue
        if not (root / relative).is_file():
            absent.append(absent_row(NAME, line, relative, METADATA))
            continue
        rows.append(
            {
                "image_id": f"{NAME}/{record['imagename']}",
                "source": NAME,
                "path": (root / relative).as_posix(),
                "patient_id": f"{NAME}:{record['patientid']}",
                "finding": record["finding"],
                "view": record["view"],
                "modality": record["modality"] if "modality" in metadata.columns else "X-ray",
                **{column: record.get(column) for column in EXTRA_COLUMNS},
            }
        )
    dropped += settle_absent_files(metadata_path, absent, params.missing_files, NAME)
    if not rows:
        raise SourceLayoutError(f"{metadata_path}: no image with a finding")
    return SourceTable(images=pd.DataFrame(rows), metadata=metadata, dropped=dropped)


METADATA_HEADER = [
    "patientid",
    "offset",
    "sex",
    "age",
    "finding",
    "survival",
    "temperature",
    "pO2 saturation",
    "view",
    "modality",
    "imagename",
    "artifacts/distortion",
    "notes",
]
# Findings of the Actualmed collection: about a quarter COVID-19, half normal, the rest inconclusive.
FINDINGS = {"COVID-19": 0.25, "No finding": 0.53, "": 0.22}
VIEWS = {"PA": 0.6, "AP": 0.4}


def synthetic_archive(folder: Path, params: Synthetic, source: GitHubParams) -> Path:
    """A GitHub-style archive at ``source.commit``: ``metadata.csv`` with ``imagename``, ``images/``.

    With the repository's other files (``metadata.xlsx``, ``images/SAMPLE.png``), ``ANON``
    patient ids, DICOM-UID file names with many dots, 8- and 16-bit PNGs; copies of the
    radiographs the COVID collection's stand-in also publishes (:func:`shared_radiographs`).
    """
    path = folder / f"Actualmed-COVID-chestxray-dataset-{source.commit}.zip"
    rng = np.random.default_rng([params.seed, 3])
    top = f"Actualmed-COVID-chestxray-dataset-{source.commit}"
    style = OTHER_SITE if params.source_shift else NEUTRAL
    rows, images = [], {}
    for patient in range(1, params.patients[NAME] + 1):
        finding = pick(rng, FINDINGS)
        pattern = (
            "covid"
            if finding == "COVID-19"
            else "normal"
            if finding == "No finding"
            else rng.choice(["covid", "normal"])
        )
        for shot in range(int(rng.integers(1, 3))):
            taken = f"202003{int(rng.integers(1, 32)):02d}"
            imagename = (
                f"{rng.choice(['CR', 'DX'])}.1.2.840.113564.{rng.integers(10**10):010d}."
                f"{taken}{rng.integers(10**12):012d}.{rng.integers(10**13):013d}.png"
            )
            width, height = image_size(rng, params)
            images[imagename] = encode(
                draw_chest(rng, width, height, pattern, style), "png-16bit" if rng.random() < 0.3 else "png"
            )
            row = dict.fromkeys(METADATA_HEADER, "")
            row.update(
                patientid=f"ANON{patient}",
                offset=str(shot),
                sex=rng.choice(["M", "F"]),
                age=str(int(rng.integers(25, 90))),
                finding=finding,
                view=pick(rng, VIEWS),
                modality="X-ray",
                imagename=imagename,
                notes=f"{'Inconclusive' if not finding else ''}, date taken (YYYYMMDD): {taken}",
            )
            rows.append(row)
    # Copies of radiographs the COVID collection also published (changed otherwise than its own copy).
    for index, image in enumerate(shared_radiographs(params, ADULT if params.source_shift else NEUTRAL)):
        imagename = (
            f"DX.1.2.840.113564.{rng.integers(10**10):010d}.20200401{index:012d}.{rng.integers(10**13):013d}.png"
        )
        images[imagename] = republished(image, COPY_CHANGES[(index + 2) % len(COPY_CHANGES)], "png")
        row = dict.fromkeys(METADATA_HEADER, "")
        row.update(
            patientid=f"ANON{params.patients[NAME] + 1 + index}",
            offset="0",
            sex=rng.choice(["M", "F"]),
            age=str(int(rng.integers(25, 90))),
            finding="COVID-19",
            view="PA",
            modality="X-ray",
            imagename=imagename,
            notes=", date taken (YYYYMMDD): 20200401",
        )
        rows.append(row)
    table = csv_text(rows, METADATA_HEADER)
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w") as archive:
        writestr(archive, f"{top}/README.md", "# Actualmed COVID-19 chest X-rays (synthetic stand-in)\n")
        writestr(archive, f"{top}/metadata.csv", table)
        writestr(archive, f"{top}/metadata.xlsx", b"PK\x03\x04 synthetic spreadsheet")
        writestr(archive, f"{top}/images/SAMPLE.png", encode(np.zeros((8, 8), np.uint8), "png"))
        for imagename, data in images.items():
            writestr(archive, f"{top}/images/{imagename}", data)
    return path
