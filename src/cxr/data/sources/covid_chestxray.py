"""The COVID-19 image data collection (ieee8023/covid-chestxray-dataset) at a pinned commit.

Its ``metadata.csv`` has one row per image; rows in ``folder == "volumes"`` are CT volumes,
not images, and are left out. The archive is GitHub's commit zip, whose top folder is
``covid-chestxray-dataset-<commit>/``.
"""

from __future__ import annotations

import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Literal

import numpy as np
import pandas as pd

from cxr.core.checks import bounded
from cxr.core.sections import Synthetic
from cxr.data.sources import drawing
from cxr.data.sources.drawing import ADULT, NEUTRAL, PATTERN_OF_FINDING, draw_chest_with_lungs, draw_ct_slice
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
    original_bytes,
    pick,
    republished,
    shared_radiographs,
    writestr,
)

NAME = "covid_chestxray"
REQUIRED_COLUMNS = ["patientid", "finding", "view", "modality", "folder", "filename"]
EXTRA_COLUMNS = {"sex": "sex", "age": "age"}
Drawn = tuple[dict[str, str], bytes | None, drawing.DrawnLungs | None]  # a stand-in's row, file, lungs


@dataclass(frozen=True)
class StandIn:
    """``sources.covid_chestxray.synthetic``: how the offline stand-in draws the collection."""

    # Share of the patients who also have a CT series (1-4 axial or coronal slices).
    ct_share: float = bounded(low=0, high=1)
    # flat, as the pinned April-2020 commit writes findings; hierarchical, as later commits do.
    findings: Literal["flat", "hierarchical"]


@dataclass(frozen=True)
class Params(GitHubParams):
    """``sources.covid_chestxray``: the pinned commit (:class:`GitHubParams`) and its stand-in's knobs."""

    synthetic: StandIn


select_member = select_metadata_and_images
check_layout = check_metadata_file
upstream_archive = fetch_github_archive


def read(root: Path, params: Params) -> SourceTable:
    """Rows for the images ``metadata.csv`` lists; rows without a file per ``missing_files``."""
    metadata_path = root / METADATA
    metadata = read_metadata(metadata_path, REQUIRED_COLUMNS)
    empty = metadata[REQUIRED_COLUMNS[:2] + ["folder", "filename"]].isna().any(axis=1)
    if empty.any():
        lines = (metadata.index[empty] + 2).tolist()
        raise SourceLayoutError(
            f"{metadata_path}: rows with an empty patientid, finding, folder or filename at lines {lines[:20]}"
        )

    rows, missing, dropped = [], [], []
    for index, record in metadata.iterrows():
        line = int(index) + 2
        if record["folder"] != "images":
            file = f"{record['folder']}/{record['filename']}"
            reason = f"folder={record['folder']} is not an image folder (CT volume)"
            dropped.append({"source": NAME, "line": str(line), "file": file, "reason": reason})
            continue
        relative = PurePosixPath("images") / record["filename"]
        if not (root / relative).is_file():
            missing.append(absent_row(NAME, line, relative, METADATA))
            continue
        rows.append(
            {
                "image_id": f"{NAME}/{record['filename']}",
                "source": NAME,
                "path": (root / relative).as_posix(),
                "patient_id": f"{NAME}:{record['patientid']}",
                "finding": record["finding"],
                "view": record["view"],
                "modality": record["modality"],
                **{column: record.get(original) for column, original in EXTRA_COLUMNS.items()},
            }
        )
    missing = settle_absent_files(metadata_path, missing, params.missing_files, NAME)
    return SourceTable(images=pd.DataFrame(rows), metadata=metadata, dropped=dropped + missing)


# The April-2020 header of the COVID collection's metadata.csv, spaces and trailing comma included.
METADATA_HEADER = (
    "patientid,offset,sex,age,finding,survival,intubated,went_icu,needed_supplemental_o2,extubated,"
    "temperature,pO2 saturation,leukocyte count,neutrophil count,lymphocyte count,view,modality,date,"
    "location,folder,filename,doi, url,license,clinical notes,other notes,"
).split(",")

# The header of later commits: snake_case names, RT_PCR_positive and ICU columns, a trailing comma.
LATER_METADATA_HEADER = (
    "patientid,offset,sex,age,finding,RT_PCR_positive,survival,intubated,intubation_present,went_icu,"
    "in_icu,needed_supplemental_O2,extubated,temperature,pO2_saturation,leukocyte_count,neutrophil_count,"
    "lymphocyte_count,view,modality,date,location,folder,filename,doi,url,license,clinical_notes,"
    "other_notes,"
).split(",")

