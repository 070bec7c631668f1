"""Grad-CAM saliency of a classifier on a fixed sample of test images, and the share of each map
that falls inside the lungs (against the share an even spread would have): inside the image's real
lung mask where it has one (:mod:`cxr.learn.lungs`), inside the central lung box otherwise."""

from __future__ import annotations

import keras
import numpy as np
import pandas as pd
import tensorflow as tf

from cxr.core.backbones import GRADCAM_MIN_SIDE, Backbone
from cxr.learn import images, lungs
from cxr.learn.model import HEAD_LAYER, POOL_LAYER, PREPROCESS_LAYER, base_of

# Images per Grad-CAM pass: the tape keeps every activation of the base for the batch.
CHUNK = 16


def saliency_sample(test: pd.DataFrame, per_class: int, seed: int) -> pd.DataFrame:
    """A fixed sample of test images, ``per_class`` of each class (fewer if a class has fewer).

    Parameters
    ----------
    test : pandas.DataFrame
        The test rows of the split.
    per_class : int
        Images per class (``audit.saliency_images_per_class``).
    seed : int
        The random seed; each class is drawn with its own generator seeded by it.

    Returns
    -------
    pandas.DataFrame
        The sampled rows, sorted by class and image id, index reset.
    """
    parts = [
        rows.sample(n=min(per_class, len(rows)), random_state=np.random.default_rng([seed, index]))
        for index, (_, rows) in enumerate(test.groupby("class", sort=True))
    ]
    return pd.concat(parts).sort_values(["class", "image_id"], ignore_index=True)


def gradcam(model: keras.Model, batch: np.ndarray, class_indices: np.ndarray, layer: str | None) -> np.ndarray:
    """Grad-CAM maps (n, height, width) in [0, 1] for the given class of each image.

    ``model`` is a classifier built by :func:`cxr.learn.model.build_classifier` (preprocess -> base ->
    pool -> head). The map is ReLU(sum_k a_k A_k) of the base's feature maps A at ``layer``
    (None: the base's output), where a_k is the mean gradient of the class score y^c over A_k,
    resized to the input size and scaled so each image's maximum is 1 (all zero if none is
    positive). As Grad-CAM defines it, y^c is the score before the softmax (:func:`class_scores`):
    the softmax's gradient p(1 - p) would shrink the maps of confident predictions towards zero.

    Parameters
    ----------
    model : keras.Model
        The classifier.
    batch : numpy.ndarray
        The images, shape (n, height, width, 3), raw 0-255 RGB.
    class_indices : numpy.ndarray
        The class of each image whose map is wanted, shape (n,), integer indices.
    layer : str or None
        The base's layer whose feature maps are read; None: the base's output.

    Returns
    -------
    numpy.ndarray
        The maps, shape (n, height, width), float32 in [0, 1].

    References
    ----------
    Selvaraju, R. R. et al. (2017). Grad-CAM: Visual explanations from deep networks via
    gradient-based localization. ICCV 2017.
    """
    base = base_of(model)
    target = base.get_layer(layer).output if layer else base.output
    inner = keras.Model(base.inputs, [target, base.output])
    inputs = tf.convert_to_tensor(batch, tf.float32)
    with tf.GradientTape() as tape:
        feature_maps, features = inner(model.get_layer(PREPROCESS_LAYER)(inputs), training=False)
        logits = class_scores(model.get_layer(HEAD_LAYER), model.get_layer(POOL_LAYER)(features))
        scores = tf.gather(logits, class_indices, axis=1, batch_dims=1)
    gradients = tf.cast(tape.gradient(scores, feature_maps), tf.float32)
    weights = tf.reduce_mean(gradients, axis=(1, 2))
    maps = tf.nn.relu(tf.einsum("bhwc,bc->bhw", tf.cast(feature_maps, tf.float32), weights))
    maps = tf.image.resize(maps[..., None], inputs.shape[1:3], method="bilinear")[..., 0].numpy()
    peak = maps.reshape(len(maps), -1).max(axis=1)
    return np.divide(maps, peak[:, None, None], out=np.zeros_like(maps), where=peak[:, None, None] > 0)


def class_scores(head: keras.Model, pooled: tf.Tensor) -> tf.Tensor:
    """The head's class scores before its softmax, float32 (n, classes): every head layer but the
    last, then the last Dense layer's affine map without its activation."""
    *hidden, last = head.layers
    x = pooled
    for layer in hidden:
        x = layer(x, training=False)
    kernel, bias = (tf.cast(weight, tf.float32) for weight in (last.kernel, last.bias))
    return tf.matmul(tf.cast(x, tf.float32), kernel) + bias


def box_share(maps: np.ndarray, fraction: float) -> np.ndarray:
    """Per map, the share of its mass inside the central square of side ``fraction`` (NaN if empty).

    A map spread evenly over the image gives about ``fraction ** 2``.
    """
    return mask_share(maps, lungs.box_mask(maps.shape[1], fraction)[None])


