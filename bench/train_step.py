"""Training speed per backbone: images per second of a frozen-base step and a fine-tune step
(demo and native sizes; with and without XLA, and mixed precision where a GPU supports it), the
frozen-feature cache against full-model epochs, and real input batches against in-memory ones.

    python bench/train_step.py [--backbones vgg16 xception] [--sizes 96 native] [--steps 5]

Keras publishes per-step *inference* times for these models (batch 32, 224-331 px; CPU: 92-core
AMD EPYC, GPU: A100): they are printed next to ours for scale, not as a like-for-like target.

The step rates run under any Keras backend (``KERAS_BACKEND=jax`` on a GPU machine without
TensorFlow): TensorFlow and ``cxr.learn.images`` are imported only by the feature-cache and real-input
comparisons, which need tf.data and are skipped, with the reason, under another backend. Under
JAX "XLA on" is ``jax.jit`` and "off" is eager op-by-op execution (not TensorFlow's graph mode).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
from common import Timer, median, save, synthetic_split  # noqa: E402

from cxr.core import backbones  # noqa: E402
from cxr.core.sections import Augment, Head  # noqa: E402
from cxr.learn.model import build_classifier, feature_extractor, unfreeze_last  # noqa: E402

if TYPE_CHECKING:
    import tensorflow as tf

# keras.io/api/applications: time (ms) per inference step, batch 32, (CPU, GPU).
KERAS_PUBLISHED_MS = {
    "xception": (109.4, 8.1),
    "vgg16": (69.5, 4.2),
    "inceptionresnetv2": (130.2, 10.0),
    "nasnetlarge": (344.5, 20.0),
}
HEAD = Head(units=256, dropout=0.5, normalize=False)
# What jit_compile=True/False means per backend, written next to the numbers.
XLA_MEANING = {
    "tensorflow": ("tf.function graph", "tf.function + XLA"),
    "jax": ("eager op-by-op", "jax.jit (XLA)"),
    "torch": ("eager", "torch.compile"),
}


def gpu_name() -> str | None:
    """The first GPU the Keras backend itself will use (not merely one the machine has), or None."""
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        gpus = tf.config.list_physical_devices("GPU")
        return tf.config.experimental.get_device_details(gpus[0]).get("device_name", "GPU") if gpus else None
    if backend == "jax":
        import jax

        gpus = [device for device in jax.devices() if device.platform == "gpu"]
        return gpus[0].device_kind if gpus else None
    if backend == "torch":
        import torch

        return torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return None


def compiled(model: keras.Model, xla: bool) -> keras.Model:
    model.compile(
        optimizer=keras.optimizers.Adam(1e-4, amsgrad=True), loss="sparse_categorical_crossentropy", jit_compile=xla
    )
    return model


def step_rate(model: keras.Model, batch: np.ndarray, labels: np.ndarray, steps: int) -> tuple[float, float]:
    """Images per second of ``train_on_batch`` after two warm-up steps (tracing, compiling), and the
    last loss (``train_on_batch`` returns host numbers, so every timed step has finished)."""
    for _ in range(2):
        model.train_on_batch(batch, labels)
    seconds = []
    for _ in range(steps):
        with Timer() as timer:
            loss = model.train_on_batch(batch, labels)
        seconds.append(timer.seconds)
    return len(batch) / median(seconds), float(np.ravel(loss)[0])


def precision_check(model: keras.Model) -> dict:
    """Under mixed_float16, Keras wants the softmax in float32 and a loss-scaling optimizer."""
    return {
        "output_dtype": keras.backend.standardize_dtype(model.outputs[0].dtype),
        "probabilities_compute_dtype": model.get_layer("head").get_layer("probabilities").compute_dtype,
        "loss_scale_optimizer": isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer),
    }


def step_rates(backbone, size: int, batch_size: int, steps: int, xla: bool, mixed: bool) -> dict:
    keras.mixed_precision.set_global_policy("mixed_float16" if mixed else "float32")
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    batch = rng.uniform(0, 255, (batch_size, size, size, 3)).astype(np.float32)
    labels = rng.integers(0, 4, batch_size)
    model = build_classifier(backbone, size, 4, HEAD, None)
    frozen, frozen_loss = step_rate(compiled(model, xla), batch, labels, steps)
    check = precision_check(model)
    unfreeze_last(model, 2)
    finetune, finetune_loss = step_rate(compiled(model, xla), batch, labels, steps)
    keras.backend.clear_session()
    losses = [frozen_loss, finetune_loss]
    return {
        "frozen_images_per_s": frozen,
        "finetune_images_per_s": finetune,
        **check,
        "last_losses": losses,
        "losses_finite": bool(np.all(np.isfinite(losses))),
    }


def epoch_seconds(model: keras.Model, dataset: tf.data.Dataset, epochs: int) -> list[float]:
    seconds = []
    for _ in range(epochs):
        with Timer() as timer:
            model.fit(dataset, epochs=1, verbose=0)
        seconds.append(timer.seconds)
    return seconds


def feature_cache(backbone, frame, classes: list[str], size: int, batch_size: int, epochs: int) -> dict:
    """Seconds per frozen-base epoch on images (the base runs every epoch) against the cached path:
    the base's features once, then head epochs on them (what ``train_frozen`` does)."""
    import tensorflow as tf

    from cxr.learn import images

    keras.mixed_precision.set_global_policy("float32")
    train = frame[frame["split"] == "train"]
    decoded = images.image_dataset(train, classes, size, "memory")
    model = compiled(build_classifier(backbone, size, len(classes), HEAD, None), False)
    full = epoch_seconds(model, images.TrainingBatches(decoded, len(train), batch_size, 0).epoch(0), epochs + 1)[1:]
    with Timer() as extraction:
        features = feature_extractor(model).predict(decoded.map(lambda x, y: x).batch(batch_size), verbose=0)
    head_data = tf.data.Dataset.from_tensor_slices((features, images.label_indices(train, classes)))
    head = compiled(model.get_layer("head"), False)
    cached = epoch_seconds(head, images.TrainingBatches(head_data, len(train), batch_size, 0).epoch(0), epochs + 1)[1:]
    keras.backend.clear_session()
    return {
        "images": len(train),
        "full_epoch_s": median(full),
        "feature_extraction_s": extraction.seconds,
        "cached_epoch_s": median(cached),
        "speedup_after_first_epoch": median(full) / median(cached),
    }


