"""The backbone registry: name -> Keras application, input sizes, preprocessing, weights.

Adding a backbone is one entry in ``BACKBONES``. Keras is imported only when a backbone is
built, so reading the registry (e.g. to validate params.yaml) stays cheap.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from cxr.errors import CxrError


class BackboneError(CxrError):
    """An unknown backbone, an unusable input size, or weights that cannot be had."""


@dataclass(frozen=True)
class Backbone:
    name: str
    application: str  # constructor in keras.applications
    module: str  # keras.applications submodule holding its preprocess_input
    preprocess_mode: str  # what that preprocess_input does: "tf" ([-1, 1]) or "caffe" (BGR - mean)
    native_size: int
    min_size: int
    imagenet_file: str  # the no-top ImageNet weights file Keras caches
    # Grad-CAM's layer: the last convolutional feature map before pooling; None: the base's output.
    gradcam_layer: str | None = None

    def preprocess_input(self, images):
        import keras

        return getattr(keras.applications, self.module).preprocess_input(images)

    def input_size(self, image_size: int | str) -> int:
        """The side in pixels for ``train.image_size`` (a number, or "native")."""
        size = self.native_size if image_size == "native" else int(image_size)
        if size < self.min_size:
            raise BackboneError(
                f"{self.name} needs images of at least {self.min_size} px, got train.image_size={size}"
            )
        return size


BACKBONES = {
    backbone.name: backbone
    for backbone in (
        Backbone("nasnetlarge", "NASNetLarge", "nasnet", "tf", 331, 32, "NASNet-large-no-top.h5"),
        Backbone("vgg16", "VGG16", "vgg16", "caffe", 224, 32, "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5",
                 gradcam_layer="block5_conv3"),
        Backbone("xception", "Xception", "xception", "tf", 299, 71, "xception_weights_tf_dim_ordering_tf_kernels_notop.h5"),
        Backbone("inceptionresnetv2", "InceptionResNetV2", "inception_resnet_v2", "tf", 299, 75,
                 "inception_resnet_v2_weights_tf_dim_ordering_tf_kernels_notop.h5"),
    )
}


def get(name: str) -> Backbone:
    try:
        return BACKBONES[name]
    except KeyError:
        raise BackboneError(f"unknown backbone {name!r}; known: {sorted(BACKBONES)}") from None


def keras_cache_dir() -> Path:
    return Path(os.environ.get("KERAS_HOME", Path.home() / ".keras")).expanduser() / "models"


def build_base(backbone: Backbone, size: int, weights: str | None):
    """The convolutional base (no top) for ``size`` x ``size`` RGB input.

    ``weights`` is ``"imagenet"``, ``None`` (random init) or a path to a weights file.
    """
    import keras

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
