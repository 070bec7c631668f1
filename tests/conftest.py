"""Shared fixtures: a small configuration and small generated upstream data."""

from __future__ import annotations

import copy
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import yaml
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

from cxr.core.config import Config, from_dict
from cxr.data.sources import download_source
from cxr.serve.local import free_port, mlflow_command, running

REPO = Path(__file__).resolve().parents[1]
SMALL = {
    "synthetic": {"patients": {"covid_chestxray": 40, "kermany": 14}, "min_size": 64, "max_size": 96},
}


# The end-to-end files, longest first: under ``make test`` each starts at once on its own worker.
LONGEST_FIRST = ("test_pipeline.py", "test_recipes_end_to_end.py")


def pytest_collection_modifyitems(config, items: list) -> None:
    """On a pytest-xdist worker (``make test``: two workers, ``--dist loadfile --no-loadscope-reorder``,
    one file at a time, in this order), the end-to-end files first, so that one worker starts on the
    shared pipeline workspace (the longest file), the other on the recipes, and both then take the
    remaining files. A run without xdist keeps pytest's order."""
    if not hasattr(config, "workerinput"):
        return

    def rank(item) -> int:
        name = item.path.name
        return LONGEST_FIRST.index(name) if name in LONGEST_FIRST else len(LONGEST_FIRST)

    items.sort(key=rank)


def deep_merge(base: dict, overrides: dict) -> dict:
    merged = copy.deepcopy(base)
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def params_dict(overrides: dict | None = None) -> dict:
    """The project's params.yaml, shrunk to test size, with ``overrides`` merged in."""
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    return deep_merge(deep_merge(raw, SMALL), overrides or {})


def make_config(overrides: dict | None = None) -> Config:
    return from_dict(params_dict(overrides))


@pytest.fixture
def config() -> Config:
    return make_config()


@pytest.fixture(scope="session")
def raw_root(tmp_path_factory) -> Path:
    """Both synthetic sources downloaded and extracted once for the session (read-only)."""
    root = tmp_path_factory.mktemp("raw")
    config = make_config()
    for name in config.sources.use:
        download_source(name, config, root)
    return root


@pytest.fixture
def project(tmp_path, raw_root) -> Path:
    """A scratch project folder with stage scripts, small params and the raw data in place."""
    shutil.copytree(REPO / "stages", tmp_path / "stages")
    shutil.copytree(raw_root, tmp_path / "data" / "raw")
    write_params(tmp_path)
    return tmp_path


def write_params(folder: Path, overrides: dict | None = None) -> None:
    (folder / "params.yaml").write_text(yaml.safe_dump(params_dict(overrides), sort_keys=False))


def stage_env(**extra: str) -> dict[str, str]:
    """The environment of a stage run outside DVC and MLflow, plus ``extra``."""
    env = {key: value for key, value in os.environ.items() if not key.startswith(("MLFLOW_", "DVC_"))}
    return env | {"TF_CPP_MIN_LOG_LEVEL": "2"} | extra


def stage_command(folder: Path, stage: str, item: str | None = None) -> list[str]:
    """The command dvc.yaml runs for ``stage`` (with ``${item}`` and the folder's params.yaml values
    filled in), run with this Python: tests pass stages the same paths DVC does."""
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    params = yaml.safe_load((folder / "params.yaml").read_text())
    if stage == "download" and item in params["sources"]["external"]:
        stage = "download_external"
    definition = stages[stage].get("do", stages[stage])
    values = {"item": item} | {key: value for key, value in params.items() if isinstance(value, str | int)}
    command = re.sub(r"\$\{(\w+)\}", lambda match: str(values[match[1]]), definition["cmd"])
    return [sys.executable, *shlex.split(command)[1:]]


