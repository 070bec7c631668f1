"""Decoding, resizing, augmentation and the tf.data pipelines that feed training.

Every source format (grayscale, RGB, RGBA, 16-bit PNG, JPEG) decodes to float RGB in
[0, 255] at the requested size; models take those pixels and do their own preprocessing.
Decoded images are cached (in memory, or on disk keyed by the images' content and the size)
so epochs after the first, and later backbones of the same size, never decode a file again.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pandas as pd
import tensorflow as tf

from cxr.config import Augment

AUTOTUNE = tf.data.AUTOTUNE
DISK_CACHE = Path("data/cache/images")


def decode_resize(path: tf.Tensor, size: int) -> tf.Tensor:
    """One image file -> float32 (size, size, 3) in [0, 255]."""
    image = tf.io.decode_image(tf.io.read_file(path), channels=3, dtype=tf.float32, expand_animations=False)
    image = tf.image.resize(image, (size, size), antialias=True)
    return tf.clip_by_value(image, 0.0, 1.0) * 255.0


def label_indices(frame: pd.DataFrame, classes: list[str]) -> np.ndarray:
    return frame["class"].map({name: index for index, name in enumerate(classes)}).to_numpy(np.int32)


def center_box(size: int, fraction: float) -> slice:
    """Rows (and columns) of the central square whose side is ``fraction`` of ``size``."""
    margin = int(round(size * (1 - fraction) / 2))
    return slice(margin, size - margin)


def hide_center(image: tf.Tensor, fraction: float) -> tf.Tensor:
    """Blank the central square (to black) of one (size, size, 3) image: the lungs hidden."""
    size = int(image.shape[0])
    mask = np.ones((size, size, 1), np.float32)
    box = center_box(size, fraction)
    mask[box, box] = 0.0
    return image * mask


def image_dataset(frame: pd.DataFrame, classes: list[str], size: int, cache: str,
                  hidden_center: float | None = None) -> tf.data.Dataset:
    """(image, label) pairs in the frame's order, decoded in parallel and cached.

    ``hidden_center``: blank the central square of that side fraction (after the cache, so
    the decoded images are shared with the unmasked runs).
    """
    paths = frame["path"].tolist()
    dataset = tf.data.Dataset.from_tensor_slices((paths, label_indices(frame, classes)))
    dataset = dataset.map(lambda path, label: (decode_resize(path, size), label), num_parallel_calls=AUTOTUNE)
    if cache == "disk":
        DISK_CACHE.mkdir(parents=True, exist_ok=True)
        dataset = dataset.cache(str(DISK_CACHE / cache_key(frame, size)))
    else:
        dataset = dataset.cache()
    if hidden_center is not None:
        dataset = dataset.map(lambda image, label: (hide_center(image, hidden_center), label))
    return dataset


def cache_key(frame: pd.DataFrame, size: int) -> str:
    """A name that changes whenever the images (by content), their order or the size change."""
    digest = hashlib.sha256(f"{size}\n".encode())
    for value in frame["sha256"]:
        digest.update(value.encode())
    return f"{size}px-{digest.hexdigest()[:16]}"


def augmenter(params: Augment, seed: int):
    """The study's augmentation as Keras preprocessing layers; None when it is off."""
    import keras

    if not params.enabled:
        return None
    layers = []
    if params.rotation:
        layers.append(keras.layers.RandomRotation(params.rotation, fill_mode="constant", seed=seed))
    if params.zoom:
        layers.append(keras.layers.RandomZoom(params.zoom, fill_mode="constant", seed=seed + 1))
    if params.shift:
        layers.append(keras.layers.RandomTranslation(params.shift, params.shift, fill_mode="constant", seed=seed + 2))
    if params.contrast:
        layers.append(keras.layers.RandomContrast(params.contrast, value_range=(0, 255), seed=seed + 3))
    if params.horizontal_flip:
        layers.append(keras.layers.RandomFlip("horizontal", seed=seed + 4))
    return keras.Sequential(layers, name="augment") if layers else None


def batches(dataset: tf.data.Dataset, batch_size: int, *, shuffle_seed: int | None = None,
            augment=None) -> tf.data.Dataset:
    """Shuffle (when a seed is given), batch, augment on the CPU side, prefetch."""
    if shuffle_seed is not None:
        dataset = dataset.shuffle(10_000, seed=shuffle_seed, reshuffle_each_iteration=True)
    dataset = dataset.batch(batch_size)
    if augment is not None:
        dataset = dataset.map(lambda images, labels: (augment(images, training=True), labels),
                              num_parallel_calls=AUTOTUNE)
    return dataset.prefetch(AUTOTUNE)


def example_batch(split: pd.DataFrame, size: int) -> np.ndarray:
    """One validation image, decoded as a model expects it: MLflow's input example."""
    row = split[split["split"] == "val"].iloc[0]
    return decode_resize(tf.constant(row["path"]), size).numpy()[None]
