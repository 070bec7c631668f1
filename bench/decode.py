"""A JPEG to a model input: full-size decode against libjpeg's reduced scale (what cxr reads at), in
milliseconds per image, and how far apart the two model inputs are, in grey levels of 255.

    python bench/decode.py [--height 1300] [--width 1500] [--sizes 96 224 299] [--repeats 30]

The JPEGs (quality 90) are drawn as radiographs are: smooth anatomy and film grain of standard
deviation 0, 3 and 8 grey levels (the grain sets the file size, and with it the share of time spent
reading coefficients, which no scale saves). The reduced decode is at the smallest scale that keeps
twice the model side (:func:`cxr.learn.images.decode_side`).
"""

from __future__ import annotations

import argparse
import io
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from common import median, save  # noqa: E402
from PIL import Image  # noqa: E402

from cxr.data.image_files import decode_tensor  # noqa: E402
from cxr.learn.images import decode_side, model_input  # noqa: E402


def radiograph_jpeg(height: int, width: int, grain: float) -> bytes:
    y, x = np.mgrid[0:height, 0:width] / width
    picture = 128 + 80 * np.sin(6 * x) * np.cos(4 * y) + np.random.default_rng(0).normal(0, grain, (height, width))
    buffer = io.BytesIO()
    Image.fromarray(picture.clip(0, 255).astype(np.uint8)).save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


def milliseconds(data: tf.Tensor, size: int, at_least: int | None, repeats: int) -> float:
    model_input(decode_tensor(data, at_least=at_least), size)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        model_input(decode_tensor(data, at_least=at_least), size)
        times.append(time.perf_counter() - start)
    return 1000 * median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--height", type=int, default=1300)
    parser.add_argument("--width", type=int, default=1500)
    parser.add_argument("--sizes", type=int, nargs="+", default=[96, 224, 299])
    parser.add_argument("--repeats", type=int, default=30)
    args = parser.parse_args()
    results = []
    for grain in (0.0, 3.0, 8.0):
        raw = radiograph_jpeg(args.height, args.width, grain)
        data = tf.constant(raw)
        for size in args.sizes:
            full = model_input(decode_tensor(data), size).numpy()
            reduced = model_input(decode_tensor(data, at_least=decode_side(size)), size).numpy()
            row = {
                "grain": grain,
                "jpeg_kib": len(raw) / 1024,
                "size": size,
                "decoded_shape": list(decode_tensor(data, at_least=decode_side(size)).shape),
                "full_ms": milliseconds(data, size, None, args.repeats),
                "reduced_ms": milliseconds(data, size, decode_side(size), args.repeats),
                "mean_abs_difference": float(np.abs(full - reduced).mean()),
                "max_abs_difference": float(np.abs(full - reduced).max()),
            }
            results.append(row)
            print(
                f"grain {grain:.0f} ({row['jpeg_kib']:.0f} KiB), {size} px: decoded at {row['decoded_shape'][:2]}, "
                f"{row['full_ms']:.1f} -> {row['reduced_ms']:.1f} ms per image "
                f"(x{row['full_ms'] / row['reduced_ms']:.2f}); model input differs by {row['mean_abs_difference']:.2f} "
                f"on average, {row['max_abs_difference']:.2f} at most (of 255)"
            )
    save("decode", "python " + " ".join(sys.argv), vars(args), results)


if __name__ == "__main__":
    main()
