"""Decoding, resizing, augmentation and the tf.data pipelines that feed training.

Every source format (grayscale, RGB, RGBA, palette and 16-bit PNG, JPEG, EXIF-rotated JPEG)
decodes, through :mod:`cxr.data.image_files`, to upright float RGB in [0, 255] at the requested
size; models take those pixels and do their own preprocessing.
Decoded images are cached (in memory, or on disk keyed by the images' content and the size)
so epochs after the first, and later backbones of the same size, never decode a file again.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import tensorflow as tf

from cxr.core.sections import Augment
from cxr.data.image_files import decode_tensor

if TYPE_CHECKING:
    from cxr.learn.lungs import HiddenRegion

AUTOTUNE = tf.data.AUTOTUNE


def decode_resize(path: tf.Tensor, size: int, orientation: tf.Tensor | int = 1) -> tf.Tensor:
    """One image file -> float32 (size, size, 3) in [0, 255], turned upright as its EXIF
    ``orientation`` (the catalog's column) says."""
    return decode_bytes(tf.io.read_file(path), size, orientation)


def decode_bytes(data: tf.Tensor, size: int, orientation: tf.Tensor | int = 1) -> tf.Tensor:
    """One PNG or JPEG file's bytes -> what :func:`decode_resize` gives for the file, decoded by
    :func:`cxr.data.image_files.decode_tensor` (the project's one decoder) at :func:`decode_side`."""
    return model_input(decode_tensor(data, orientation, decode_side(size)), size)


def decode_side(size: int) -> int:
    """The shorter side, in pixels, a JPEG is decoded at (at least) for a model input of ``size`` px:
    twice it, so the antialiased resize rather than the decoder's scaling sets the pixels (within
    2 of 255 grey levels of a full-size decode; docs/PERFORMANCE.md)."""
    return 2 * size


def model_input(image: tf.Tensor, size: int) -> tf.Tensor:
    """An upright (height, width, 3) image in [0, 1] -> what every model takes: float32
    (size, size, 3) in [0, 255]. Training, evaluation and prediction all resize here."""
    image = tf.image.resize(image, (size, size), antialias=True)
    return tf.clip_by_value(image, 0.0, 1.0) * 255.0


def orientations(frame: pd.DataFrame) -> np.ndarray:
    """Each row's EXIF orientation; 1 (as stored) for tables written before the catalog had it."""
    if "orientation" not in frame.columns:
        return np.ones(len(frame), np.int32)
    return frame["orientation"].fillna(1).astype(int).to_numpy(np.int32)


def label_indices(frame: pd.DataFrame, classes: list[str]) -> np.ndarray:
    return frame["class"].map({name: index for index, name in enumerate(classes)}).to_numpy(np.int32)


def center_box(size: int, fraction: float) -> slice:
    """Rows (and columns) of the central square whose side is ``fraction`` of ``size``.

    Parameters
    ----------
    size : int
        The image side, in pixels.
    fraction : float
        The square's side as a fraction of ``size`` (``audit.lung_box``), 0-1.

    Returns
    -------
    slice
        The pixel rows (and columns) of the square.
    """
    margin = int(round(size * (1 - fraction) / 2))
    return slice(margin, size - margin)


def decoded_megabytes(count: int, size: int) -> float:
    """Memory taken by ``count`` decoded float32 RGB images of side ``size``."""
    return count * size * size * 3 * 4 / 2**20


def image_dataset(
    frame: pd.DataFrame,
    classes: list[str],
    size: int,
    cache: str,
    hidden: HiddenRegion | None = None,
    memory_limit_mb: float | None = None,
    cache_dir: Path | None = None,
) -> tf.data.Dataset:
    """(image, label) pairs in the frame's order, decoded in parallel and cached.

    ``cache`` is ``memory`` or ``disk`` (files under ``cache_dir``, named by content, order and
    size). A memory cache larger than ``memory_limit_mb`` goes to disk instead. ``hidden``: blank
    (to black) that region of each image, the lungs hidden (after the cache, so the decoded images
    are shared with the unmasked runs).
    """
    if cache == "memory" and memory_limit_mb is not None and decoded_megabytes(len(frame), size) > memory_limit_mb:
        print(
            f"cache: {len(frame)} images at {size} px need {decoded_megabytes(len(frame), size):.0f} MB, over "
            f"train.cache_memory_limit_mb={memory_limit_mb:g}: caching on disk under {cache_dir}"
        )
        cache = "disk"
    paths = frame["path"].tolist()
    dataset = tf.data.Dataset.from_tensor_slices((paths, orientations(frame), label_indices(frame, classes)))
    dataset = dataset.map(
        lambda path, orientation, label: (decode_resize(path, size, orientation), label), num_parallel_calls=AUTOTUNE
    )
    if cache == "disk":
        if cache_dir is None:
            raise ValueError("a disk cache needs cache_dir")
        cache_dir.mkdir(parents=True, exist_ok=True)
        dataset = dataset.cache(str(cache_dir / cache_key(frame, size)))
    else:
        dataset = dataset.cache()
    if hidden is not None and hidden.fixed is not None:
        kept = tf.constant((~hidden.fixed)[..., None].astype(np.float32))
        dataset = dataset.map(lambda image, label: (image * kept, label))
    elif hidden is not None:
        kept_each = tf.data.Dataset.from_tensor_slices((~hidden.blanks(frame))[..., None])
        dataset = tf.data.Dataset.zip((dataset, kept_each)).map(
            lambda pair, kept: (pair[0] * tf.cast(kept, tf.float32), pair[1])
        )
    return dataset


def cache_key(frame: pd.DataFrame, size: int) -> str:
    """A name that changes whenever the images (by content), their order, the size or the decoding
    (upright, JPEGs at :func:`decode_side`) change."""
    digest = hashlib.sha256(f"{size}\nupright\njpeg-at-{decode_side(size)}\n".encode())
    for value in frame["sha256"]:
        digest.update(value.encode())
    return f"{size}px-{digest.hexdigest()[:16]}"


class Augmenter:
    """The study's augmentation on a batch: rotation, zoom and shift composed into one affine warp
    per image (one bilinear resampling, as ImageDataGenerator does, instead of three), then
    contrast and an optional horizontal flip.

    Random draws are stateless, keyed by a per-batch seed, so a run is reproducible however
    many batches are augmented in parallel. Ranges: rotation and shift as fractions (of a full
    turn, of the side), zoom as 1 +/- ``zoom``, contrast as 1 +/- ``contrast`` about the mean.
    """

    def __init__(self, params: Augment):
        self.params = params

    def __call__(self, batch: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
        """``batch``: float (n, height, width, channels) in [0, 255]; ``seed``: int (2,), the
        batch's key. Returns the augmented batch, same shape, float32 in [0, 255]."""
        params = self.params
        batch = tf.convert_to_tensor(batch, tf.float32)
        count = tf.shape(batch)[0]
        height, width = tf.cast(tf.shape(batch)[1], tf.float32), tf.cast(tf.shape(batch)[2], tf.float32)
        keys = tf.random.experimental.stateless_split(tf.cast(seed, tf.int64), 6)

        def uniform(index: int, low: float, high: float) -> tf.Tensor:
            return tf.random.stateless_uniform([count], keys[index], low, high)

        angle = uniform(0, -params.rotation * 2 * np.pi, params.rotation * 2 * np.pi)
        scale = 1.0 / uniform(1, 1 - params.zoom, 1 + params.zoom)
        shift_x = uniform(2, -params.shift, params.shift) * width
        shift_y = uniform(3, -params.shift, params.shift) * height
        center_x, center_y = (width - 1) / 2, (height - 1) / 2
        cos, sin = tf.cos(angle) * scale, tf.sin(angle) * scale
        # Output pixel q samples the input at c + R(-angle) (q - c - shift) / zoom.
        from_x, from_y = center_x + shift_x, center_y + shift_y
        zeros = tf.zeros_like(angle)
        transforms = tf.stack(
            [
                cos,
                sin,
                center_x - cos * from_x - sin * from_y,
                -sin,
                cos,
                center_y + sin * from_x - cos * from_y,
                zeros,
                zeros,
            ],
            axis=1,
        )
        batch = tf.raw_ops.ImageProjectiveTransformV3(
            images=batch,
            transforms=transforms,
            output_shape=tf.shape(batch)[1:3],
            fill_value=0.0,
            interpolation="BILINEAR",
            fill_mode="CONSTANT",
        )
        if params.contrast:
            factor = uniform(4, 1 - params.contrast, 1 + params.contrast)[:, None, None, None]
            mean = tf.reduce_mean(batch, axis=(1, 2, 3), keepdims=True)
            batch = tf.clip_by_value((batch - mean) * factor + mean, 0.0, 255.0)
        if params.horizontal_flip:
            flip = uniform(5, 0, 1)[:, None, None, None] < 0.5
            batch = tf.where(flip, tf.reverse(batch, axis=[2]), batch)
        return batch


def augmenter(params: Augment) -> Augmenter | None:
    """The study's augmentation, or None when it is off."""
    return Augmenter(params) if params.enabled else None


# Examples shuffled at once: the whole train split of every set cxr has met (the study's 680
# images, Kaggle's 5,216); larger splits are shuffled within windows of this many.
SHUFFLE_BUFFER = 10_000


def batches(dataset: tf.data.Dataset, batch_size: int) -> tf.data.Dataset:
    """Batches in the dataset's order, prefetched: what validation and evaluation read."""
    return dataset.batch(batch_size).prefetch(AUTOTUNE)


@dataclass(frozen=True)
class TrainingBatches:
    """The train split as batches, each epoch's order and augmentation a function of
    (``seed``, epoch) alone.

    Nothing depends on how many epochs a process has already run, so a fit resumed at epoch k
    reads exactly the batches an uninterrupted fit reads from epoch k on: the order of epoch e is
    a shuffle seeded by a key derived from (seed, e), and batch i of epoch e is augmented with the
    key fold_in((seed, e), i + 1) (``tf.random.experimental.stateless_fold_in``).

    ``dataset``: unbatched (example, label) pairs in a fixed order (cached decoded images, or
    features); ``count``: how many.
    """

    dataset: tf.data.Dataset
    count: int
    batch_size: int
    seed: int
    augment: Augmenter | None = None

    @property
    def steps_per_epoch(self) -> int:
        return math.ceil(self.count / self.batch_size)

    def epoch(self, index: int) -> tf.data.Dataset:
        """The batches of epoch ``index`` (0-based): (examples, labels) pairs."""
        return self.epochs(index, index + 1)

    def epochs(self, first: int, last: int) -> tf.data.Dataset:
        """Epochs ``first`` to ``last - 1`` (0-based) one after the other, prefetched: what
        ``model.fit(..., initial_epoch=first, epochs=last, steps_per_epoch=self.steps_per_epoch)``
        reads."""
        return tf.data.Dataset.range(first, last).flat_map(self._epoch).prefetch(AUTOTUNE)

    def _epoch(self, index: tf.Tensor) -> tf.data.Dataset:
        """One epoch, traced in the graph of ``flat_map``'s function."""
        key = tf.stack([tf.constant(self.seed, tf.int64), index])
        order = tf.cast(tf.random.experimental.stateless_fold_in(key, 0)[0], tf.int64)
        # The shuffle's seed pair is (1, order), set on this function's graph: the order then
        # depends on (seed, epoch) alone, and TensorFlow's seed logic never meets a process-wide
        # seed of 0 (with one, it reads a tensor seed as a Python bool and fails).
        tf.compat.v1.set_random_seed(1)
        epoch = self.dataset.shuffle(SHUFFLE_BUFFER, seed=order, reshuffle_each_iteration=False).batch(self.batch_size)
        if self.augment is not None:
            augment = self.augment
            epoch = epoch.enumerate().map(
                lambda step, batch: (
                    augment(batch[0], tf.random.experimental.stateless_fold_in(key, step + 1)),
                    batch[1],
                ),
                num_parallel_calls=AUTOTUNE,
            )
        return epoch