def run_stage(
    folder: Path, stage: str, item: str | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess:
    return subprocess.run(
        stage_command(folder, stage, item),
        cwd=folder,
        env=env or stage_env(),
        capture_output=True,
        text=True,
        timeout=600,
    )


@contextmanager
def serve_folder(folder: Path) -> Iterator[str]:
    """Serve ``folder`` over HTTP from a child process bound to 127.0.0.1 on a free port; yield
    its base URL; stop that process (by its own pid) afterwards."""
    server = subprocess.Popen(
        [sys.executable, "-u", "-m", "http.server", "--bind", "127.0.0.1", "--directory", str(folder), "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        banner = server.stdout.readline()
        port = re.search(r"port (\d+)", banner)
        assert port, f"http.server did not start: {banner!r}"
        yield f"http://127.0.0.1:{port[1]}"
    finally:
        os.kill(server.pid, signal.SIGTERM)
        server.wait(timeout=10)


@contextmanager
def serve_model(model_uri: str, folder: Path, env: dict[str, str]) -> Iterator[str]:
    """``mlflow models serve`` of ``model_uri`` on 127.0.0.1 and a free port, run from ``folder``;
    yield its base URL once ``/ping`` answers; its process group is stopped afterwards."""
    port = free_port()
    command = mlflow_command(
        "models", "serve", "-m", model_uri, "--env-manager", "local", "--host", "127.0.0.1", "--port", str(port)
    )
    with running(command, f"http://127.0.0.1:{port}/ping", cwd=folder, env=env):
        yield f"http://127.0.0.1:{port}"


def write_dicom(
    path: Path,
    values: np.ndarray,
    *,
    photometric: str = "MONOCHROME2",
    view: str | None = "PA",
    frames: int = 1,
    window: tuple | None = None,
    age: str | None = None,
    modality: str = "DX",
    **attributes,
) -> Path:
    """A 16-bit DICOM of ``values`` (rows, columns), as a DX/CR export writes one; ``attributes`` sets any
    other header keyword (``RescaleSlope=""``, ``BodyPartExamined="HAND"``, ...)."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid(entropy_srcs=[str(path.name)])
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    dataset = Dataset()
    dataset.file_meta = meta
    dataset.SOPClassUID, dataset.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    dataset.Modality = modality
    if view:
        dataset.ViewPosition = view
    dataset.Rows, dataset.Columns = values.shape
    dataset.SamplesPerPixel, dataset.PhotometricInterpretation = 1, photometric
    dataset.BitsAllocated, dataset.BitsStored, dataset.HighBit, dataset.PixelRepresentation = 16, 16, 15, 0
    if window:
        dataset.WindowCenter, dataset.WindowWidth = window
    if frames > 1:
        dataset.NumberOfFrames = frames
    if age:
        dataset.PatientAge = age
    for keyword, value in attributes.items():
        setattr(dataset, keyword, value)
    dataset.PixelData = np.stack([values] * frames).astype(np.uint16).tobytes()
    dataset.save_as(path, enforce_file_format=True)
    return path


CLASSES = ["COVID", "NORMAL"]
SIZE = 32


@pytest.fixture(scope="session")
def model_folder(tmp_path_factory) -> Path:
    """A VGG16 classifier with random weights at 32 px, saved as the pipeline saves models."""
    import pandas as pd

    from cxr.core import backbones
    from cxr.core.sections import Head
    from cxr.core.spec import ModelSpec
    from cxr.learn.model import build_classifier
    from cxr.learn.model_files import save_model

    folder = tmp_path_factory.mktemp("models") / "tiny"
    model = build_classifier(
        backbones.get("vgg16"), SIZE, len(CLASSES), Head(units=8, dropout=0.0, normalize=False), None
    )
    spec = ModelSpec(
        backbone="vgg16",
        image_size=SIZE,
        classes=CLASSES,
        task="multiclass",
        weights=None,
        views=["PA", "AP"],
        ages={"min": 18.0, "max": 90.0, "recorded": 40, "images": 60},
    )
    save_model(model, folder, spec, pd.DataFrame({"epoch": [0]}))
    return folder


@pytest.fixture(scope="session")
def chest() -> np.ndarray:
    """A grey 112 x 96 chest image spanning the whole 0-255 range."""
    from cxr.data.sources.drawing import CHILD, draw_chest

    pixels = draw_chest(np.random.default_rng(0), 96, 112, "covid", CHILD)
    pixels[0, 0], pixels[0, 1] = 0, 255
    return pixels


# A user's shell and a user's clone, for the end-to-end tests (test_pipeline, test_recipes_end_to_end).


def user_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """A user's shell: this Python's tools first, and no MLflow URI that this test process set
    (``mlflow.set_tracking_uri`` exports one) unless ``extra`` names it."""
    inherited = {key: value for key, value in os.environ.items() if key != "MLFLOW_TRACKING_URI"}
    return {**inherited, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}", **(extra or {})}


def sh(folder: Path, *command: str, env: dict[str, str] | None = None) -> str:
    """Run ``command`` in ``folder`` as a user would (:func:`user_env` plus ``env``); assert it succeeds;
    return what it printed (stdout, then stderr)."""
    env = user_env(env)
    result = subprocess.run(command, cwd=folder, env=env, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, f"{command} failed:\n{result.stdout}\n{result.stderr}"
    return result.stdout + result.stderr


def stdout(folder: Path, *command: str) -> str:
    """What ``command`` prints on stdout alone (for machine-readable output)."""
    env = user_env()
    result = subprocess.run(command, cwd=folder, env=env, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, f"{command} failed:\n{result.stderr}"
    return result.stdout


def project_clone(folder: Path) -> Path:
    """The tracked and untracked (not ignored) project files in ``folder``, at test size (SMALL, few
    epochs), committed in a new git repo: what a user's ``git clone`` holds, without a dvc.lock."""
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    for name in listed:
        if (REPO / name).is_file():
            (folder / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, folder / name)
    (folder / "dvc.lock").unlink(missing_ok=True)
    params = deep_merge(yaml.safe_load((folder / "params.yaml").read_text()), SMALL)
    params["train"].update(epochs=4, image_size=75)
    params["finetune"]["epochs"] = 1
    params["evaluate"]["bootstrap_resamples"] = 100
    (folder / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    sh(folder, "git", "init", "-q")
    sh(folder, "git", "-c", "user.name=t", "-c", "user.email=t@t", "add", "-A")
    sh(folder, "git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "clone")
    return folder


def confusion_cells(svg: str) -> dict[tuple[str, str], tuple[float, float, int]]:
    """The count marks of a confusion matrix rendered to SVG by vl-convert (the project's DVC template):
    (actual, predicted) -> (x, y, count), read from each mark's label and position."""
    import re

    marks = re.findall(
        r'aria-label="predicted: ([^;"]+); actual: ([^;"]+); xy_count: (\d+)"[^>]*?'
        r'transform="translate\(([\d.]+),([\d.]+)\)"',
        svg,
    )
    return {(actual, predicted): (float(x), float(y), int(count)) for predicted, actual, count, x, y in marks}


def rows_are_actual_and_columns_predicted(cells: dict[tuple[str, str], tuple[float, float, int]]) -> bool:
    """Whether each actual class is one row (one y) and each predicted class one column (one x)."""
    rows: dict[str, set[float]] = {}
    columns: dict[str, set[float]] = {}
    for (actual, predicted), (x, y, _) in cells.items():
        rows.setdefault(actual, set()).add(y)
        columns.setdefault(predicted, set()).add(x)
    return all(len(ys) == 1 for ys in rows.values()) and all(len(xs) == 1 for xs in columns.values())