# Findings of the COVID collection in April 2020 with their rough shares of patients.
COVID_FINDINGS = {
    "COVID-19": 0.66,
    "COVID-19, ARDS": 0.06,
    "SARS": 0.06,
    "Streptococcus": 0.05,
    "Klebsiella": 0.02,
    "Legionella": 0.02,
    "Chlamydophila": 0.02,
    "E.Coli": 0.02,
    "Pneumocystis": 0.04,
    "ARDS": 0.03,
    "No Finding": 0.02,
}
# Later commits: findings as paths, and findings the April table did not have ("Herpes " with its
# trailing space, as upstream; "todo": not yet labelled), with rough shares of patients.
LATER_FINDINGS = {
    "Pneumonia/Viral/COVID-19": 0.62,
    "Pneumonia/Viral/SARS": 0.04,
    "Pneumonia/Viral/MERS-CoV": 0.02,
    "Pneumonia/Viral/Influenza/H1N1": 0.01,
    "Pneumonia/Viral/Herpes ": 0.01,
    "Pneumonia/Bacterial/Streptococcus": 0.04,
    "Pneumonia/Bacterial/Klebsiella": 0.02,
    "Pneumonia/Bacterial/Staphylococcus/MRSA": 0.01,
    "Pneumonia/Bacterial": 0.02,
    "Pneumonia/Fungal/Pneumocystis": 0.04,
    "Pneumonia/Lipoid": 0.02,
    "Tuberculosis": 0.03,
    "Pneumonia": 0.03,
    "todo": 0.04,
    "No Finding": 0.05,
}
# What each later finding looks like when drawn.
LATER_PATTERNS = {"Viral/COVID-19": "covid", "Bacterial": "bacteria", "Viral": "viral", "Fungal": "perihilar"}

XRAY_VIEWS = {"PA": 0.55, "AP": 0.2, "AP Supine": 0.15, "L": 0.1}
CT_VIEWS = ("Axial", "Coronal")
# Slices of one CT series: case reports show one to four, with their finding, one patient each.
CT_SLICES = (1, 4)
DATE_FORMATS = ("January 22, 2020", "3/3/2020", "03/16/20", "2020", "")
# How the COVID collection's images are stored (web figures of every kind), with shares.
COVID_ENCODINGS = {
    "jpeg": 0.5,
    "jpeg-rgb": 0.15,
    "jpeg-exif-rotated": 0.05,
    "png": 0.12,
    "png-rgb": 0.06,
    "png-rgba": 0.04,
    "png-palette": 0.04,
    "png-16bit": 0.04,
}


def synthetic_archive(folder: Path, params: Synthetic, source: Params) -> Path:
    """A GitHub-style archive of the collection at ``source.commit``, named as GitHub names it.

    ``<repo>-<commit>/metadata.csv`` and ``images/``, with the April-2020 table's quirks: spaces in
    header names, a trailing empty column, one ragged row, a ``filename`` with a trailing space, a
    non-UTF-8 byte, mixed date formats; multi-dot and upper-case UUID file names in every
    encoding (grey, RGB, RGBA, palette, 16-bit, EXIF-rotated); CT series (axial or coronal
    slices in ``images``) for ``source.synthetic.ct_share`` of the patients and CT volumes listed in
    ``volumes/`` but not in the repository; optionally rows whose file is missing; the
    ``params.near_duplicates`` shared radiographs, each under two patient ids (the second copy
    re-encoded, resized, cropped, grey-converted or with changed contrast).
    """
    path = folder / f"covid-chestxray-dataset-{source.commit}.zip"
    top = f"covid-chestxray-dataset-{source.commit}"
    header = LATER_METADATA_HEADER if source.synthetic.findings == "hierarchical" else METADATA_HEADER
    drawn = list(drawings(params, source))
    rows = [row for row, _, _ in drawn]
    images = {row["filename"]: data for row, data, _ in drawn if data is not None}
    image_rows = [row for row in rows if row["folder"] == "images"]
    missing = {row["filename"] for row in image_rows[: params.missing_files]}
    # Upstream quirk: one filename cell carries a trailing space the file name does not.
    image_rows[-1]["filename"] += " "
    table_rows = [{column: row.get(column, "") for column in header} for row in rows]
    lines = csv_text(table_rows, header).splitlines(keepends=True)
    lines[-1] = lines[-1].rstrip("\n").removesuffix(",") + "\n"  # one ragged row, as upstream
    table = "".join(lines).encode("utf-8").replace(b"Hospital Universitari", b"Hospital Universit\xe0ri")
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w") as archive:
        writestr(archive, f"{top}/README.md", "# COVID-19 image data collection (synthetic stand-in)\n")
        writestr(archive, f"{top}/metadata.csv", table)
        for filename, data in images.items():
            if filename not in missing:
                writestr(archive, f"{top}/images/{filename}", data)
        # The CT volumes are not in the repository: volumes/ holds only how to download them.
        writestr(archive, f"{top}/volumes/DOWNLOAD.md", "CT volumes: see the torrent link.\n")
    return path


