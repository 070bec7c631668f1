"""``cxr-predict``: apply a trained model to X-ray files, folders or globs (PNG, JPEG, DICOM).

    cxr-predict scans/ new.png study.dcm --model models/finetuned --output predictions.csv --explain gradcam/

Every image is read as training read it (the catalog's checks and EXIF orientation, the same
resize), DICOMs through :mod:`cxr.serve.dicom`. A file that cannot be read gets its error in its
own row and the others go on; the exit status is 1 when any row failed. Models are research
artefacts, not diagnostic devices, and every run says so.
"""

from __future__ import annotations

import argparse
import glob
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import tensorflow as tf
from PIL import Image
from tqdm import tqdm

from cxr import backbones, images, training
from cxr.audit import gradcam
from cxr.catalog import describe_image
from cxr.config import PARAMS_FILE, load
from cxr.errors import CxrError
from cxr.figures import saliency_overlay
from cxr.outputs import write_csv
from cxr.serve.dicom import SUFFIXES as DICOM_SUFFIXES
from cxr.serve.dicom import is_dicom, read_dicom
from cxr.tracking import file_md5

DISCLAIMER = ("cxr models are research artefacts, not diagnostic devices: never use a prediction for a "
              "decision about a patient.")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
# Images are decoded this many at a time, so a large folder never holds all its pixels at once.
CHUNK = 256
# Shorter sides below this are refused: upscaled to the model's size they carry no detail.
MIN_SIDE = 64


def input_files(items: list[str]) -> list[Path]:
    """Files named, found below folders (recursively) or matched by globs; unknown paths kept (they
    get an error row)."""
    found: list[Path] = []
    suffixes = IMAGE_SUFFIXES + DICOM_SUFFIXES
    for item in items:
        path = Path(item)
        if path.is_dir():
            found += sorted(file for file in path.rglob("*") if file.is_file() and file.suffix.lower() in suffixes)
        elif path.exists() or not glob.has_magic(item):
            found.append(path)
        else:
            found += sorted(Path(match) for match in glob.glob(item, recursive=True) if Path(match).is_file())
    return found


def read_input(path: Path, size: int, views: list[str]) -> tuple[np.ndarray, str]:
    """One file -> (model input, warning). Raises :class:`CxrError` naming the file."""
    if not path.is_file():
        raise CxrError(f"{path}: no such file")
    if path.stat().st_size == 0:
        raise CxrError(f"{path}: empty file")
    if is_dicom(path):
        dicom = read_dicom(path)
        side = min(dicom.pixels.shape)
        pixels = images.grey_model_input(dicom.pixels, size)
        warning = (f"ViewPosition {dicom.view} is not among the views the model was trained on ({', '.join(views)})"
                   if views and dicom.view and dicom.view not in views else "")
    else:
        described = describe_image(str(path))
        side = min(described["width"], described["height"])
        pixels = images.decode_resize(tf.constant(str(path)), size, described["orientation"])
        warning = ""
    if side < MIN_SIDE:
        raise CxrError(f"{path}: the image is {side} px on its shorter side; at least {MIN_SIDE} px are needed")
    return pixels.numpy(), warning


def predict_files(model, classes: list[str], size: int, paths: list[Path], *, batch_size: int,
                  views: list[str], progress: bool = False, explain: Explainer | None = None) -> pd.DataFrame:
    """One row per file: path, predicted class, one probability per class, warning, error (and,
    with ``explain``, a Grad-CAM overlay per predicted file)."""
    rows = []
    bar = tqdm(total=len(paths), unit="image", disable=not progress, file=sys.stderr)
    for start in range(0, len(paths), CHUNK):
        chunk, decoded = paths[start:start + CHUNK], {}
        for path in chunk:
            try:
                decoded[path] = read_input(path, size, views)
            except CxrError as exc:
                decoded[path] = exc
            bar.update(1)
        good = [path for path in chunk if not isinstance(decoded[path], CxrError)]
        probabilities = {}
        if good:
            batch = tf.data.Dataset.from_tensor_slices(np.stack([decoded[path][0] for path in good])).batch(batch_size)
            probabilities = dict(zip(good, model.predict(batch, verbose=0)))
            if explain is not None:
                explain(model, good, np.stack([decoded[path][0] for path in good]),
                        np.array([int(np.argmax(probabilities[path])) for path in good]))
        for path in chunk:
            row = {"path": str(path), "predicted": None, **{f"p_{name}": None for name in classes},
                   "warning": "", "error": ""}
            if path in probabilities:
                row["predicted"] = classes[int(np.argmax(probabilities[path]))]
                row.update({f"p_{name}": float(value) for name, value in zip(classes, probabilities[path])})
                row["warning"] = decoded[path][1]
            else:
                row["error"] = str(decoded[path])
            rows.append(row)
    bar.close()
    return pd.DataFrame(rows)


