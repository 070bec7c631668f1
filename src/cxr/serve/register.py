"""Registering a saved model in MLflow as the servable pyfunc: the ``register@<model>`` stages.

Before it is registered, a model is assessed on the validation split (:func:`assess`): its
temperature is fitted, the operating point for ``positive_class`` chosen on the calibrated
probabilities, its validation statistics (what ranks the models) measured, and its shortcut audit
judged by the release gate. All of it travels in the registered model's config, so what is served
is the calibrated model with its decision and its gate result.

Kept apart from training, so that a change to how a model is served (the pyfunc, DICOM reading,
limits) reruns registration alone, never a training stage. The pyfunc is logged into the run that
trained the model (found by the ``model_md5`` tag training set), so a run keeps its metrics,
curves and model together. Every model is a version of ``cxr-<task>``, tagged ``model=<name>``.
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
from cxr.core.config import Config
from cxr.core.errors import CxrError
from cxr.core.schema import split_part
from cxr.core.spec import MODEL_FILE, ModelSpec
from cxr.report import calibration, evaluation, operating_point, release
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


def log_servable(folder: Path, spec: ModelSpec, example: Path, registered_name: str, decision: dict) -> ModelInfo:
    """Log the saved model ``folder`` to the active run as the image-taking pyfunc
    (:mod:`cxr.serve.pyfunc`, logged from code), with its signature, an example image, the model
    contract and ``decision`` (:func:`decision_config`) as metadata, the serving limits and
    ``decision`` as its model config, and cxr's code, and register it as ``registered_name``;
    returns MLflow's ``ModelInfo`` (``model_uri``, ``registered_model_version``)."""
    info = mlflow.pyfunc.log_model(
        name=logged_name(folder, spec),
        python_model=str(Path(pyfunc.__file__).with_name("model_code.py")),
        artifacts={"model": str(folder)},
        code_paths=[str(Path(cxr.__file__).parent)],
        signature=pyfunc.signature(spec.classes),
        model_config=pyfunc.SERVING_LIMITS | decision,
        input_example=pd.DataFrame({pyfunc.COLUMN: [example.read_bytes()]}),
        registered_model_name=registered_name,
        pip_requirements=serving_requirements(),
        metadata=spec.to_json() | {"decision": decision, "git_commit": tracking.git_commit()},
    )
    return info


def assess(model, spec: ModelSpec, split: pd.DataFrame, external: pd.DataFrame, audit: dict, config: Config) -> dict:
    """A model on the validation split of ``split``, and its audit against the release gate.

    The audit is ``reports/audit/<backbone>.json`` (the base's for a fine-tuned model). The
    probabilities on the validation split are calibrated by temperature scaling (Guo et al. 2017)
    and the operating point is chosen on the calibrated probabilities.

    Parameters
    ----------
    model : keras.Model
        The model.
    spec : ModelSpec
        What it is (classes, input size).
    split : pandas.DataFrame
        The split table; its val rows are predicted, its test rows counted for the gate.
    external : pandas.DataFrame
        The external test set (may be empty); its positive-class images are counted for the gate.
    audit : dict
        The backbone's audit metrics.
    config : Config
        The configuration (``positive_class``, ``train``, ``evaluate``, ``release``).

    Returns
    -------
    dict
        ``{"calibration": {"method", "temperature", "ece_bins", "validation": {"before", "after",
        "images"}}, "operating_point": operating_point.choose's dict (on the calibrated
        probabilities), "validation": {"accuracy", "macro_f1", "balanced_accuracy", "images"},
        "release": release.gate's dict}``; ``before``/``after`` are calibration.scores' dicts.

    References
    ----------
    Guo, C., Pleiss, G., Sun, Y. & Weinberger, K. Q. (2017). On Calibration of Modern Neural
    Networks. ICML 2017.
    """
    classes, positive = spec.classes, config.positive_class
    val = split_part(split, "val").reset_index(drop=True)
    raw = evaluation.predict(model, val, classes, spec.image_size, config.train)
    actual = val["class"].map(classes.index).to_numpy()
    temperature = calibration.fit_temperature(raw, actual)
    calibrated = calibration.apply_temperature(raw, temperature)
    table = evaluation.predictions_frame(val, classes, calibrated)
    headline = evaluation.headline(table, classes)
    return {
        "calibration": {
            "method": calibration.METHOD,
            "temperature": temperature,
            "ece_bins": calibration.ECE_BINS,
            "validation": {
                "before": calibration.scores(raw, actual),
                "after": calibration.scores(calibrated, actual),
                "images": len(val),
            },
        },
        "operating_point": operating_point.choose(
            table, positive, config.evaluate.operating_point, config.evaluate.target_sensitivity
        ),
        "validation": {key: headline[key] for key in ("accuracy", "macro_f1", "balanced_accuracy")}
        | {"images": len(val)},
        "release": release.gate(
            audit,
            config.release,
            len(classes),
            positive,
            test_images=len(split_part(split, "test")),
            external_positives=int((external["class"] == positive).sum()) if len(external) else 0,
        ),
    }


