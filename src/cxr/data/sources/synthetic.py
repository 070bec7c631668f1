"""Offline stand-ins for the upstream archives, laid out like the real ones, quirks included.

The generated zips have the real folder structure, file names, metadata headers and the quirks
found in the published archives, so the readers are tested on them:

- Kermany (Kaggle zip): the duplicate ``chest_xray/chest_xray`` tree, ``__MACOSX`` forks and
  ``.DS_Store`` files; names with a further ``_K`` (``person447_virus_921_1.jpeg``), three-block
  ``IM-0608-0001-0001.jpeg`` and ``NORMAL2-`` names; grey JPEGs stored as RGB (train/PNEUMONIA);
  byte-identical files under two names; a few images over 2000 px.
- COVID collection: the April-2020 header (spaces in names, `` url``, a trailing empty column,
  one ragged row), a ``filename`` with a trailing space, a non-UTF-8 byte, mixed date formats,
  multi-dot and upper-case UUID names, ``.jpg``/``.jpeg``/``.png`` files that are grey, RGB, RGBA,
  palette or 16-bit, EXIF-rotated JPEGs, CT rows (axial and coronal slices in ``images``,
  volumes whose files are not in the repository), optionally rows whose file is missing.
- Actualmed: its own header (``imagename``, ``artifacts/distortion``, ``notes``), ``ANON``
  patient ids, DICOM-UID file names with many dots, 8- and 16-bit PNGs, and the repository's
  other files (``metadata.xlsx``, ``images/SAMPLE.png``).

Images are drawn procedurally: the class shows in the lungs (lobar consolidation, diffuse
interstitial pattern, bilateral peripheral opacities) and, as in the real data, the sources
also differ visibly outside the lungs, unless ``source_shift`` is off.
"""

from __future__ import annotations

import csv
import io
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import ExifTags, Image

from cxr.core.config import Synthetic

FIXED_ZIP_TIME = (2020, 4, 17, 0, 0, 0)

# The April-2020 header of the COVID collection's metadata.csv, spaces and trailing comma included.
COVID_METADATA_HEADER = [
    "patientid", "offset", "sex", "age", "finding", "survival", "intubated", "went_icu",
    "needed_supplemental_o2", "extubated", "temperature", "pO2 saturation", "leukocyte count",
    "neutrophil count", "lymphocyte count", "view", "modality", "date", "location", "folder",
    "filename", "doi", " url", "license", "clinical notes", "other notes", "",
]

# Findings of the COVID collection in April 2020 with their rough shares of patients.
COVID_FINDINGS = {
    "COVID-19": 0.66, "COVID-19, ARDS": 0.06, "SARS": 0.06, "Streptococcus": 0.05,
    "Klebsiella": 0.02, "Legionella": 0.02, "Chlamydophila": 0.02, "E.Coli": 0.02,
    "Pneumocystis": 0.04, "ARDS": 0.03, "No Finding": 0.02,
}
PATTERN_OF_FINDING = {
    "COVID-19": "covid", "COVID-19, ARDS": "covid", "SARS": "viral", "Streptococcus": "bacteria",
    "Klebsiella": "bacteria", "Legionella": "bacteria", "Chlamydophila": "bacteria",
    "E.Coli": "bacteria", "Pneumocystis": "perihilar", "ARDS": "whiteout", "No Finding": "normal",
    "bacteria": "bacteria", "virus": "viral", "NORMAL": "normal",
}
XRAY_VIEWS = {"PA": 0.55, "AP": 0.2, "AP Supine": 0.15, "L": 0.1}
CT_VIEWS = ("Axial", "Coronal")
DATE_FORMATS = ("January 22, 2020", "3/3/2020", "03/16/20", "2020", "")
# How the COVID collection's images are stored (web figures of every kind), with shares.
COVID_ENCODINGS = {
    "jpeg": 0.5, "jpeg-rgb": 0.15, "jpeg-exif-rotated": 0.05,
    "png": 0.12, "png-rgb": 0.06, "png-rgba": 0.04, "png-palette": 0.04, "png-16bit": 0.04,
}
KERMANY_SPLITS = {"train": 0.8, "test": 0.15, "val": 0.05}
LARGE_SIZE = (2000, 2600)

ACTUALMED_METADATA_HEADER = [
    "patientid", "offset", "sex", "age", "finding", "survival", "temperature", "pO2 saturation", "view",
    "modality", "imagename", "artifacts/distortion", "notes",
]
# Findings of the Actualmed collection: about a quarter COVID-19, half normal, the rest inconclusive.
ACTUALMED_FINDINGS = {"COVID-19": 0.25, "No finding": 0.53, "": 0.22}
ACTUALMED_VIEWS = {"PA": 0.6, "AP": 0.4}


