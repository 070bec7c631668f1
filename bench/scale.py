"""How cxr's cost grows with the data: wall time and peak memory of each data stage and of the first
training steps at 1k, 5k and 20k images as large as the real ones.

    python bench/scale.py [--counts 1000 5000 20000] [--min-px 1000] [--max-px 2500] [--backbone xception]

For each count a workspace gets two archives laid out as the pinned upstream ones (Kaggle's
``chest_xray/{train,test,val}/{NORMAL,PNEUMONIA}`` JPEGs, and the COVID collection's
``metadata.csv`` and ``images/`` with its JPEG/PNG mix, 10% of the images), served as ``file://``
mirrors (``sources.origin: upstream``). Then, each in its own process: ``download`` of each source
(fetch, verify, extract, manifest), ``merge`` (every image decoded and fingerprinted, the catalog
validated), ``filter_pa``, ``split``, Great Expectations on the catalog alone (``validation``), the
frozen base's features of the train and val images (``feature_cache``: decode, resize, forward
pass; images/s counts those images) and one epoch of the head on them (``head_epoch``: the
training fit, validation and checkpoint included). Each step's seconds, images per second and peak
resident memory are recorded; the exponent b of time = a * n^b is fitted per step (b = 1: linear).
The images are drawn here (not by the offline demo's generator, which holds every file of an archive
in memory): each a distinct low-frequency anatomy field, two lung fields and film grain, so no two
are near-duplicates.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import shutil
import sys
import tempfile
import zipfile
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import yaml
from common import measured, save
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
COVID_SHARE = 0.10  # of the images: the COVID collection's part
COVID_PNG_SHARE = 0.5  # of the COVID collection's images: PNG (the rest JPEG), about the pinned commit's mix
COVID_COMMIT = "a64215bea3982e9f0d3a10c2b316d357d7fa7ed2"
GRAIN = np.random.default_rng(0).normal(0, 3, (2600, 2600)).astype(np.float32)  # film grain, cropped per image

FEATURES = """
import json, resource, sys, time
from pathlib import Path
import pandas as pd
import tensorflow as tf
from cxr.core import backbones
from cxr.core.config import load
from cxr.core.schema import split_part
from cxr.learn import images, runtime, training
from cxr.learn.model import HEAD_LAYER, build_classifier, feature_extractor
config = load()
backbone = backbones.get(config.backbone)
size = backbone.input_size(config.train.image_size)
runtime.configure_runtime(config.train, config.seed)
split = pd.read_csv("data/processed/split.csv")
classes = config.class_names()
model = build_classifier(backbone, size, len(classes), config.train.head, config.train.weights)
extractor = feature_extractor(model)
start = time.perf_counter()
parts = {}
for name in ("train", "val"):
    rows = split_part(split, name)
    data = images.image_dataset(rows, classes, size, "memory", memory_limit_mb=config.train.cache_memory_limit_mb)
    parts[name] = (training._features(extractor, data, config.train.batch_size), images.label_indices(rows, classes))
