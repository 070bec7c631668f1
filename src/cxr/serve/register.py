"""Registering a saved model in MLflow as the servable pyfunc: the ``register@<model>`` stages.

Kept apart from training, so that a change to how a model is served (the pyfunc, DICOM reading,
limits) reruns registration alone, never a training stage. The pyfunc is logged into the run that
trained the model (found by the ``model_md5`` tag training set), so a run keeps its metrics,
curves and model together.
"""

from __future__ import annotations

from collections.abc import Callable
from importlib import metadata
from pathlib import Path

import mlflow
import mlflow.pyfunc
import pandas as pd
from mlflow.models.model import ModelInfo
from mlflow.tracking import MlflowClient

import cxr
from cxr.core import registry, tracking
from cxr.core.errors import CxrError
from cxr.core.schema import split_part
from cxr.core.spec import MODEL_FILE, ModelSpec
from cxr.serve import pyfunc

# What the registered pyfunc needs where it is served, besides TensorFlow (see
# :func:`tensorflow_requirement`); the code itself travels with the model.
SERVING_PACKAGES = (
    "keras",
    "mlflow",
    "numpy",
    "pandas",
    "pillow",
    "pydicom",
    "python-gdcm",
    "pyyaml",
    "scikit-learn",
    "matplotlib",
    "tqdm",
)


def installed_version(name: str) -> str | None:
    """The version of distribution ``name`` installed here, or None."""
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def tensorflow_requirement(version: Callable[[str], str | None] = installed_version) -> str:
    """The TensorFlow distribution installed here, pinned, as the served model must install it.

    ``tensorflow`` with NVIDIA's CUDA wheels beside it (``pip install tensorflow[and-cuda]``, what a
    GPU user installs) gives ``tensorflow[and-cuda]==<v>``; plain ``tensorflow`` gives
    ``tensorflow==<v>``; ``tensorflow-cpu`` gives ``tensorflow-cpu==<v>``. ``version`` looks a
    distribution up (None: not installed). Raises CxrError when none is installed.
    """
    if found := version("tensorflow"):
        cuda = version("nvidia-cudnn-cu12") is not None
        return f"tensorflow{'[and-cuda]' if cuda else ''}=={found}"
    if found := version("tensorflow-cpu"):
        return f"tensorflow-cpu=={found}"
    raise CxrError("no TensorFlow distribution is installed (tensorflow or tensorflow-cpu): the served model needs one")


def serving_requirements(version: Callable[[str], str | None] = installed_version) -> list[str]:
    """Pinned pip requirements of the served model: TensorFlow as installed here, then
    :data:`SERVING_PACKAGES` that are installed, each ``name==version``."""
    return [tensorflow_requirement(version)] + [
        f"{name}=={found}" for name in SERVING_PACKAGES if (found := version(name)) is not None
    ]


def log_servable(folder: Path, spec: ModelSpec, example: Path, registered_name: str) -> ModelInfo:
    """Log the saved model ``folder`` to the active run as the image-taking pyfunc
    (:mod:`cxr.serve.pyfunc`, logged from code), with its signature, an example image, the model
    contract as metadata and cxr's code, and register it as ``registered_name``; returns MLflow's
    ``ModelInfo`` (``model_uri``, ``registered_model_version``)."""
    info = mlflow.pyfunc.log_model(
        name="model",
        python_model=str(Path(pyfunc.__file__).with_name("model_code.py")),
        artifacts={"model": str(folder)},
        code_paths=[str(Path(cxr.__file__).parent)],
        signature=pyfunc.signature(spec.classes),
        model_config=pyfunc.SERVING_LIMITS,
        input_example=pd.DataFrame({pyfunc.COLUMN: [example.read_bytes()]}),
        registered_model_name=registered_name,
        pip_requirements=serving_requirements(),
        metadata=spec.to_json() | {"git_commit": tracking.git_commit()},
    )
    return info


def example_image(split: pd.DataFrame) -> Path:
    """The image a registered model shows as its input example: the first of the val split."""
    return Path(split_part(split, "val").iloc[0]["path"])


def registered_name(task: str, spec: ModelSpec) -> str:
    """``cxr-<task>`` for the fine-tuned model (the release), ``cxr-<task>-<backbone>`` otherwise."""
    return registry.model_name(task, None if spec.finetuned_from else spec.backbone)


def register(folder: Path, spec: ModelSpec, task: str, example: Path) -> dict:
    """Log ``folder`` as the servable pyfunc into the run that trained it (found by its
    ``model_md5`` tag) and register it (:func:`registered_name`). A re-registration of the same
    model file (serving code changed) takes over the test tags, description and aliases
    (``@champion``) of the version it replaces, since ``evaluate`` has nothing new to measure.

    Returns ``{"model", "model_md5", "registered_model", "requirements"}``: what the stage writes
    (nothing that changes between two registrations of the same model, no version number);
    ``registered_model`` is None when no run on this tracking server trained the file (its
    training was restored from DVC's cache on another server), and a warning says so.
    """
    model_file = folder / MODEL_FILE
    name, md5 = registered_name(task, spec), tracking.file_md5(model_file)
    run_id = registry.find_model_run(task, model_file)
    if run_id is None:
        print(
            f"warning: no finished MLflow run on this tracking server is tagged with the md5 of {model_file}, so it "
            f"is not registered as {name}: it was trained elsewhere (or restored from DVC's cache). Rerun its "
            "training stage, then this one: dvc repro -f -s <train stage> <register stage>"
        )
    else:
        client = MlflowClient()
        previous = registry.latest_version_of(name, md5)
        with mlflow.start_run(run_id=run_id):
            info = log_servable(folder, spec, example, name)
        version = str(info.registered_model_version)
        registry.registry_write(client.set_model_version_tag, name, version, registry.MODEL_MD5_TAG, md5)
        if previous is not None:
            registry.carry_over(name, previous, version)
    return {
        "model": folder.name,
        "model_md5": tracking.file_md5(model_file),
        "registered_model": None if run_id is None else name,
        "requirements": serving_requirements(),
    }
