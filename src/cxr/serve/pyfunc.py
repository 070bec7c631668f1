"""The registered model as MLflow serves it: image file bytes in, class and probabilities out.

Each registered version (``cxr-<task>``, ``cxr-<task>-<backbone>``) is this pyfunc around the
pipeline's model folder (``model.keras`` + ``meta.json``). It takes a DataFrame with an ``image``
column of raw PNG, JPEG or DICOM bytes (over JSON, base64: MLflow's scoring server decodes
``binary`` columns) and returns, per row, the predicted class, one ``p_<class>`` column per class,
a ``warning`` and an ``error``: a file that cannot be read fails its own row, not the request.
Decoding and resizing are :mod:`cxr.serve.inputs`, the code ``cxr-predict`` and training use.
"""

from __future__ import annotations

from pathlib import Path

import mlflow.pyfunc
import pandas as pd
from mlflow.models import ModelSignature
from mlflow.types import ColSpec, Schema

from cxr.learn.model_files import load_model
from cxr.serve.classify import predict_sources

COLUMN = "image"


class XrayClassifier(mlflow.pyfunc.PythonModel):
    """``predict(DataFrame[image: bytes]) -> DataFrame[predicted, p_<class>..., warning, error]``."""

    def load_context(self, context) -> None:
        self.model, self.spec = load_model(Path(context.artifacts["model"]))

    def predict(self, context, model_input: pd.DataFrame, params: dict | None = None) -> pd.DataFrame:
        if COLUMN not in model_input.columns:
            raise ValueError(f"the input has no {COLUMN!r} column (columns: {', '.join(map(str, model_input.columns))})")
        sources = [(f"row {index}", bytes(data)) for index, data in enumerate(model_input[COLUMN])]
        table = predict_sources(self.model, self.spec, sources, batch_size=32)
        return table.drop(columns="path")


def signature(classes: list[str]) -> ModelSignature:
    outputs = [ColSpec("string", "predicted", required=False),
               *[ColSpec("double", f"p_{name}", required=False) for name in classes],
               ColSpec("string", "warning"), ColSpec("string", "error")]
    return ModelSignature(inputs=Schema([ColSpec("binary", COLUMN)]), outputs=Schema(outputs))
