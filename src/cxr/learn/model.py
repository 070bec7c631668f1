"""The classifier: preprocessing, a frozen ImageNet base, and the study's small head.

``image (0-255) -> preprocessing -> base (inference mode) -> GlobalAveragePooling2D -> head``
where the head is ``Dense(units, relu) -> Dropout -> Dense(n_classes, softmax)``, optionally
preceded by a standardisation of the features (``train.head.normalize``). The
backbone's ``preprocess_input`` is built in from standard Keras layers, so a saved model takes
raw pixels and loads anywhere without this package.
"""

from __future__ import annotations

import os
from pathlib import Path

import keras
import numpy as np

from cxr.core.backbones import Backbone, BackboneError
from cxr.core.sections import Head

CAFFE_BGR_MEAN = (103.939, 116.779, 123.68)


# The classifier's named layers: what training, fine-tuning and Grad-CAM reach into.
PREPROCESS_LAYER = "preprocess"  # the backbone's own input scaling, inside the model
POOL_LAYER = "pool"  # GlobalAveragePooling2D over the base's last feature map
HEAD_LAYER = "head"  # the trainable head (a nested model)
NORMALIZE_LAYER = "normalize"  # feature standardisation inside the head, when params say so


def keras_preprocess_input(backbone: Backbone, images):
    """Keras' own ``preprocess_input`` of ``backbone`` (the reference :func:`preprocessing` matches)."""
    return getattr(keras.applications, backbone.module).preprocess_input(images)


def preprocessing(backbone: Backbone) -> keras.layers.Layer:
    """``backbone.preprocess_input`` as a layer: scale to [-1, 1] ("tf") or RGB->BGR minus mean ("caffe")."""
    if backbone.preprocess_mode == "tf":
        return keras.layers.Rescaling(1 / 127.5, offset=-1.0, name=PREPROCESS_LAYER)
    if backbone.preprocess_mode == "caffe":
        swap = np.zeros((1, 1, 3, 3), np.float32)
        for channel in range(3):
            swap[0, 0, channel, 2 - channel] = 1.0
        layer = keras.layers.Conv2D(3, 1, name=PREPROCESS_LAYER, trainable=False)
        layer.build((None, None, None, 3))
        layer.set_weights([swap, -np.array(CAFFE_BGR_MEAN, np.float32)])
        return layer
    raise ValueError(f"unknown preprocess mode {backbone.preprocess_mode!r}")


def build_head(n_features: int, n_classes: int, params: Head) -> keras.Model:
    """Dense(relu) -> Dropout -> Dense(softmax), optionally after feature standardisation."""
    normalize = [keras.layers.Normalization(name=NORMALIZE_LAYER)] if params.normalize else []
    return keras.Sequential(
        [
            keras.Input((n_features,), name="features"),
            *normalize,
            keras.layers.Dense(params.units, activation="relu", name="dense"),
            keras.layers.Dropout(params.dropout, name="dropout"),
            keras.layers.Dense(n_classes, activation="softmax", dtype="float32", name="probabilities"),
        ],
        name=HEAD_LAYER,
    )


def keras_cache_dir() -> Path:
    return Path(os.environ.get("KERAS_HOME", Path.home() / ".keras")).expanduser() / "models"


def build_base(backbone: Backbone, size: int, weights: str | None):
    """The convolutional base (no top) for ``size`` x ``size`` RGB input.

    ``weights`` is ``"imagenet"``, ``None`` (random init) or a path to a weights file.
    """
    constructor = getattr(keras.applications, backbone.application)
    if weights not in (None, "imagenet") and not Path(weights).is_file():
        raise BackboneError(f"train.weights: weights file {weights} does not exist")
    try:
        return constructor(include_top=False, weights=weights, input_shape=(size, size, 3))
    except (OSError, ValueError) as exc:
        if weights != "imagenet":
            raise BackboneError(f"{backbone.name}: cannot load weights from {weights}: {exc}") from None
        raise BackboneError(
            f"{backbone.name}: ImageNet weights could not be had ({exc}). Without network access, "
            f"pre-seed the Keras cache: copy {backbone.imagenet_file} into {keras_cache_dir()} "
            "(KERAS_HOME/models), or set train.weights to a weights file or null"
        ) from None
    except Exception as exc:  # keras.utils.get_file raises a bare Exception on URL failures
        if weights != "imagenet":
            raise
        raise BackboneError(
            f"{backbone.name}: ImageNet weights could not be downloaded ({exc}). Pre-seed the Keras "
            f"cache: copy {backbone.imagenet_file} into {keras_cache_dir()}, or set train.weights "
            "to a weights file or null"
        ) from None


def build_classifier(backbone: Backbone, size: int, n_classes: int, head: Head, weights: str | None) -> keras.Model:
    """The full model with the base frozen and called in inference mode (BatchNorm stays frozen)."""
    inputs = keras.Input((size, size, 3), name="image")
    base = build_base(backbone, size, weights)
    base.trainable = False
    features = keras.layers.GlobalAveragePooling2D(name=POOL_LAYER)(
        base(preprocessing(backbone)(inputs), training=False)
    )
    outputs = build_head(features.shape[-1], n_classes, head)(features)
    return keras.Model(inputs, outputs, name=f"cxr_{backbone.name}")


def base_of(model: keras.Model) -> keras.Model:
    [base] = [layer for layer in model.layers if isinstance(layer, keras.Model) and layer.name != HEAD_LAYER]
    return base


def feature_extractor(model: keras.Model) -> keras.Model:
    """Image -> pooled base features: what the head sees, computed once when the base is frozen."""
    return keras.Model(model.inputs, model.get_layer(POOL_LAYER).output, name="features")


def unfreeze_last(model: keras.Model, count: int) -> list[str]:
    """Make the last ``count`` weighted layers of the base trainable; BatchNorm stays frozen.

    The base is still called with training=False, so BatchNorm statistics are not updated either.

    Parameters
    ----------
    model : keras.Model
        A classifier built by :func:`cxr.learn.model.build_classifier`.
    count : int
        How many of the base's weighted, non-BatchNorm layers to unfreeze, from the last
        (``finetune.unfreeze``).

    Returns
    -------
    list of str
        The names of the layers unfrozen.

    Raises
    ------
    BackboneError
        When ``count`` is negative or more than the base's layers that can be unfrozen.
    """
    base = base_of(model)
    candidates = [
        layer for layer in base.layers if layer.weights and not isinstance(layer, keras.layers.BatchNormalization)
    ]
    if not 0 <= count <= len(candidates):
        raise BackboneError(
            f"finetune.unfreeze={count}: the {base.name} base has {len(candidates)} layers that can be unfrozen"
        )
    chosen = candidates[len(candidates) - count :] if count else []
    base.trainable = True
    for layer in base.layers:
        layer.trainable = layer in chosen
    return [layer.name for layer in chosen]