def covid_chestxray_archive_name(commit: str) -> str:
    return f"covid-chestxray-dataset-{commit}.zip"


def actualmed_archive_name(commit: str) -> str:
    return f"Actualmed-COVID-chestxray-dataset-{commit}.zip"


KERMANY_ARCHIVE_NAME = "chest-xray-pneumonia.zip"


def write_archive(source: str, folder: Path, params: Synthetic, source_params) -> Path:
    """The stand-in archive of ``source``, named as its upstream download is."""
    if source == "covid_chestxray":
        return write_covid_chestxray_archive(folder / covid_chestxray_archive_name(source_params.commit), params,
                                             source_params.commit)
    if source == "actualmed":
        return write_actualmed_archive(folder / actualmed_archive_name(source_params.commit), params,
                                       source_params.commit)
    return write_kermany_archive(folder / KERMANY_ARCHIVE_NAME, params)


@dataclass(frozen=True)
class Style:
    """How a source frames its images: the non-medical cues a model could learn instead."""

    thorax_scale: float
    brightness: float
    contrast: float
    marker: bool
    border: float


ADULT = Style(thorax_scale=1.0, brightness=0.0, contrast=0.85, marker=True, border=0.0)
CHILD = Style(thorax_scale=0.78, brightness=0.12, contrast=1.15, marker=False, border=0.06)
NEUTRAL = Style(thorax_scale=0.9, brightness=0.06, contrast=1.0, marker=False, border=0.03)
# A third site: adults, but framed and exposed differently from the COVID collection.
OTHER_SITE = Style(thorax_scale=0.95, brightness=-0.06, contrast=0.95, marker=False, border=0.0)


def draw_chest(rng: np.random.Generator, width: int, height: int, pattern: str, style: Style) -> np.ndarray:
    """A grayscale chest radiograph-like image (uint8, height x width) showing ``pattern``."""
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    yy /= height
    xx /= width
    scale = style.thorax_scale * rng.uniform(0.95, 1.05)
    cx, cy = 0.5 + rng.normal(0, 0.015), 0.55 + rng.normal(0, 0.015)
    u = (xx - cx) / scale
    v = (yy - cy) / scale

    def ellipse(x0: float, y0: float, rx: float, ry: float) -> np.ndarray:
        return ((u - x0) / rx) ** 2 + ((v - y0) / ry) ** 2 <= 1.0

    def blob(x0: float, y0: float, sigma: float) -> np.ndarray:
        return np.exp(-(((u - x0) ** 2 + (v - y0) ** 2) / (2 * sigma**2)))

    image = np.full((height, width), 0.08, np.float32)
    image[ellipse(0.0, 0.0, 0.44, 0.5)] = 0.5
    lung_right = ellipse(-0.19, -0.04, 0.15, 0.3)
    lung_left = ellipse(0.19, -0.04, 0.14, 0.29)
    lungs = lung_right | lung_left
    image[lungs] = 0.2
    ribs = (np.sin(2 * np.pi * (v * 7.0 + 1.5 * u**2)) > 0.75) & lungs
    image[ribs] += 0.07
    image[np.abs(u) < 0.035] = 0.72
    heart = ellipse(0.06, 0.14, 0.13, 0.11)
    image[heart] = np.maximum(image[heart], 0.6)
    diaphragm = (v > 0.24 + 0.06 * np.cos(u * 6)) & ellipse(0.0, 0.0, 0.44, 0.5)
    image[diaphragm] = np.maximum(image[diaphragm], 0.62)

    severity = rng.uniform(0.7, 1.2)
    lungs_f = lungs.astype(np.float32)
    if pattern == "bacteria":
        side = rng.choice([-0.19, 0.19])
        lobe = rng.choice([-0.18, 0.02, 0.16])
        image += 0.5 * severity * blob(side, lobe, rng.uniform(0.05, 0.08)) * lungs_f
    elif pattern == "viral":
        freq = rng.uniform(38, 48)
        phase = rng.uniform(0, 2 * np.pi, 2)
        mesh = np.abs(np.sin(freq * u + phase[0]) * np.sin(freq * v + phase[1]))
        hilar = blob(-0.1, -0.02, 0.16) + blob(0.1, -0.02, 0.16)
        image += 0.18 * severity * mesh * lungs_f * (0.5 + hilar)
    elif pattern == "covid":
        lower = rng.uniform(0.05, 0.15)
        periphery = blob(-0.3, lower, 0.07) + blob(0.3, lower, 0.07)
        image += 0.38 * severity * periphery * lungs_f
    elif pattern == "perihilar":
        image += 0.25 * severity * (blob(-0.1, -0.05, 0.1) + blob(0.1, -0.05, 0.1)) * lungs_f
    elif pattern == "whiteout":
        image += 0.3 * severity * lungs_f
    elif pattern != "normal":
        raise ValueError(f"unknown synthetic pattern {pattern!r}")

    image = (image - 0.4) * style.contrast + 0.4 + style.brightness
    if style.border:
        edge = (xx < style.border) | (xx > 1 - style.border) | (yy < style.border) | (yy > 1 - style.border)
        image[edge] = 0.02
    if style.marker:
        image[(xx > 0.84) & (xx < 0.92) & (yy > 0.06) & (yy < 0.14)] = 0.97
    image += rng.normal(0, 0.025, image.shape).astype(np.float32)
    return (np.clip(image, 0, 1) * 255).astype(np.uint8)