def mask_share(maps: np.ndarray, masks: np.ndarray) -> np.ndarray:
    """Per map (n, side, side), the share of its mass inside its mask (n or 1, side, side; bool);
    NaN for an empty map."""
    total = maps.sum(axis=(1, 2))
    inside = (maps * masks).sum(axis=(1, 2))
    return np.divide(inside, total, out=np.full_like(total, np.nan), where=total > 0)


def even_share(size: int, fraction: float) -> float:
    """The lung-box share of a saliency map spread evenly over a ``size`` x ``size`` image."""
    return float(box_share(np.ones((1, size, size)), fraction)[0])


def map_side(model: keras.Model, layer: str | None) -> int:
    """The side of the feature map Grad-CAM reads: its resolution before upsampling.

    Parameters
    ----------
    model : keras.Model
        The classifier.
    layer : str or None
        The base's layer; None: the base's output.

    Returns
    -------
    int
        The feature map's side, in cells.
    """
    base = base_of(model)
    return int((base.get_layer(layer).output if layer else base.output).shape[1])


def gradcam_layer(model: keras.Model, backbone: Backbone) -> tuple[str | None, int, int]:
    """The layer Grad-CAM reads: the backbone's last candidate (``Backbone.gradcam_layers``) whose
    map is at least :data:`~cxr.core.backbones.GRADCAM_MIN_SIDE` cells across at the model's input,
    or its finest candidate when none is.

    Parameters
    ----------
    model : keras.Model
        The classifier.
    backbone : Backbone
        Its registry entry.

    Returns
    -------
    layer : str or None
        The base's layer (None: the base's output).
    side : int
        Its map's side, in cells.
    last_side : int
        The side of the first candidate's map (the last convolutional one).
    """
    sides = [map_side(model, layer) for layer in backbone.gradcam_layers]
    chosen = next((index for index, side in enumerate(sides) if side >= GRADCAM_MIN_SIDE), int(np.argmax(sides)))
    return backbone.gradcam_layers[chosen], sides[chosen], sides[0]


def saliency(
    model: keras.Model,
    layer: str | None,
    sample: pd.DataFrame,
    classes: list[str],
    size: int,
    box: float,
    masks: dict,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, pd.DataFrame]:
    """Grad-CAM of the predicted class for each sampled image, and its mass inside the lungs.

    Parameters
    ----------
    model : keras.Model
        The classifier.
    layer : str or None
        The base's layer Grad-CAM reads (:func:`gradcam_layer`).
    sample : pandas.DataFrame
        The images (``path``, orientation, ``image_id``, ``source``, ``class``).
    classes : list of str
        The classes, in output order.
    size : int
        The input side, in pixels.
    box : float
        The lung box's side as a fraction of the image side (``audit.lung_box``).
    masks : dict of str to Path
        Real lung masks by image id (:func:`cxr.learn.lungs.read_masks`).

    Returns
    -------
    images : numpy.ndarray
        The decoded images, shape (n, size, size, 3), raw 0-255.
    maps : numpy.ndarray
        Their Grad-CAM maps, shape (n, size, size), in [0, 1].
    regions : numpy.ndarray
        Where each image's lungs were taken to be, bool (n, size, size): its real mask, else the box.
    table : pandas.DataFrame
        One row per image: ``image_id``, ``source``, ``class``, ``predicted``, ``lung_box_share``
        (the map's mass inside the lung box), ``region`` (``mask`` where the image has a real lung
        mask, else ``box``), ``lung_share`` (the map's mass inside that region) and
        ``lung_area_share`` (the region's share of the image: an even map's ``lung_share``).
    """
    batch = np.stack(
        [
            images.decode_resize(tf.constant(path), size, int(orientation)).numpy()
            for path, orientation in zip(sample["path"], images.orientations(sample))
        ]
    )
    predicted = np.argmax(model.predict(batch, verbose=0), axis=1)
    maps = np.concatenate(
        [
            gradcam(model, batch[start : start + CHUNK], predicted[start : start + CHUNK], layer)
            for start in range(0, len(batch), CHUNK)
        ]
    )
    regions = np.stack(
        [
            lungs.input_mask(masks[image_id], size) if image_id in masks else lungs.box_mask(size, box)
            for image_id in sample["image_id"]
        ]
    )
    table = (
        sample[["image_id", "source", "class"]]
        .reset_index(drop=True)
        .assign(
            predicted=np.asarray(classes)[predicted],
            lung_box_share=box_share(maps, box),
            region=["mask" if image_id in masks else "box" for image_id in sample["image_id"]],
            lung_share=mask_share(maps, regions),
            lung_area_share=regions.mean(axis=(1, 2)),
        )
    )
    return batch, maps, regions, table
