"""The runtime a fit runs in: seeds, op determinism, precision policy and distribution strategy."""

from __future__ import annotations

import keras
import tensorflow as tf

from cxr.core.sections import Train


def configure_runtime(params: Train, seed: int) -> tf.distribute.Strategy:
    """Seeds, op determinism, precision policy and the distribution strategy, before any model.

    Op determinism is enabled only without a GPU; mixed precision (``mixed_float16``) only with one.

    Parameters
    ----------
    params : Train
        The ``train`` parameters (``deterministic``, ``mixed_precision``, ``distribute``).
    seed : int
        The random seed of Python, NumPy and TensorFlow.

    Returns
    -------
    tf.distribute.Strategy
        A MirroredStrategy (``distribute: mirrored``, or ``auto`` with more than one GPU), else the
        default strategy.
    """
    keras.utils.set_random_seed(seed)
    gpus = tf.config.list_physical_devices("GPU")
    if params.deterministic and not gpus:
        tf.config.experimental.enable_op_determinism()
    keras.mixed_precision.set_global_policy("mixed_float16" if params.mixed_precision and gpus else "float32")
    if params.distribute == "mirrored" or (params.distribute == "auto" and len(gpus) > 1):
        devices = None if gpus else [device.name for device in tf.config.list_logical_devices("CPU")]
        return tf.distribute.MirroredStrategy(devices=devices)
    return tf.distribute.get_strategy()
