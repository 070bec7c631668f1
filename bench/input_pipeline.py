"""Images per second of augmented, preprocessed training batches: our tf.data pipeline (first
epoch, which decodes, and cached epochs) against the study's tool, Keras' legacy
``ImageDataGenerator.flow_from_dataframe``, on the same images, size, batch and augmentation.

    python bench/input_pipeline.py [--size 224] [--batch 32] [--epochs 3] [--repeats 3]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import tensorflow as tf  # noqa: E402
from common import Timer, median, save, synthetic_split  # noqa: E402

from cxr.core import backbones  # noqa: E402
from cxr.core.sections import Augment  # noqa: E402
from cxr.learn import images  # noqa: E402
from cxr.learn.model import keras_preprocess_input, preprocessing  # noqa: E402

# The augmentations both tools have: rotation, zoom and shift (ImageDataGenerator has no contrast).
AUGMENT = Augment(enabled=True, rotation=0.05, zoom=0.1, shift=0.05, contrast=0.0, horizontal_flip=False)


def keras_layers(seed: int = 0):
    """The same augmentation as three Keras preprocessing layers (each resamples the batch)."""
    layers = keras.Sequential(
        [
            keras.layers.RandomRotation(AUGMENT.rotation, fill_mode="constant", seed=seed),
            keras.layers.RandomZoom(AUGMENT.zoom, fill_mode="constant", seed=seed + 1),
            keras.layers.RandomTranslation(AUGMENT.shift, AUGMENT.shift, fill_mode="constant", seed=seed + 2),
        ]
    )
    return lambda batch: layers(batch, training=True)


def ours(frame, classes, size: int, batch: int, epochs: int, backbone, augment_with: str = "cxr") -> list[float]:
    """Seconds per epoch of ``images.TrainingBatches`` over ``images.image_dataset`` + the model's preprocessing;
    augmentation by ``cxr.learn.images.Augmenter`` or, for comparison, by Keras preprocessing layers."""
    preprocess = preprocessing(backbone)
    decoded = images.image_dataset(frame, classes, size, "memory")
    if augment_with == "cxr":
        dataset = images.TrainingBatches(decoded, len(frame), batch, 0, images.augmenter(AUGMENT)).epoch(0)
    else:
        augment = keras_layers()
        dataset = (
            images.TrainingBatches(decoded, len(frame), batch, 0)
            .epoch(0)
            .map(lambda x, y: (augment(x), y), num_parallel_calls=images.AUTOTUNE)
        )
    dataset = dataset.map(lambda x, y: (preprocess(x), y), num_parallel_calls=images.AUTOTUNE)
    seconds = []
    for _ in range(epochs):
        with Timer() as timer:
            for _ in dataset:
                pass
        seconds.append(timer.seconds)
    return seconds


def image_data_generator(frame, size: int, batch: int, epochs: int, backbone) -> list[float]:
    """Seconds per epoch of the study's ``ImageDataGenerator(...).flow_from_dataframe``."""
    generator = tf.keras.preprocessing.image.ImageDataGenerator(
        rotation_range=AUGMENT.rotation * 360,
        zoom_range=AUGMENT.zoom,
        width_shift_range=AUGMENT.shift,
        height_shift_range=AUGMENT.shift,
        fill_mode="constant",
        preprocessing_function=lambda x: keras_preprocess_input(backbone, x),
    )
    flow = generator.flow_from_dataframe(
        frame,
        x_col="path",
        y_col="class",
        target_size=(size, size),
        class_mode="sparse",
        batch_size=batch,
        shuffle=True,
        seed=0,
    )
    seconds = []
    for _ in range(epochs):
        with Timer() as timer:
            for _ in range(len(flow)):
                next(flow)
        seconds.append(timer.seconds)
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=224, help="model input side in pixels")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--epochs", type=int, default=3, help="epochs per run (the first decodes)")
    parser.add_argument("--repeats", type=int, default=3, help="runs whose median is reported")
    parser.add_argument("--backbone", default="vgg16", help="whose preprocess_input is applied")
    parser.add_argument("--patients", type=int, default=90, help="COVID-collection patients generated")
    parser.add_argument("--min-px", type=int, default=1000, help="smallest generated image side")
    parser.add_argument("--max-px", type=int, default=1600, help="largest generated image side")
    args = parser.parse_args()

    backbone = backbones.get(args.backbone)
    with tempfile.TemporaryDirectory(prefix="cxr-bench-") as folder:
        frame, config = synthetic_split(
            Path(folder),
            covid_patients=args.patients,
            kermany_per_class=args.patients // 2,
            min_px=args.min_px,
            max_px=args.max_px,
        )
        classes = sorted(frame["class"].unique())
        n = len(frame)
        print(f"{n} images, {args.min_px}-{args.max_px} px, to {args.size} px, batch {args.batch}")
        runs = {"ours_first": [], "ours_cached": [], "keras_layers_cached": [], "idg": []}
        for repeat in range(args.repeats):
            seconds = ours(frame, classes, args.size, args.batch, args.epochs, backbone)
            runs["ours_first"].append(n / seconds[0])
            runs["ours_cached"].append(n / median(seconds[1:]))
            layers = ours(frame, classes, args.size, args.batch, args.epochs, backbone, augment_with="keras")
            runs["keras_layers_cached"].append(n / median(layers[1:]))
            runs["idg"].append(n / median(image_data_generator(frame, args.size, args.batch, args.epochs, backbone)))
            print(
                f"run {repeat + 1}: ours first epoch {runs['ours_first'][-1]:.0f} img/s, cached "
                f"{runs['ours_cached'][-1]:.0f} img/s (Keras layers {runs['keras_layers_cached'][-1]:.0f}); "
                f"ImageDataGenerator {runs['idg'][-1]:.0f} img/s"
            )
    results = {name: median(values) for name, values in runs.items()}
    results |= {
        "images": n,
        "cached_vs_idg": results["ours_cached"] / results["idg"],
        "first_vs_idg": results["ours_first"] / results["idg"],
        "runs": runs,
    }
    print(
        f"median images/s: ours first epoch {results['ours_first']:.0f}, ours cached {results['ours_cached']:.0f}, "
        f"ImageDataGenerator {results['idg']:.0f}; cached / IDG = {results['cached_vs_idg']:.1f}x"
    )
    save(f"input_pipeline_{args.size}px", "python " + " ".join(sys.argv), vars(args), results)


if __name__ == "__main__":
    main()