def real_vs_memory(backbone, frame, classes: list[str], size: int, batch_size: int, epochs: int) -> dict:
    """Frozen-base epochs fed by the real pipeline (cached decode, augmentation, prefetch) against
    the same number of batches of in-memory tensors: how much the input pipeline slows training."""
    import tensorflow as tf

    from cxr.learn import images

    keras.mixed_precision.set_global_policy("float32")
    train = frame[frame["split"] == "train"]
    augment = images.augmenter(
        Augment(enabled=True, rotation=0.05, zoom=0.1, shift=0.05, contrast=0.1, horizontal_flip=False)
    )
    real = (
        images.TrainingBatches(images.image_dataset(train, classes, size, "memory"), len(train), batch_size, 0, augment)
        .epoch(0)
        .prefetch(images.AUTOTUNE)
    )
    rng = np.random.default_rng(0)
    tensors = rng.uniform(0, 255, (len(train), size, size, 3)).astype(np.float32)
    memory = tf.data.Dataset.from_tensor_slices((tensors, images.label_indices(train, classes))).batch(batch_size)
    model = compiled(build_classifier(backbone, size, len(classes), HEAD, None), False)
    real_s = median(epoch_seconds(model, real, epochs + 1)[1:])
    memory_s = median(epoch_seconds(model, memory.cache(), epochs + 1)[1:])
    keras.backend.clear_session()
    return {"real_epoch_s": real_s, "memory_epoch_s": memory_s, "real_over_memory": real_s / memory_s}


def tf_data_skipped() -> str | None:
    """Why the feature-cache and real-input comparisons cannot run here, or None when they can."""
    backend = keras.backend.backend()
    if backend == "tensorflow":
        return None
    return (
        f"Keras backend is {backend}: the feature-cache and real-input comparisons feed the model "
        "through tf.data (cxr.learn.images), which needs TensorFlow and its backend"
    )