cached = time.perf_counter() - start
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
train = tf.data.Dataset.from_tensor_slices(parts["train"])
val = images.batches(tf.data.Dataset.from_tensor_slices(parts["val"]), config.train.batch_size)
start = time.perf_counter()
training.fit(
    model.get_layer(HEAD_LAYER),
    images.TrainingBatches(train, len(parts["train"][1]), config.train.batch_size, config.seed),
    val, epochs=1, learning_rate=config.train.learning_rate, amsgrad=config.train.amsgrad, weights=None,
    patience=None, work_dir=Path("work-fit"),
)
epoch = time.perf_counter() - start
images_done = sum(len(labels) for _, labels in parts.values())
found = {"feature_cache": cached, "feature_cache_peak_kib": peak, "images": images_done, "head_epoch": epoch}
print("RESULT", json.dumps(found))
"""

VALIDATION = """
import json, resource, time
from pathlib import Path
import pandas as pd
from cxr.core.config import load
from cxr.data import catalog
from cxr.data.expectations import catalog_expectations
from cxr.data.validation import Table, validate
config = load()
table = catalog.read("data/interim/catalog.csv")
start = time.perf_counter()
expectations = catalog_expectations(config.label_names(), config.sources.use)
validate("merge", [Table("catalog", table, expectations)], Path("validation-alone.json"))
print("RESULT", json.dumps({"validation": time.perf_counter() - start, "images": len(table)}))
"""


def radiograph(seed: int, min_px: int, max_px: int) -> np.ndarray:
    """One distinct grey radiograph-like image (uint8), its long side drawn from [min_px, max_px]."""
    rng = np.random.default_rng(seed)
    width = int(rng.integers(min_px, max_px + 1))
    height = int(width * rng.uniform(0.75, 1.0))
    small = (height // 16, width // 16)
    y, x = np.mgrid[0 : small[0], 0 : small[1]] / np.array(small)[:, None, None]
    field = np.asarray(
        Image.fromarray(rng.normal(0, 1, (6, 6)).astype(np.float32)).resize(small[::-1], Image.Resampling.BICUBIC)
    )
    lungs = sum(((x - cx) / 0.17) ** 2 + ((y - 0.5) / 0.3) ** 2 < 1 for cx in (0.32, 0.68))
    picture = 150 + 25 * field - 70 * lungs + 40 * np.exp(-(((x - 0.5) / 0.08) ** 2))
    image = np.asarray(Image.fromarray(picture.astype(np.float32)).resize((width, height), Image.Resampling.BICUBIC))
    top, left = rng.integers(0, GRAIN.shape[0] - height + 1), rng.integers(0, GRAIN.shape[1] - width + 1)
    return np.clip(image + GRAIN[top : top + height, left : left + width], 0, 255).astype(np.uint8)


def write_image(job: tuple[int, str, int, int]) -> int:
    """Draw image ``seed`` and write it to ``path`` (JPEG quality 90 or PNG, by the suffix); its bytes."""
    seed, path, min_px, max_px = job
    picture = Image.fromarray(radiograph(seed, min_px, max_px))
    picture.save(path, **({"quality": 90} if path.endswith((".jpeg", ".jpg")) else {}))
    return os.path.getsize(path)


def draw_archives(folder: Path, count: int, min_px: int, max_px: int) -> dict:
    """The two upstream-layout archives of ``count`` images in ``folder``; their paths and sizes."""
    covid = round(count * COVID_SHARE)
    kermany = count - covid
    tree = folder / "tree"
    jobs, rows = [], []
    kinds = ["NORMAL", "bacteria", "virus"]
    for index in range(kermany):
        kind, patient = kinds[index % 3], index // 6
        split = ("train", "test", "val")[0 if index % 10 < 8 else 1 if index % 10 < 9 else 2]
        folder_name = "NORMAL" if kind == "NORMAL" else "PNEUMONIA"
        name = f"IM-{patient:05d}-{index:05d}.jpeg" if kind == "NORMAL" else f"person{patient}_{kind}_{index}.jpeg"
        path = tree / "kermany" / "chest_xray" / split / folder_name / name
        jobs.append((index, str(path), min_px, max_px))
    top = f"covid-chestxray-dataset-{COVID_COMMIT}"
    findings = ["COVID-19", "COVID-19", "Streptococcus", "SARS", "No Finding"]
    for index in range(covid):
        suffix = "png" if index % round(1 / COVID_PNG_SHARE) == 0 else "jpg"
        name = f"covid-{index:05d}.{suffix}"
        jobs.append((kermany + index, str(tree / "covid" / top / "images" / name), min_px, max_px))
        rows.append(
            {
                "patientid": str(index // 2),
                "sex": "MF"[index % 2],
                "age": str(30 + index % 50),
                "finding": findings[index % len(findings)],
                "view": "PA",
                "modality": "X-ray",
                "folder": "images",
                "filename": name,
            }
        )
    for _, path, _, _ in jobs:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
    with ProcessPoolExecutor(os.cpu_count()) as pool:
        image_bytes = sum(pool.map(write_image, jobs, chunksize=16))
    header = ["patientid", "sex", "age", "finding", "view", "modality", "folder", "filename"]
    lines = [",".join(header)] + [",".join(row[column] for column in header) for row in rows]
    (tree / "covid" / top / "metadata.csv").write_text("\n".join(lines) + "\n")
    archives = {}
    for name, root in (("kermany", tree / "kermany"), ("covid_chestxray", tree / "covid")):
        archive = folder / f"{name}.zip"
        with zipfile.ZipFile(archive, "w", zipfile.ZIP_STORED) as handle:
            for path in sorted(root.rglob("*")):
                if path.is_file():
                    handle.write(path, path.relative_to(root).as_posix())
        archives[name] = archive
    shutil.rmtree(tree)
    return {"archives": archives, "image_bytes": image_bytes, "kermany": kermany, "covid": covid}


def workspace(folder: Path, archives: dict, backbone: str) -> Path:
    """A project folder (stages and params.yaml) whose sources are the ``archives`` as mirrors."""
    root = folder / "workspace"
    root.mkdir()
    shutil.copytree(REPO / "stages", root / "stages")
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["sources"].update(origin="upstream", use=["covid_chestxray", "kermany"])
    params["sources"]["covid_chestxray"]["url"] = archives["covid_chestxray"].as_uri()
    params["sources"]["kermany"].update(method="url", url=archives["kermany"].as_uri())
    params["backbone"] = backbone
    params["train"].update(epochs=1, weights=None, image_size=96)
    params["download"]["max_archive_bytes"] = params["download"]["max_total_bytes"] = 200 * 2**30
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    return root


def stage(folder: Path, name: str, item: str | None = None) -> list[str]:
    """The command dvc.yaml runs for stage ``name`` (``${item}`` filled in), with this Python."""
    definition = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"][name]
    command = re.sub(r"\$\{item\}", item or "", definition.get("do", definition)["cmd"])
    return [sys.executable, *shlex.split(command)[1:]]


def run_count(count: int, args: argparse.Namespace, scratch: Path) -> dict:
    folder = scratch / f"n{count}"
    folder.mkdir()
    drawn = draw_archives(folder, count, args.min_px, args.max_px)
    root = workspace(folder, drawn["archives"], args.backbone)
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    steps = {}
    for source in ("covid_chestxray", "kermany"):
        steps[f"download_{source}"] = measured(stage(root, "download", source), root, env)
    for name in ("merge", "filter_pa", "split"):
        steps[name] = measured(stage(root, name), root, env)
    validation = measured([sys.executable, "-c", VALIDATION], root, env)
    steps["validation"] = validation | {"seconds": _result(validation)["validation"]}
    features = measured([sys.executable, "-c", FEATURES], root, env)
    found = _result(features)
    steps["feature_cache"] = {"seconds": found["feature_cache"], "peak_rss_mib": found["feature_cache_peak_kib"] / 1024}
    steps["head_epoch"] = {"seconds": found["head_epoch"], "peak_rss_mib": features["peak_rss_mib"]}
    catalog_rows = sum(1 for _ in open(root / "data/interim/catalog.csv")) - 1
    result = {
        "images": count,
        "catalog_images": catalog_rows,
        "feature_images": found["images"],
        "image_gib": drawn["image_bytes"] / 2**30,
        "steps": {
            name: {
                "seconds": step["seconds"],
                "peak_rss_mib": step["peak_rss_mib"],
                "images_per_s": (found["images"] if name in ("feature_cache", "head_epoch") else count)
                / step["seconds"],
            }
            for name, step in steps.items()
        },
    }
    shutil.rmtree(folder)
    print(f"{count} images ({result['image_gib']:.1f} GiB):")
    for name, step in result["steps"].items():
        print(
            f"  {name:<26} {step['seconds']:8.1f} s  {step['images_per_s']:8.1f} images/s  "
            f"{step['peak_rss_mib']:7.0f} MiB"
        )
    return result


def _result(step: dict) -> dict:
    return json.loads(re.findall(r"^RESULT (.*)$", step["output"], re.MULTILINE)[-1])


def growth(results: list[dict]) -> dict:
    """Per step: the exponent b of seconds = a * images^b (least squares in log-log; 1 = linear) and of
    peak memory, and the share of the largest count's total time."""
    counts = np.log([result["images"] for result in results])
    largest = results[-1]["steps"]
    total = sum(step["seconds"] for step in largest.values())
    fitted = {}
    for name in largest:
        seconds = np.log([max(result["steps"][name]["seconds"], 1e-3) for result in results])
        memory = np.log([result["steps"][name]["peak_rss_mib"] for result in results])
        fitted[name] = {
            "time_exponent": float(np.polyfit(counts, seconds, 1)[0]),
            "memory_exponent": float(np.polyfit(counts, memory, 1)[0]),
            "share_of_time_at_largest": largest[name]["seconds"] / total,
        }
    return fitted


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--counts", type=int, nargs="+", default=[1000, 5000, 20000])
    parser.add_argument("--min-px", type=int, default=1000)
    parser.add_argument("--max-px", type=int, default=2500)
    parser.add_argument("--backbone", default="xception")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="cxr-bench-scale-") as scratch:
        results = [run_count(count, args, Path(scratch)) for count in sorted(args.counts)]
    fitted = growth(results) if len(results) > 1 else {}
    for name, fit in fitted.items():
        print(
            f"{name:<26} time ~ n^{fit['time_exponent']:.2f}, peak memory ~ n^{fit['memory_exponent']:.2f}, "
            f"{100 * fit['share_of_time_at_largest']:.0f}% of the time at {results[-1]['images']} images"
        )
    save("scale", "python " + " ".join(sys.argv), vars(args), {"counts": results, "growth": fitted})


if __name__ == "__main__":
    main()
