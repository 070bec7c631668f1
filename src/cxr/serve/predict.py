"""``cxr-predict``: apply a trained model to X-ray files, folders or globs (PNG, JPEG, DICOM).

    cxr-predict scans/ new.png study.dcm --model models:/cxr-multiclass@champion --explain gradcam/

The model is a registry URI (default ``models:/cxr-<task>@champion``, the model the release gate
let through; without one, the run stops with one line naming ``@candidate`` and why it failed),
a run URI (``runs:/<run id>/<model>``, e.g. ``runs:/<id>/vgg16``) or a pipeline folder
(``models/<name>``: uncalibrated, no operating point, not judged by the gate). Every image is read
as training read it (:mod:`cxr.serve.classify`). A file
that cannot be read gets its error in its own row and the others go on; the exit status is 1 when
any row failed. Models are research artefacts, not diagnostic devices, and every run says so.
"""

from __future__ import annotations

import argparse
import glob
import os
import stat
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from cxr.core import backbones, registry, tracking
from cxr.core.config import PARAMS_FILE, load
from cxr.core.errors import CxrError, one_line
from cxr.core.outputs import write_csv
from cxr.core.spec import MODEL_FILE, ModelSpec
from cxr.data.dicom import SUFFIXES as DICOM_SUFFIXES
from cxr.data.image_files import DEFAULT_LIMITS, Limits
from cxr.learn.model_files import load_model
from cxr.report.audit.gradcam import gradcam_layer
from cxr.serve.classify import Decision, predict_sources
from cxr.serve.explain import Explainer
from cxr.serve.reading import Source, Unreadable, source_name

DISCLAIMER = (
    "cxr models are research artefacts, not diagnostic devices: never use a prediction for a decision about a patient."
)
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


def input_files(items: list[str]) -> list[Source]:
    """Files named, found below folders (recursively, symbolic links followed once) or matched by
    globs, in a stable order. Below a folder a file is read when its suffix is an image's (PNG, JPEG,
    DICOM) or when it carries the DICOM marker (PACS and CD exports name files ``IM000000``); an
    entry that cannot be looked at (a symlink loop, no permission) gets an :class:`Unreadable` row.
    Paths named directly are kept whatever they are (a missing one gets its error row)."""
    found: list[Source] = []
    for item in items:
        path = Path(item)
        try:
            folder = path.is_dir()
        except OSError as exc:  # Python 3.11 raises for EACCES on a parent folder
            found.append(Unreadable(item, f"{item}: cannot be read ({exc.strerror})"))
            continue
        if folder:
            found += scan_folder(path)
        elif os.path.lexists(path) or not glob.has_magic(item):
            found.append(path)
        else:
            found += sorted(Path(match) for match in glob.glob(item, recursive=True) if os.path.isfile(match))
    return found


def scan_folder(folder: Path) -> list[Source]:
    """The image and DICOM files below ``folder`` (see :func:`input_files`)."""
    found: list[Source] = []
    seen = {os.path.realpath(folder)}
    problems: list[Unreadable] = []

    def unreadable_folder(error: OSError) -> None:
        problems.append(Unreadable(str(error.filename), f"{error.filename}: folder cannot be read ({error.strerror})"))

    for root, folders, files in os.walk(folder, onerror=unreadable_folder, followlinks=True):
        folders.sort()
        for name in list(folders):
            real = os.path.realpath(os.path.join(root, name))
            if real in seen:
                folders.remove(name)
                problems.append(
                    Unreadable(
                        os.path.join(root, name),
                        f"{os.path.join(root, name)}: a symbolic link back "
                        f"to {real}, which is already scanned; skipped",
                    )
                )
            seen.add(real)
        for name in sorted(files):
            path = Path(root) / name
            if path.suffix.lower() in IMAGE_SUFFIXES + DICOM_SUFFIXES:
                found.append(path)
                continue
            try:
                if not stat.S_ISREG(os.stat(path).st_mode):  # a pipe or device: opening it could block
                    continue
                with open(path, "rb") as stream:
                    marker = stream.read(132)[128:132]
            except OSError as exc:
                found.append(Unreadable(str(path), f"{path}: cannot be read ({exc.strerror})"))
                continue
            if marker == b"DICM":
                found.append(path)
    return found + problems


@dataclass
class LoadedModel:
    model: object  # the Keras model
    spec: ModelSpec
    name: str  # registered name, or the folder's name
    version: str  # registry version, run id, or the md5 of a folder's model.keras
    decision: Decision  # temperature, operating point and release gate result (a folder: none)


def load_reference(reference: str) -> LoadedModel:
    """A model by registry URI (``models:/name@alias``, ``models:/name/3``), run URI
    (``runs:/<id>/<model>``) or pipeline folder; a reference that does not resolve is named."""
    if not reference.startswith(("models:/", "runs:/")):
        model, spec = load_model(Path(reference))
        digest = tracking.file_md5(Path(reference) / MODEL_FILE)
        return LoadedModel(model, spec, Path(reference).name, f"md5:{digest[:12]}", Decision())
    import mlflow

    mlflow.set_tracking_uri(tracking.tracking_uri())
    try:
        loaded = mlflow.pyfunc.load_model(reference)
    except mlflow.exceptions.MlflowException as exc:
        if reference.endswith(f"@{registry.CHAMPION}"):
            unreleased(reference.removeprefix("models:/").partition("@")[0])
        raise CxrError(
            f"{reference}: cannot be loaded from {tracking.tracking_uri()} ({exc.message.splitlines()[0]}); "
            "run `dvc repro` first, or pass --model models/<name>"
        ) from None
    classifier = loaded.unwrap_python_model()
    name, version = reference, loaded.metadata.run_id
    if reference.startswith("models:/"):
        name, _, label = reference.removeprefix("models:/").replace("@", "/").partition("/")
        client = mlflow.MlflowClient()
        version = client.get_model_version_by_alias(name, label).version if "@" in reference else label
    # A version registered before models carried a decision gets none.
    decision = getattr(classifier, "decision", Decision())
    return LoadedModel(classifier.model, classifier.spec, name, str(version), decision)