def encode(image: np.ndarray, encoding: str) -> bytes:
    """An upright grey image (uint8) as file bytes in one of the encodings found upstream.

    ``jpeg-exif-rotated`` stores the pixels turned a quarter left with EXIF orientation 6, so a
    reader that honours EXIF shows it upright and one that ignores it shows it on its side.
    """
    fmt, _, variant = encoding.partition("-")
    picture = Image.fromarray(image, mode="L")
    options: dict = {"quality": 92} if fmt == "jpeg" else {}
    if variant == "rgb":
        picture = picture.convert("RGB")
    elif variant == "rgba":
        picture = picture.convert("RGBA")
    elif variant == "palette":
        picture = picture.convert("RGB").quantize(colors=256)
    elif variant == "16bit":
        picture = Image.fromarray(image.astype(np.uint16) * 257)
    elif variant == "exif-rotated":
        picture = Image.fromarray(np.ascontiguousarray(np.rot90(image, k=1)), mode="L")
        exif = Image.Exif()
        exif[ExifTags.Base.Orientation] = 6
        options["exif"] = exif.tobytes()
    elif variant:
        raise ValueError(f"unknown synthetic encoding {encoding!r}")
    buffer = io.BytesIO()
    picture.save(buffer, format="JPEG" if fmt == "jpeg" else "PNG", **options)
    return buffer.getvalue()


def _writestr(archive: zipfile.ZipFile, name: str, data: bytes | str) -> None:
    """Write with a fixed timestamp, so the same parameters give byte-identical archives."""
    info = zipfile.ZipInfo(name, date_time=FIXED_ZIP_TIME)
    info.compress_type = zipfile.ZIP_DEFLATED
    info.external_attr = 0o644 << 16
    archive.writestr(info, data)


