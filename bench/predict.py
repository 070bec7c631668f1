"""Using a model: images per second of `cxr-predict` on a folder, and the served model's latency.

    python bench/predict.py [--backbone xception] [--sizes 96 native] [--images 96] [--requests 40 --clients 4]

`cxr-predict`'s own path (read, decode, resize, batch, predict) runs on a folder of generated
X-rays (1000-1600 px, as large as the real ones) at each input size; the model has random
weights (the same compute as ImageNet ones). Then the model is saved as the registered pyfunc,
`mlflow models serve` starts on 127.0.0.1, and single-image requests (one PNG each, base64 JSON)
are sent by a bounded number of concurrent clients: p50 / p95 latency and requests per second.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import sys
import tempfile
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import mlflow.pyfunc  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from common import Timer, median, save, synthetic_split  # noqa: E402

from cxr.core import backbones  # noqa: E402
from cxr.core.sections import Head  # noqa: E402
from cxr.core.spec import ModelSpec  # noqa: E402
from cxr.learn.model import build_classifier  # noqa: E402
from cxr.learn.model_files import save_model  # noqa: E402
from cxr.serve.classify import predict_sources  # noqa: E402
from cxr.serve.local import free_port, mlflow_command, running  # noqa: E402
from cxr.serve.pyfunc import XrayClassifier, signature  # noqa: E402

HEAD = Head(units=256, dropout=0.5, normalize=False)


def model_folder(folder: Path, backbone, size: int, classes: list[str]) -> Path:
    model = build_classifier(backbone, size, len(classes), HEAD, None)
    spec = ModelSpec(
        backbone=backbone.name,
        image_size=size,
        classes=classes,
        task="multiclass",
        weights=None,
        views=["PA"],
        ages=None,
    )
    save_model(model, folder, spec, pd.DataFrame({"epoch": [0]}))
    return folder


def folder_rate(folder: Path, paths: list[Path], batch_size: int, repeats: int) -> dict:
    """Images per second of cxr-predict's path over ``paths`` (median of ``repeats`` passes, after one
    warm-up call); and of its two parts alone: reading (decode and resize, one thread) and the model
    (``predict_on_batch``)."""
    from cxr.learn.model_files import load_model
    from cxr.serve.reading import read_source

    model, meta = load_model(folder)
    predict_sources(model, meta, paths[:batch_size], batch_size=batch_size)
    whole, reading, forward = [], [], []
    for _ in range(repeats):
        with Timer() as timer:
            table = predict_sources(model, meta, paths, batch_size=batch_size)
        assert (table["error"] == "").all(), table["error"].unique()
        whole.append(timer.seconds)
        with Timer() as timer:
            pixels = np.stack([read_source(path, meta).pixels for path in paths])
        reading.append(timer.seconds)
        with Timer() as timer:
            for start in range(0, len(pixels), batch_size):
                model.predict_on_batch(pixels[start : start + batch_size])
        forward.append(timer.seconds)
    return {
        "images": len(paths),
        "seconds": median(whole),
        "images_per_s": len(paths) / median(whole),
        "reading_one_thread_images_per_s": len(paths) / median(reading),
        "model_alone_images_per_s": len(paths) / median(forward),
    }


def served_latency(folder: Path, work: Path, images: list[bytes], requests: int, clients: int) -> dict:
    """p50/p95 seconds of single-image requests to `mlflow models serve`, ``clients`` at a time."""
    pyfunc = work / "pyfunc"
    mlflow.pyfunc.save_model(
        pyfunc,
        python_model=XrayClassifier(),
        artifacts={"model": str(folder)},
        signature=signature(json.loads((folder / "meta.json").read_text())["classes"]),
    )
    port = free_port()
    bodies = [
        json.dumps({"dataframe_split": {"columns": ["image"], "data": [[base64.b64encode(data).decode()]]}}).encode()
        for data in images
    ]

    def call(index: int) -> float:
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/invocations", bodies[index % len(bodies)], {"Content-Type": "application/json"}
        )
        with Timer() as timer, urllib.request.urlopen(request, timeout=120) as answer:
            assert json.loads(answer.read())["predictions"][0]["error"] == ""
        return timer.seconds

    command = mlflow_command(
        "models", "serve", "-m", str(pyfunc), "--env-manager", "local", "--host", "127.0.0.1", "--port", str(port)
    )
    with running(command, f"http://127.0.0.1:{port}/ping"):
        call(0)
        with Timer() as total, ThreadPoolExecutor(clients) as pool:
            seconds = list(pool.map(call, range(requests)))
    return {
        "requests": requests,
        "clients": clients,
        "p50_s": float(np.percentile(seconds, 50)),
        "p95_s": float(np.percentile(seconds, 95)),
        "requests_per_s": requests / total.seconds,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", default="xception", choices=list(backbones.BACKBONES))
    parser.add_argument("--sizes", nargs="+", default=["96", "native"])
    parser.add_argument("--images", type=int, default=96, help="images in the folder")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--requests", type=int, default=40)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3, help="timed passes over the folder (median)")
    args = parser.parse_args()
    backbone = backbones.get(args.backbone)
    results = []
    with tempfile.TemporaryDirectory(prefix="cxr-bench-") as work:
        work = Path(work)
        frame, config = synthetic_split(work / "raw", covid_patients=40, kermany_per_class=40, min_px=1000, max_px=1600)
        paths = [Path(path) for path in frame["path"].head(args.images)]
        classes = config.class_names()
        for size_name in args.sizes:
            size = backbone.input_size(size_name)
            folder = model_folder(work / f"model-{size}", backbone, size, classes)
            row = {
                "backbone": backbone.name,
                "size": size,
                "cxr_predict": folder_rate(folder, paths, args.batch, args.repeats),
                "served": served_latency(
                    folder,
                    work / f"serve-{size}",
                    [path.read_bytes() for path in paths[:8]],
                    args.requests,
                    args.clients,
                ),
            }
            results.append(row)
            rates = row["cxr_predict"]
            print(
                f"{backbone.name} {size}px: cxr-predict {rates['images_per_s']:.1f} images/s (reading alone, "
                f"one thread: {rates['reading_one_thread_images_per_s']:.1f}; the model alone: "
                f"{rates['model_alone_images_per_s']:.1f}; {len(paths)} files of 1000-1600 px); "
                f"served p50 {row['served']['p50_s'] * 1000:.0f} ms, "
                f"p95 {row['served']['p95_s'] * 1000:.0f} ms, {row['served']['requests_per_s']:.1f} requests/s "
                f"({args.clients} concurrent clients, one image per request)"
            )
    save(f"predict_{backbone.name}", "python " + " ".join(sys.argv), vars(args), results)


if __name__ == "__main__":
    main()
