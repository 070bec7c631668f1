"""The registered model as MLflow serves it: image file bytes in, class and probabilities out.

Each registered version of ``cxr-<task>`` (one per trained or fine-tuned model) is this pyfunc around the
pipeline's model folder (``model.keras`` + ``meta.json``). It takes a DataFrame with an ``image``
column of raw PNG, JPEG or DICOM bytes (in Python) or their base64 text (over HTTP) and returns, per
row, the predicted class, one ``p_<class>`` column per class (temperature-scaled), the ``decision``
at the operating point, the model's ``release`` gate result, a ``warning`` and an ``error``. Over
HTTP the bytes travel as base64 in any of MLflow's JSON formats (``dataframe_split``,
``dataframe_records``, ``instances``, ``inputs``), with or without line breaks. Every row gets its
own answer: a file that cannot be read, a ``null`` cell or a row over :data:`SERVING_LIMITS`
``max_rows`` fails its own row (``error``, with the ``p_`` columns ``null``), never the request.
Decoding and resizing are :mod:`cxr.serve.classify`, the code ``cxr-predict`` and training use.

Limits (:data:`SERVING_LIMITS`, logged as the model's ``model_config``) can be changed where the
model is served: ``MLFLOW_PYFUNC_INFERENCE_CONFIG='{"max_rows": 16}' mlflow models serve ...``. What large
files add to the model's memory is bounded by ``max_concurrent_decodes`` decodes of at most
``max_pixels`` pixels each (measured by ``bench/inputs.py``: about 1.2 GB for a PNG and 1.8 GB for
a 16-bit DICOM at the default limit), plus the request bodies in flight.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import threading
from pathlib import Path

import mlflow.pyfunc
import numpy as np
import pandas as pd
from mlflow.exceptions import MlflowException
from mlflow.models import ModelSignature
from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE
from mlflow.types import ColSpec, Schema

from cxr.data.image_files import DEFAULT_LIMITS, Limits
from cxr.learn.model_files import load_model
from cxr.serve.classify import Decision, predict_sources
from cxr.serve.reading import Source, Unreadable

COLUMN = "image"
# What a served model accepts, unless its model config says otherwise.
SERVING_LIMITS = {
    "max_rows": 64,  # rows per request; later rows get an error row
    "max_concurrent_decodes": 2,  # files decoded at once, across concurrent requests
    "max_file_bytes": DEFAULT_LIMITS.max_file_bytes,
    "max_pixels": DEFAULT_LIMITS.max_pixels,
}


# What registration adds to the model config: the temperature, the operating point and the release
# gate's result (:class:`cxr.serve.classify.Decision`'s fields), chosen on the validation split.
DECISION_KEYS = tuple(field.name for field in dataclasses.fields(Decision))


def serving_limits(model_config: dict | None) -> dict[str, int]:
    """:data:`SERVING_LIMITS` updated by a model config (its :data:`DECISION_KEYS` aside); an
    unknown key or a limit that is not a positive integer raises :class:`MlflowException` naming it."""
    limits = dict(SERVING_LIMITS)
    for key, value in (model_config or {}).items():
        if key in DECISION_KEYS:
            continue
        if key not in limits:
            raise MlflowException(
                f"model config: unknown key {key!r} (known: {', '.join([*SERVING_LIMITS, *DECISION_KEYS])})",
                INVALID_PARAMETER_VALUE,
            )
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise MlflowException(
                f"model config: {key} must be a positive integer, got {value!r}", INVALID_PARAMETER_VALUE
            )
        limits[key] = value
    return limits


# How MLflow's JSON parsing hands over a null cell: None or NaN (dataframe formats), the text
# "None" (``instances`` and ``inputs``: it converts every value of a string column with str()).
NULL_TEXT = ("", "None", "null", "nan", "NaN")


def cell_source(value: object, index: int, max_bytes: int = DEFAULT_LIMITS.max_file_bytes) -> Source:
    """One request cell as the bytes of a file: bytes as they are (a DataFrame built in Python);
    text as base64, line breaks allowed (every JSON format and CSV over HTTP), refused without
    decoding when it would exceed ``max_bytes``; ``null`` and anything else as an
    :class:`Unreadable` row named ``row <index>``."""
    name = f"row {index}"
    if isinstance(value, str):
        size = (len(value) - sum(value.count(space) for space in " \r\n")) * 3 // 4  # base64: 4 chars, 3 bytes
        if size > max_bytes:
            return Unreadable(
                name,
                f"{name}: about {size:,} bytes once decoded, over the limit of {max_bytes:,} "
                "bytes per file (max_file_bytes)",
            )
    if isinstance(value, bytes | bytearray | memoryview):
        return name, bytes(value)
    if (
        value is None
        or (isinstance(value, float) and np.isnan(value))
        or (isinstance(value, str) and value.strip() in NULL_TEXT)
    ):
        return Unreadable(name, f"{name}: no image (null)")
    if isinstance(value, str):
        try:
            return name, base64.b64decode("".join(value.split()), validate=True)
        except (binascii.Error, ValueError):
            return Unreadable(name, f"{name}: text that is not base64; send the file's bytes base64-encoded")
    return Unreadable(name, f"{name}: a {type(value).__name__}, not an image file's bytes")


class XrayClassifier(mlflow.pyfunc.PythonModel):
    """``predict(DataFrame[image: bytes]) -> DataFrame[predicted, p_<class>..., decision, release, warning,
    error]``."""

    def load_context(self, context) -> None:
        self.model, self.spec = load_model(Path(context.artifacts["model"]))
        model_config = getattr(context, "model_config", None) or {}
        self.limits = serving_limits(model_config)
        self.decision = Decision(**{key: model_config[key] for key in DECISION_KEYS if key in model_config})
        self.decode_slots = threading.BoundedSemaphore(self.limits["max_concurrent_decodes"])

    def predict(self, context, model_input: pd.DataFrame, params: dict | None = None) -> pd.DataFrame:
        # MLflow has enforced the signature: the column is there (a request without it is answered 400).
        limit, max_bytes = self.limits["max_rows"], self.limits["max_file_bytes"]
        sources = [
            cell_source(value, index, max_bytes)
            if index < limit
            else Unreadable(
                f"row {index}",
                f"row {index}: over the limit of {limit} rows per request (max_rows); send it in another request",
            )
            for index, value in enumerate(model_input[COLUMN])
        ]
        table = predict_sources(
            self.model,
            self.spec,
            sources,
            batch_size=32,
            limits=Limits(self.limits["max_file_bytes"], self.limits["max_pixels"]),
            decode_slots=self.decode_slots,
            decision=self.decision,
        )
        # Failed rows answer null, never NaN (not JSON: most parsers refuse it).
        table = table.drop(columns="path").astype(object)
        return table.where(table.notna(), None)


def signature(classes: list[str]) -> ModelSignature:
    """The contract MLflow records: ``image`` (the file's bytes from Python; base64 text over HTTP,
    decoded by :func:`cell_source` rather than by MLflow, so that a null cell is a row's error and
    not a failed request) -> ``predicted``, ``p_<class>`` per class (calibrated), ``decision`` (at
    the operating point for the positive class), ``release`` (the release gate's result), ``warning``,
    ``error``."""
    outputs = [
        ColSpec("string", "predicted", required=False),
        *[ColSpec("double", f"p_{name}", required=False) for name in classes],
        ColSpec("string", "decision"),
        ColSpec("string", "release"),
        ColSpec("string", "warning"),
        ColSpec("string", "error"),
    ]
    return ModelSignature(inputs=Schema([ColSpec("string", COLUMN)]), outputs=Schema(outputs))