def results_name(backend: str, gpu: str | None, args: argparse.Namespace) -> str:
    """``train_step_<cpu|gpu>_<sizes>``; other backends add theirs, and XLA when not both."""
    parts = ["train_step", "gpu" if gpu else "cpu"]
    if backend != "tensorflow":
        parts.append(backend)
    parts.append("-".join(args.sizes))
    if backend != "tensorflow" and args.xla != "both":
        parts.append(f"xla-{args.xla}")
    return "_".join(parts)


def step_row(name: str, backbone, size: int, args: argparse.Namespace, xla: bool, mixed: bool, gpu: str | None) -> dict:
    row = {
        "backbone": name,
        "size": size,
        "xla": xla,
        "mixed_precision": mixed,
        "execution": XLA_MEANING.get(keras.backend.backend(), ("off", "on"))[xla],
        **step_rates(backbone, size, args.batch, args.steps, xla, mixed),
    }
    published = KERAS_PUBLISHED_MS[name][1 if gpu else 0]
    row["keras_published_inference_images_per_s"] = 32 / (published / 1000)
    print(
        f"{name} {size}px {row['execution']} mixed={mixed}: "
        f"frozen {row['frozen_images_per_s']:.1f} img/s, "
        f"fine-tune {row['finetune_images_per_s']:.1f} img/s (Keras-published inference "
        f"{row['keras_published_inference_images_per_s']:.0f} img/s on its machine); "
        f"output {row['output_dtype']}, losses {'finite' if row['losses_finite'] else 'NOT finite'}"
    )
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbones", nargs="+", default=list(backbones.BACKBONES))
    parser.add_argument("--sizes", nargs="+", default=["96", "native"])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--steps", type=int, default=5, help="timed steps per measurement (median reported)")
    parser.add_argument("--epochs", type=int, default=3, help="timed epochs for the cache comparisons")
    parser.add_argument("--xla", choices=["both", "on", "off"], default="both")
    args = parser.parse_args()

    backend, gpu = keras.backend.backend(), gpu_name()
    print(f"Keras {keras.__version__} on {backend}; GPU: {gpu or 'none'}")
    xla_options = {"both": [False, True], "on": [True], "off": [False]}[args.xla]
    precision_options = [False, True] if gpu else [False]
    skipped = tf_data_skipped()
    if skipped:
        print(f"skipping the feature-cache and real-input comparisons: {skipped}")
    name_, command = results_name(backend, gpu, args), "python " + " ".join(sys.argv)
    # Saved after every row, so a run cut short keeps what it measured ("complete" says whether it was).
    record = {
        "backend": backend,
        "gpu": bool(gpu),
        "gpu_name": gpu,
        "steps": [],
        "caches": {},
        "caches_skipped": skipped,
        "complete": False,
    }
    with tempfile.TemporaryDirectory(prefix="cxr-bench-") as folder:
        frame = classes = None
        if skipped is None and "96" in args.sizes:
            frame, _ = synthetic_split(Path(folder), covid_patients=90, kermany_per_class=60, min_px=160, max_px=320)
            classes = sorted(frame["class"].unique())
        for name in args.backbones:
            backbone = backbones.get(name)
            for size_name in args.sizes:
                size = backbone.input_size(size_name)
                for xla in xla_options:
                    for mixed in precision_options:
                        record["steps"].append(step_row(name, backbone, size, args, xla, mixed, gpu))
                        save(name_, command, vars(args), record)
            if frame is None:
                continue
            size = backbone.input_size(96)
            caches = record["caches"]
            caches[name] = {
                "feature_cache": feature_cache(backbone, frame, classes, size, args.batch, args.epochs),
                "input_pipeline": real_vs_memory(backbone, frame, classes, size, args.batch, args.epochs),
            }
            cache, feed = caches[name]["feature_cache"], caches[name]["input_pipeline"]
            print(
                f"{name} {size}px: full epoch {cache['full_epoch_s']:.2f} s, cached-feature epoch "
                f"{cache['cached_epoch_s']:.3f} s ({cache['speedup_after_first_epoch']:.0f}x); real-data epoch "
                f"{feed['real_epoch_s']:.2f} s vs in-memory {feed['memory_epoch_s']:.2f} s "
                f"({feed['real_over_memory']:.2f}x)"
            )
    record["complete"] = True
    save(name_, command, vars(args), record)


if __name__ == "__main__":
    main()