def decision_config(assessment: dict) -> dict:
    """The model config keys of :class:`cxr.serve.classify.Decision` from :func:`assess`'s dict."""
    point = assessment["operating_point"]
    return {
        "temperature": assessment["calibration"]["temperature"],
        "positive_class": point["positive_class"],
        "threshold": point["threshold"],
        "release": "passed the release gate"
        if assessment["release"]["passed"]
        else f"FAILED the release gate ({assessment['release']['summary'].removeprefix('failed: ')})",
    }


def example_image(split: pd.DataFrame) -> Path:
    """The image a registered model shows as its input example: the first of the val split.

    Parameters
    ----------
    split : pandas.DataFrame
        The split table.

    Returns
    -------
    Path
        The image's path.

    Raises
    ------
    IndexError
        When the val split is empty.
    """
    return Path(split_part(split, "val").iloc[0]["path"])


def logged_name(folder: Path, spec: ModelSpec) -> str:
    """What the logged model is called in its run: the backbone (``vgg16``), or ``finetuned-<base>``
    (``finetuned-xception``); ``runs:/<run id>/<that name>`` loads it."""
    return f"{folder.name}-{spec.finetuned_from}" if spec.finetuned_from else folder.name


def version_description(folder: Path, spec: ModelSpec, assessment: dict) -> str:
    """The registered version's description: what the model is and what the register stage measured
    on the validation split (macro-F1, temperature, operating point) and the release gate's result."""
    threshold = assessment["operating_point"].get("threshold")
    return (
        f"{logged_name(folder, spec)}: {spec.backbone} at {spec.image_size} px, classes {', '.join(spec.classes)}. "
        f"Validation: macro-F1 {assessment['validation']['macro_f1']:.3f} on {assessment['validation']['images']} "
        f"images; temperature {assessment['calibration']['temperature']:.2f}"
        + (f"; decision threshold {threshold:.3f}" if threshold is not None else "")
        + f". Release gate: {assessment['release']['summary']}."
    )


def register(folder: Path, spec: ModelSpec, task: str, example: Path, assessment: dict) -> dict:
    """Log a model folder as the servable pyfunc and register it as a version of ``cxr-<task>``.

    ``folder`` is logged, with :func:`assess`'s ``assessment``, into the run that trained it (found by
    its ``model_md5`` tag) and registered, tagged with the model's name, its md5, its release gate
    result and temperature. A re-registration of the same model file (serving code changed) takes
    over the tags, description and aliases of the version it replaces, since ``evaluate`` has nothing
    new to measure.

    Parameters
    ----------
    folder : Path
        The model folder.
    spec : ModelSpec
        What the model is.
    task : str
        The task; the registered model is ``cxr-<task>``.
    example : Path
        The input example image (:func:`example_image`).
    assessment : dict
        :func:`assess`'s result.

    Returns
    -------
    dict
        ``{"model", "model_md5", "registered_model", "requirements"} | assessment``: what the
        stage writes (nothing that changes between two registrations of the same model, no version
        number); ``registered_model`` is None when no run on this tracking server trained the file
        (its training was restored from DVC's cache on another server), and a warning says so.

    Raises
    ------
    TrackingError
        When the model registry refuses a write.
    """
    model_file = folder / MODEL_FILE
    name, md5 = registry.model_name(task), tracking.file_md5(model_file)
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
            info = log_servable(folder, spec, example, name, decision_config(assessment))
        version = str(info.registered_model_version)
        if previous is not None:
            registry.carry_over(name, previous, version)
        tags = {
            registry.MODEL_MD5_TAG: md5,
            registry.MODEL_TAG: folder.name,
            registry.RELEASE_GATE_TAG: assessment["release"]["summary"],
            "temperature": f"{assessment['calibration']['temperature']:.4f}",
        }
        for key, value in tags.items():
            tracking.retry_write(client.set_model_version_tag, name, version, key, value)
        description = version_description(folder, spec, assessment)
        tracking.retry_write(client.update_model_version, name, version, description=description)
    return {
        "model": folder.name,
        "model_md5": tracking.file_md5(model_file),
        "registered_model": None if run_id is None else name,
        "requirements": serving_requirements(),
    } | assessment
