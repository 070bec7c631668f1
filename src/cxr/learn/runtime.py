"""The runtime a fit runs in: seeds, op determinism, precision policy and distribution strategy.

Several machines (or processes) train one model under ``MultiWorkerMirroredStrategy``, configured by
the ``TF_CONFIG`` environment variable that launchers set (Kubernetes TFJob, SLURM wrappers, Vertex
AI): ``{"cluster": {"worker": ["host:port", ...]}, "task": {"type": "worker", "index": i}}``. Every
worker runs the same stage; the chief (the ``chief`` task, else worker 0) alone writes outputs.
"""

from __future__ import annotations

import json
import os

import keras
import tensorflow as tf

from cxr.core.errors import CxrError
from cxr.core.sections import Train


def cluster() -> dict:
    """The cluster the ``TF_CONFIG`` environment variable describes.

    Returns
    -------
    dict
        ``workers`` (int: the chief and the workers), ``chief`` (bool: the cluster names a chief
        task), ``task`` (``(type, index)`` of this process, or None); without ``TF_CONFIG``: one
        worker, no chief, no task.

    Raises
    ------
    CxrError
        When ``TF_CONFIG`` is not valid JSON.
    """
    text = os.environ.get("TF_CONFIG", "").strip()
    if not text:
        return {"workers": 1, "chief": False, "task": None}
    try:
        config = json.loads(text)
    except json.JSONDecodeError as exc:
        raise CxrError(f"TF_CONFIG: not valid JSON ({exc})") from None
    members = config.get("cluster", {})
    task = config.get("task", {})
    return {
        "workers": len(members.get("chief", [])) + len(members.get("worker", [])),
        "chief": bool(members.get("chief")),
        "task": (task.get("type"), int(task.get("index", 0))) if task else None,
    }


def is_chief() -> bool:
    """Whether this process writes outputs (TensorFlow's convention for multi-worker training).

    Returns
    -------
    bool
        True for the ``chief`` task, worker 0 of a cluster without one, or the only process (no
        ``TF_CONFIG``).
    """
    described = cluster()
    if described["task"] is None:
        return True
    kind, index = described["task"]
    return kind == "chief" or (kind == "worker" and index == 0 and not described["chief"])


def task_name() -> str:
    """This process's task, for its own checkpoint folder and messages.

    Returns
    -------
    str
        ``<type>-<index>`` (e.g. ``worker-1``); "" for the chief (:func:`is_chief`).
    """
    return "" if is_chief() else "{}-{}".format(*cluster()["task"])


def worker_task(params: Train) -> str:
    """The task of a process that trains but writes no outputs.

    Parameters
    ----------
    params : Train
        The ``train`` parameters (``distribute``).

    Returns
    -------
    str
        :func:`task_name` when ``params`` train across workers (:func:`multi_worker`) and this
        process is not the chief; else "" (this process writes the outputs).
    """
    return task_name() if multi_worker(params) else ""


def multi_worker(params: Train) -> bool:
    """Whether ``params`` train on several workers.

    Parameters
    ----------
    params : Train
        The ``train`` parameters (``distribute``).

    Returns
    -------
    bool
        True for ``distribute: multi_worker``, or ``auto`` with a ``TF_CONFIG`` cluster of more than
        one worker.
    """
    return params.distribute == "multi_worker" or (params.distribute == "auto" and cluster()["workers"] > 1)


def configure_runtime(params: Train, seed: int, workers: bool = True) -> tf.distribute.Strategy:
    """Seeds, op determinism, precision policy and the distribution strategy, before any model.

    Op determinism is enabled only without a GPU; mixed precision (``mixed_float16``) only with one.

    Parameters
    ----------
    params : Train
        The ``train`` parameters (``deterministic``, ``mixed_precision``, ``distribute``).
    seed : int
        The random seed of Python, NumPy and TensorFlow.
    workers : bool, optional
        False: never across workers (a stage that runs on one machine whatever ``TF_CONFIG`` says).

    Returns
    -------
    tf.distribute.Strategy
        MultiWorkerMirroredStrategy (``workers`` and :func:`multi_worker`); else MirroredStrategy
        (``distribute: mirrored``, or ``auto`` with more than one GPU, or ``multi_worker`` with
        ``workers`` False and more than one GPU); else the default strategy.

    Raises
    ------
    CxrError
        When ``TF_CONFIG`` is not valid JSON.
    """
    # MultiWorkerMirroredStrategy must exist before any other TensorFlow op of the process.
    strategy = tf.distribute.MultiWorkerMirroredStrategy() if workers and multi_worker(params) else None
    keras.utils.set_random_seed(seed)
    gpus = tf.config.list_physical_devices("GPU")
    if params.deterministic and not gpus:
        tf.config.experimental.enable_op_determinism()
    keras.mixed_precision.set_global_policy("mixed_float16" if params.mixed_precision and gpus else "float32")
    if strategy is not None:
        return strategy
    if params.distribute == "mirrored" or (params.distribute in ("auto", "multi_worker") and len(gpus) > 1):
        devices = None if gpus else [device.name for device in tf.config.list_logical_devices("CPU")]
        return tf.distribute.MirroredStrategy(devices=devices)
    return tf.distribute.get_strategy()


class InStep(keras.Model):
    """``model``'s layers (and so its variables), fitted by ``Model.fit`` under
    ``MultiWorkerMirroredStrategy`` with the same callbacks, checkpoints and history as on one machine.

    Keras 3 (3.15; keras-team/keras#20585) cannot ``fit`` a model under that strategy, for two reasons
    this wrapper removes: a model created in the strategy's scope is built by reducing its first batch
    across workers eagerly, which the strategy refuses ("unsupported type PerReplica"), so the wrapper
    takes Keras' path for a model created outside any scope (built when the step is traced, under the
    ambient strategy); and each step's scalar logs are averaged over axis 0, so its steps return them
    as vectors of one value. Losses and weights stay identical on every worker.

    Parameters
    ----------
    model : keras.Model
        A functional model whose variables were created in the strategy's scope.
    """

    def __init__(self, model: keras.Model):
        super().__init__(model.inputs, model.outputs, name=model.name)
        self._distribute_strategy = None

    def train_step(self, data):
        return {name: tf.reshape(value, [1]) for name, value in super().train_step(data).items()}

    def test_step(self, data):
        return {name: tf.reshape(value, [1]) for name, value in super().test_step(data).items()}


def strategy_name(strategy: tf.distribute.Strategy) -> str:
    """The public name of a strategy, for the run's tags.

    Parameters
    ----------
    strategy : tf.distribute.Strategy
        What :func:`configure_runtime` returned.

    Returns
    -------
    str
        ``MultiWorkerMirroredStrategy`` (TensorFlow's class behind it is ``CollectiveAllReduceStrategy``),
        ``MirroredStrategy`` or ``none`` (the default strategy).
    """
    names = {
        tf.distribute.MultiWorkerMirroredStrategy: "MultiWorkerMirroredStrategy",
        tf.distribute.MirroredStrategy: "MirroredStrategy",
    }
    return next((name for kind, name in names.items() if isinstance(strategy, kind)), "none")


def across_workers() -> bool:
    """Whether the ambient strategy trains across workers.

    Returns
    -------
    bool
        True inside the scope of a ``MultiWorkerMirroredStrategy``.
    """
    return isinstance(tf.distribute.get_strategy(), tf.distribute.MultiWorkerMirroredStrategy)