def unreleased(name: str) -> None:
    """Raise the one-line :class:`CxrError` for a registered model ``name`` with no ``@champion``
    (no model passed the release gate) that has a ``@candidate``: which version, why it failed,
    how to use it anyway. Returns (raises nothing) when there is no candidate either."""
    import mlflow

    client = mlflow.MlflowClient()
    try:
        candidate = client.get_model_version_by_alias(name, registry.CANDIDATE)
    except mlflow.exceptions.MlflowException:
        return
    raise CxrError(
        f"models:/{name} has no @{registry.CHAMPION}: no model passed the release gate. The candidate, version "
        f"{candidate.version} ({candidate.tags.get(registry.MODEL_TAG, '?')}), "
        f"{candidate.tags.get(registry.RELEASE_GATE_TAG, 'was not judged')}. To use it anyway: "
        f"--model models:/{name}@{registry.CANDIDATE}"
    )


def summary(table: pd.DataFrame, output: Path) -> str:
    """The one-line result of a run."""
    counts = table["predicted"].dropna().value_counts().sort_index()
    failed = int((table["error"] != "").sum())
    predicted = ", ".join(f"{name} {count}" for name, count in counts.items()) or "none"
    return (
        f"cxr-predict: {len(table)} file(s), {len(table) - failed} predicted ({predicted}), {failed} failed, "
        f"{int((table['warning'] != '').sum())} with a warning -> {output}"
    )


def default_model() -> str:
    """``models:/cxr-<task>@champion``, the task from ./params.yaml (multiclass without one)."""
    task = load(PARAMS_FILE).task if Path(PARAMS_FILE).is_file() else "multiclass"
    return f"models:/{registry.model_name(task)}@{registry.CHAMPION}"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="cxr-predict", description=__doc__.splitlines()[0], epilog=DISCLAIMER)
    parser.add_argument(
        "inputs", nargs="+", help="image files (PNG, JPEG, DICOM), folders (searched recursively) or globs"
    )
    parser.add_argument(
        "--model",
        help="models:/<name>@<alias> or models:/<name>/<version> (MLflow registry), "
        "runs:/<run id>/<model> (e.g. runs:/<id>/vgg16), or a pipeline folder such as models/finetuned; default: "
        "models:/cxr-<task>@champion",
    )
    parser.add_argument("--output", type=Path, default=Path("predictions.csv"), help="the CSV to write")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument(
        "--explain",
        type=Path,
        metavar="DIR",
        help="write a Grad-CAM overlay of the predicted class per image into DIR "
        "(the image at its aspect, 512 px on its long side, with class, probability and colour scale)",
    )
    parser.add_argument(
        "--views",
        nargs="*",
        default=None,
        help="views the model was trained on; a DICOM whose ViewPosition is another gets a "
        "warning (default: the views the model records)",
    )
    parser.add_argument(
        "--max-file-mb",
        type=float,
        default=DEFAULT_LIMITS.max_file_bytes / 2**20,
        help="larger files get an error row without being read (default: %(default)g)",
    )
    parser.add_argument(
        "--max-pixels",
        type=int,
        default=DEFAULT_LIMITS.max_pixels,
        help="images whose header claims more pixels (width x height x frames) get an error row "
        "before decoding (default: %(default)d, 8192 x 8192)",
    )
    args = parser.parse_args(argv)
    limits = Limits(max_file_bytes=int(args.max_file_mb * 2**20), max_pixels=args.max_pixels)
    try:
        loaded = load_reference(args.model or default_model())
    except CxrError as exc:
        raise SystemExit(f"error: {one_line(exc)}") from None
    paths = input_files(args.inputs)
    if not paths:
        raise SystemExit(f"error: no PNG, JPEG or DICOM file in {args.inputs}")
    explain = (
        Explainer(
            args.explain,
            loaded.spec.backbone,
            args.batch_size,
            [source_name(path) for path in paths],
            loaded.spec.classes,
            gradcam_layer(loaded.model, backbones.get(loaded.spec.backbone))[0],
        )
        if args.explain
        else None
    )
    table = predict_sources(
        loaded.model,
        loaded.spec,
        paths,
        batch_size=args.batch_size,
        views=args.views,
        progress=len(paths) > 1,
        explain=explain,
        limits=limits,
        decision=loaded.decision,
    )
    table.insert(2, "model", loaded.name)
    table.insert(3, "model_version", loaded.version)
    write_csv(args.output, table)
    print(summary(table, args.output))
    print(DISCLAIMER)
    if (table["error"] != "").any():
        raise SystemExit(1)


if __name__ == "__main__":
    main()