def drawings(params: Synthetic, source: Params) -> Iterator[Drawn]:
    """The stand-in's metadata rows in table order, each with its file as :func:`synthetic_archive` writes it.

    Parameters
    ----------
    params : Synthetic
        The generator's settings.
    source : Params
        ``sources.covid_chestxray`` (its ``synthetic`` section: CT share, findings).

    Yields
    ------
    Drawn
        The row; its file (None: a CT volume); the lungs of a patient's X-ray (None: CT, shared radiographs).
    """
    rng = np.random.default_rng([params.seed, 1])
    style = ADULT if params.source_shift else NEUTRAL
    later = source.synthetic.findings == "hierarchical"
    for patient in range(1, params.patients[NAME] + 1):
        finding = pick(rng, LATER_FINDINGS if later else COVID_FINDINGS)
        pattern = _later_pattern(finding) if later else PATTERN_OF_FINDING[finding]
        sex, age = rng.choice(["M", "F"]), str(int(rng.integers(25, 85)))
        for shot in range(int(rng.integers(1, 4))):
            view = pick(rng, XRAY_VIEWS)
            encoding = pick(rng, COVID_ENCODINGS)
            filename = _filename(rng, finding, patient, shot, view, encoding)
            width, height = image_size(rng, params)
            pixels, lungs = draw_chest_with_lungs(rng, width, height, pattern, style)
            row = _row(rng, patient, sex, age, finding, view, "X-ray", "images", filename, shot)
            yield row, encode(pixels, encoding), lungs
        if rng.random() < source.synthetic.ct_share:
            view = CT_VIEWS[int(rng.integers(len(CT_VIEWS)))]
            for index in range(int(rng.integers(CT_SLICES[0], CT_SLICES[1] + 1))):
                filename = f"{patient}-ct-{view.lower()}-{index + 1}.jpg"
                width = height = image_size(rng, params)[0]
                data = encode(draw_ct_slice(rng, width, height, pattern, axial=view == "Axial"), "jpeg")
                yield _row(rng, patient, sex, age, finding, view, "CT", "images", filename, 10 + index), data, None
        if rng.random() < 0.05:
            yield _row(rng, patient, sex, age, finding, "Axial", "CT", "volumes", f"{patient}-ct.nii.gz", 9), None, None
    # The same case published twice, under two patient ids: the original, then a changed copy.
    finding = next(name for name in (LATER_FINDINGS if later else COVID_FINDINGS) if name.endswith("COVID-19"))
    patient = params.patients[NAME]
    for index, image in enumerate(shared_radiographs(params, style)):
        change = COPY_CHANGES[index % len(COPY_CHANGES)]
        for data in (original_bytes(image, change), republished(image, change, "jpeg")):
            patient += 1
            filename = _filename(rng, finding, patient, 0, "PA", "jpeg")
            sex, age = rng.choice(["M", "F"]), str(int(rng.integers(25, 85)))
            yield _row(rng, patient, sex, age, finding, "PA", "X-ray", "images", filename, 0), data, None


def _filename(rng: np.random.Generator, finding: str, patient: int, shot: int, view: str, encoding: str) -> str:
    """One of the naming styles of the collection's images (slugs, paper figures, UUIDs)."""
    ext = "png" if encoding.startswith("png") else ("jpeg" if rng.random() < 0.3 else "jpg")
    style = rng.random()
    if style < 0.15:
        return f"1-s2.0-S{rng.integers(10**12):013d}-main.pdf-{patient:03d}-{shot}.{ext}"
    if style < 0.25:
        return f"{rng.integers(16**8):08X}-{rng.integers(16**4):04X}-{patient:03d}{shot}.{ext}"
    if style < 0.3:
        return f"case-{patient}-{shot}.annot.original.{ext}"
    slug = finding.strip().lower().replace(", ", "-").replace(" ", "-").replace(".", "").replace("/", "-")
    return f"{slug}-{patient}-{shot}-{view.replace(' ', '')}.{ext}"


def _later_pattern(finding: str) -> str:
    return next((pattern for part, pattern in LATER_PATTERNS.items() if part in finding), "normal")


def _row(rng, patient, sex, age, finding, view, modality, folder, filename, shot) -> dict[str, str]:
    """One metadata row; clinical columns are mostly empty, as they are upstream."""
    row = dict.fromkeys(METADATA_HEADER, "")
    location = "Hospital Universitari, Badalona" if rng.random() < 0.05 else "synthetic"
    row.update(patientid=str(patient), offset=str(shot), sex=sex, age=age, finding=finding, view=view)
    row.update(modality=modality, folder=folder, filename=filename, location=location, license="CC BY 4.0")
    row["date"] = DATE_FORMATS[int(rng.integers(len(DATE_FORMATS)))]
    row["survival"] = rng.choice(["Y", "N"]) if rng.random() < 0.3 else ""
    row["temperature"] = f"{rng.uniform(36.5, 39.5):.1f}" if rng.random() < 0.1 else ""
    return row