class Explainer:
    """Writes ``<folder>/<file name>.gradcam.png``: the predicted class's Grad-CAM map over the
    image, computed by the shortcut audit's :func:`cxr.audit.gradcam` at the backbone's layer."""

    def __init__(self, folder: Path, backbone: str, batch_size: int):
        self.folder, self.layer, self.batch_size = folder, backbones.get(backbone).gradcam_layer, batch_size
        folder.mkdir(parents=True, exist_ok=True)

    def __call__(self, model, paths: list[Path], batch: np.ndarray, predicted: np.ndarray) -> None:
        for start in range(0, len(paths), self.batch_size):
            part = slice(start, start + self.batch_size)
            maps = gradcam(model, batch[part], predicted[part], self.layer)
            for path, image, saliency in zip(paths[part], batch[part], maps):
                Image.fromarray(saliency_overlay(image, saliency)).save(self.folder / f"{path.name}.gradcam.png")


def summary(table: pd.DataFrame, output: Path) -> str:
    """The one-line result of a run."""
    counts = table["predicted"].dropna().value_counts().sort_index()
    failed = int((table["error"] != "").sum())
    predicted = ", ".join(f"{name} {count}" for name, count in counts.items()) or "none"
    return (f"cxr-predict: {len(table)} file(s), {len(table) - failed} predicted ({predicted}), {failed} failed, "
            f"{int((table['warning'] != '').sum())} with a warning -> {output}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="cxr-predict", description=__doc__.splitlines()[0],
                                     epilog=DISCLAIMER)
    parser.add_argument("inputs", nargs="+", help="image files (PNG, JPEG, DICOM), folders (searched "
                        "recursively) or globs")
    parser.add_argument("--model", type=Path, default=Path("models/finetuned"),
                        help="a model folder written by the pipeline (model.keras + meta.json); default: "
                        "models/finetuned, the registered release candidate")
    parser.add_argument("--output", type=Path, default=Path("predictions.csv"), help="the CSV to write")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--explain", type=Path, metavar="DIR",
                        help="write a Grad-CAM overlay of the predicted class per image into DIR")
    parser.add_argument("--views", nargs="*", default=None,
                        help="views the model was trained on; a DICOM whose ViewPosition is another gets a "
                        "warning (default: filter.views of ./params.yaml, when there is one)")
    args = parser.parse_args(argv)
    try:
        if args.views is None:
            args.views = load(PARAMS_FILE).filter.views if Path(PARAMS_FILE).is_file() else []
        model, meta = training.load_model(args.model)
    except CxrError as exc:
        raise SystemExit(f"error: {exc}") from None
    paths = input_files(args.inputs)
    if not paths:
        raise SystemExit(f"error: no PNG, JPEG or DICOM file in {args.inputs}")
    explain = Explainer(args.explain, meta["backbone"], args.batch_size) if args.explain else None
    table = predict_files(model, meta["classes"], meta["image_size"], paths, batch_size=args.batch_size,
                          views=args.views, progress=len(paths) > 1, explain=explain)
    version = file_md5(args.model / "model.keras")[:12]
    table.insert(2, "model", args.model.name)
    table.insert(3, "model_version", f"md5:{version}")
    write_csv(args.output, table)
    print(summary(table, args.output))
    print(DISCLAIMER)
    if (table["error"] != "").any():
        raise SystemExit(1)


if __name__ == "__main__":
    main()
