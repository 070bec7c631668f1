"""The backbone registry: name -> Keras application, input sizes, preprocessing, weights.

Adding a backbone is one entry in ``BACKBONES``. The registry is plain data, so params.yaml is
checked against it (input size, layers to unfreeze) without Keras; ``cxr.learn.model`` builds
the bases.
"""

from __future__ import annotations

from dataclasses import dataclass

from cxr.core.errors import CxrError

# The smallest Grad-CAM map, in cells across, that can tell the two lungs from the mediastinum
# between them (a 3x3 map of a 96 px VGG16, or InceptionResNetV2's 1x1, cannot).
GRADCAM_MIN_SIDE = 7


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
    unfreezable_layers: int  # layers with weights in the base, BatchNorm aside: finetune.unfreeze's ceiling
    # Grad-CAM's candidate layers, from the last convolutional feature map (None: the base's output)
    # to earlier, finer ones: Grad-CAM reads the first whose map is at least GRADCAM_MIN_SIDE cells
    # across at the model's input size (cxr.report.audit.gradcam.gradcam_layer).
    gradcam_layers: tuple[str | None, ...] = (None,)

    def input_size(self, image_size: int | str) -> int:
        """The side in pixels for ``train.image_size`` (a number, or "native")."""
        size = self.native_size if image_size == "native" else int(image_size)
        if size < self.min_size:
            raise BackboneError(f"{self.name} needs images of at least {self.min_size} px, got train.image_size={size}")
        return size


BACKBONES = {
    backbone.name: backbone
    for backbone in (
        Backbone(
            "nasnetlarge",
            "NASNetLarge",
            "nasnet",
            "tf",
            331,
            32,
            "NASNet-large-no-top.h5",
            268,
            gradcam_layers=(None, "normal_concat_12", "normal_concat_5"),
        ),
        Backbone(
            "vgg16",
            "VGG16",
            "vgg16",
            "caffe",
            224,
            32,
            "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5",
            13,
            gradcam_layers=("block5_conv3", "block4_conv3"),
        ),
        Backbone(
            "xception",
            "Xception",
            "xception",
            "tf",
            299,
            71,
            "xception_weights_tf_dim_ordering_tf_kernels_notop.h5",
            40,
            gradcam_layers=(None, "block13_sepconv2_act", "block4_sepconv2_act"),
        ),
        Backbone(
            "inceptionresnetv2",
            "InceptionResNetV2",
            "inception_resnet_v2",
            "tf",
            299,
            75,
            "inception_resnet_v2_weights_tf_dim_ordering_tf_kernels_notop.h5",
            244,
            gradcam_layers=(None, "block17_20_ac", "block35_10_ac"),
        ),
    )
}


def get(name: str) -> Backbone:
    """The registered backbone called ``name``.

    Parameters
    ----------
    name : str
        A key of :data:`BACKBONES` (e.g. ``resnet50``).

    Returns
    -------
    Backbone
        Its registry entry.

    Raises
    ------
    BackboneError
        When ``name`` is not a known backbone; the message lists the known ones.
    """
    try:
        return BACKBONES[name]
    except KeyError:
        raise BackboneError(f"unknown backbone {name!r}; known: {sorted(BACKBONES)}") from None