def _csv_text(rows: list[dict[str, str]], columns: list[str]) -> str:
    """A metadata.csv as upstream writes it: header, then one line per row, ``\n`` line ends."""
    table = io.StringIO()
    writer = csv.DictWriter(table, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return table.getvalue()


def _size(rng: np.random.Generator, params: Synthetic, large: bool = False) -> tuple[int, int]:
    low, high = LARGE_SIZE if large else (params.min_size, params.max_size)
    width = int(rng.integers(low, high + 1))
    height = int(np.clip(width * rng.uniform(0.85, 1.2), low, high))
    return width, height


def _pick(rng: np.random.Generator, shares: dict[str, float]) -> str:
    names = list(shares)
    weights = np.array([shares[name] for name in names])
    return names[int(rng.choice(len(names), p=weights / weights.sum()))]


def _covid_filename(rng: np.random.Generator, finding: str, patient: int, shot: int, view: str, encoding: str) -> str:
    """One of the naming styles of the collection's images (slugs, paper figures, UUIDs)."""
    ext = "png" if encoding.startswith("png") else ("jpeg" if rng.random() < 0.3 else "jpg")
    style = rng.random()
    if style < 0.15:
        return f"1-s2.0-S{rng.integers(10**12):013d}-main.pdf-{patient:03d}-{shot}.{ext}"
    if style < 0.25:
        return f"{rng.integers(16**8):08X}-{rng.integers(16**4):04X}-{patient:03d}{shot}.{ext}"
    if style < 0.3:
        return f"case-{patient}-{shot}.annot.original.{ext}"
    slug = finding.lower().replace(", ", "-").replace(" ", "-").replace(".", "")
    return f"{slug}-{patient}-{shot}-{view.replace(' ', '')}.{ext}"


def write_covid_chestxray_archive(path: Path, params: Synthetic, commit: str) -> Path:
    """A GitHub-style archive of the COVID collection: ``<repo>-<commit>/metadata.csv``, ``images/``."""
    rng = np.random.default_rng([params.seed, 1])
    top = f"covid-chestxray-dataset-{commit}"
    style = ADULT if params.source_shift else NEUTRAL
    rows: list[dict[str, str]] = []
    images: dict[str, bytes] = {}
    for patient in range(1, params.covid_chestxray_patients + 1):
        finding = _pick(rng, COVID_FINDINGS)
        sex, age = rng.choice(["M", "F"]), str(int(rng.integers(25, 85)))
        for shot in range(int(rng.integers(1, 4))):
            view = _pick(rng, XRAY_VIEWS)
            encoding = _pick(rng, COVID_ENCODINGS)
            filename = _covid_filename(rng, finding, patient, shot, view, encoding)
            width, height = _size(rng, params)
            images[filename] = encode(draw_chest(rng, width, height, PATTERN_OF_FINDING[finding], style), encoding)
            rows.append(_covid_row(rng, patient, sex, age, finding, view, "X-ray", "images", filename, shot))
        if rng.random() < 0.08:
            view = CT_VIEWS[int(rng.integers(len(CT_VIEWS)))]
            filename = f"{patient}-ct-{view.lower()}.jpg"
            width, height = _size(rng, params)
            images[filename] = encode(draw_chest(rng, width, height, "normal", style), "jpeg")
            rows.append(_covid_row(rng, patient, sex, age, finding, view, "CT", "images", filename, 9))
        if rng.random() < 0.05:
            rows.append(_covid_row(rng, patient, sex, age, finding, "Axial", "CT", "volumes",
                                   f"{patient}-ct.nii.gz", 9))
    image_rows = [row for row in rows if row["folder"] == "images"]
    missing = {row["filename"] for row in image_rows[: params.missing_files]}
    # Upstream quirk: one filename cell carries a trailing space the file name does not.
    image_rows[-1]["filename"] += " "

    lines = _csv_text(rows, COVID_METADATA_HEADER).splitlines(keepends=True)
    lines[-1] = lines[-1].rstrip("\n").removesuffix(",") + "\n"  # one ragged row, as upstream
    table = "".join(lines).encode("utf-8").replace("Hospital Universitari".encode(), b"Hospital Universit\xe0ri")
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w") as archive:
        _writestr(archive, f"{top}/README.md", "# COVID-19 image data collection (synthetic stand-in)\n")
        _writestr(archive, f"{top}/metadata.csv", table)
        for filename, data in images.items():
            if filename not in missing:
                _writestr(archive, f"{top}/images/{filename}", data)
        # The CT volumes are not in the repository: volumes/ holds only how to download them.
        _writestr(archive, f"{top}/volumes/DOWNLOAD.md", "CT volumes: see the torrent link.\n")
    return path


def _covid_row(rng, patient, sex, age, finding, view, modality, folder, filename, shot) -> dict[str, str]:
    """One metadata row; clinical columns are mostly empty, as they are upstream."""
    row = dict.fromkeys(COVID_METADATA_HEADER, "")
    location = "Hospital Universitari, Badalona" if rng.random() < 0.05 else "synthetic"
    row.update(patientid=str(patient), offset=str(shot), sex=sex, age=age, finding=finding,
               view=view, modality=modality, folder=folder, filename=filename,
               date=DATE_FORMATS[int(rng.integers(len(DATE_FORMATS)))], location=location, license="CC BY 4.0")
    if rng.random() < 0.3:
        row["survival"] = rng.choice(["Y", "N"])
    if rng.random() < 0.1:
        row["temperature"] = f"{rng.uniform(36.5, 39.5):.1f}"
    return row


def write_actualmed_archive(path: Path, params: Synthetic, commit: str) -> Path:
    """A GitHub-style archive of the Actualmed collection: ``metadata.csv`` with ``imagename``, ``images/``."""
    rng = np.random.default_rng([params.seed, 3])
    top = f"Actualmed-COVID-chestxray-dataset-{commit}"
    style = OTHER_SITE if params.source_shift else NEUTRAL
    rows, images = [], {}
    for patient in range(1, params.actualmed_patients + 1):
        finding = _pick(rng, ACTUALMED_FINDINGS)
        pattern = "covid" if finding == "COVID-19" else "normal" if finding == "No finding" else rng.choice(
            ["covid", "normal"])
        for shot in range(int(rng.integers(1, 3))):
            taken = f"202003{int(rng.integers(1, 32)):02d}"
            imagename = (f"{rng.choice(['CR', 'DX'])}.1.2.840.113564.{rng.integers(10**10):010d}."
                         f"{taken}{rng.integers(10**12):012d}.{rng.integers(10**13):013d}.png")
            width, height = _size(rng, params)
            images[imagename] = encode(draw_chest(rng, width, height, pattern, style),
                                       "png-16bit" if rng.random() < 0.3 else "png")
            row = dict.fromkeys(ACTUALMED_METADATA_HEADER, "")
            row.update(patientid=f"ANON{patient}", offset=str(shot), sex=rng.choice(["M", "F"]),
                       age=str(int(rng.integers(25, 90))), finding=finding, view=_pick(rng, ACTUALMED_VIEWS),
                       modality="X-ray", imagename=imagename,
                       notes=f"{'Inconclusive' if not finding else ''}, date taken (YYYYMMDD): {taken}")
            rows.append(row)
    table = _csv_text(rows, ACTUALMED_METADATA_HEADER)
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w") as archive:
        _writestr(archive, f"{top}/README.md", "# Actualmed COVID-19 chest X-rays (synthetic stand-in)\n")
        _writestr(archive, f"{top}/metadata.csv", table)
        _writestr(archive, f"{top}/metadata.xlsx", b"PK\x03\x04 synthetic spreadsheet")
        _writestr(archive, f"{top}/images/SAMPLE.png", encode(np.zeros((8, 8), np.uint8), "png"))
        for imagename, data in images.items():
            _writestr(archive, f"{top}/images/{imagename}", data)
    return path


def write_kermany_archive(path: Path, params: Synthetic) -> Path:
    """A Kaggle-style ``chest-xray-pneumonia.zip`` with its duplicate tree, ``__MACOSX`` forks and
    ``.DS_Store`` files, the naming variants and a few byte-identical files."""
    rng = np.random.default_rng([params.seed, 2])
    style = CHILD if params.source_shift else NEUTRAL
    files: dict[str, bytes] = {}
    splits = list(KERMANY_SPLITS)
    shares = np.array(list(KERMANY_SPLITS.values()))
    large_left = params.large_images

    def add(folder: str, filename: str, pattern: str) -> str:
        nonlocal large_left
        split = splits[int(rng.choice(len(splits), p=shares))]
        width, height = _size(rng, params, large=large_left > 0)
        large_left -= 1
        # The real set's RGB files (grey in three channels) are all in train/PNEUMONIA.
        rgb = split == "train" and folder == "PNEUMONIA" and rng.random() < 0.1
        files[name := f"{split}/{folder}/{filename}"] = encode(draw_chest(rng, width, height, pattern, style),
                                                               "jpeg-rgb" if rgb else "jpeg")
        return name

    for index in range(params.kermany_patients_per_class):
        prefix = f"NORMAL2-IM-{1000 + index:04d}" if index % 4 == 3 else f"IM-{100 + index:04d}"
        for shot in range(1, int(rng.integers(1, 3)) + 1):
            add("NORMAL", f"{prefix}-{shot:04d}.jpeg", "normal")
            if index % 9 == 4:  # IM-0608-0001-0001.jpeg beside IM-0608-0001.jpeg
                add("NORMAL", f"{prefix}-{shot:04d}-0001.jpeg", "normal")
    counter = {"bacteria": 0, "virus": 0}
    for index in range(2 * params.kermany_patients_per_class):
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
            _writestr(archive, f"chest_xray/{name}", data)
        for name, data in sorted(files.items()):
            _writestr(archive, f"chest_xray/chest_xray/{name}", data)
        for name in sorted(files)[::7]:
            folder, _, filename = name.rpartition("/")
            _writestr(archive, f"chest_xray/__MACOSX/chest_xray/{folder}/._{filename}",
                      b"\x00\x05\x16\x07 resource fork")
        for split in splits:
            _writestr(archive, f"chest_xray/{split}/.DS_Store", b"\x00\x00\x00\x01Bud1")
        _writestr(archive, "chest_xray/.DS_Store", b"\x00\x00\x00\x01Bud1")
    return path
