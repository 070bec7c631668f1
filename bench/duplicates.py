"""Near-duplicate detection as the data grows: fingerprint cost per image, grouping time and memory.

    python bench/duplicates.py [--sizes 1000 10000 50000] [--side 128] [--files 400] [--workers 2]

1. Fingerprint, on merge's path: :func:`cxr.data.catalog.describe_images` over ``--files``
   generated radiographs (JPEGs of 160-320 px, as the demo's), with and without the fingerprint
   (:func:`cxr.data.duplicates.fingerprint`): images per second, and the fingerprint's share.
2. Grouping, for each size N: N distinct generated radiographs (``--side`` px, drawn and fingerprinted
   in memory by ``--workers`` processes), 1% of them drawn at 4 x ``--side`` and published a second
   time (re-encoded, resized, cropped, grey-converted or contrast-changed, in turn) ->
   :func:`cxr.data.duplicates.group` with the params' thresholds: seconds, candidate pairs (64-bit
   pHash within ``candidate_bits``), groups, planted copies found (recall, per change), groups with
   no planted copy (false groups), images grouped with one that is not their original or copy, and
   the peak memory the grouping allocates (tracemalloc; NumPy reports its buffers to it). The
   growth between sizes is printed as the exponent k of time ~ N^k.

Generated radiographs look more alike than real ones (one drawing model), so the candidate counts
are an upper bound of what real collections of the same size give.
"""

from __future__ import annotations

import argparse
import io
import math
import os
import sys
import tempfile
import tracemalloc
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import yaml  # noqa: E402
from common import Timer, save  # noqa: E402
from PIL import Image  # noqa: E402

from cxr.core.config import from_dict  # noqa: E402
from cxr.data import duplicates  # noqa: E402
from cxr.data.catalog import describe_images  # noqa: E402
from cxr.data.sources.drawing import ADULT, CHILD, OTHER_SITE, draw_chest  # noqa: E402
from cxr.data.sources.synthetic import COPY_CHANGES, encode, republished  # noqa: E402

PATTERNS = ("normal", "covid", "bacteria", "viral")
STYLES = (ADULT, CHILD, OTHER_SITE)
PLANTED_SHARE = 0.01


def config():
    return from_dict(yaml.safe_load((Path(__file__).resolve().parents[1] / "params.yaml").read_text()))


def drawn(index: int, side: int) -> np.ndarray:
    rng = np.random.default_rng([20261201, index])
    return draw_chest(rng, side, int(side * rng.uniform(1.0, 1.2)), PATTERNS[index % 4], STYLES[index % 3])


def fingerprints(task: tuple[int, int, int]) -> list[dict]:
    """Fingerprints of radiographs ``start`` to ``stop`` and of the planted copies among them."""
    start, stop, side = task
    rows = []
    every = round(1 / PLANTED_SHARE)
    for index in range(start, stop):
        twice = index % every == every - 1
        # A radiograph published twice is drawn at 4 x side: the pipeline's are larger than the rest.
        image = drawn(index, 4 * side if twice else side)
        rows.append({"image_id": f"img{index:06d}", "planted": "", "change": "", **duplicates.fingerprint(image)})
        if twice:
            change = COPY_CHANGES[(index // every) % len(COPY_CHANGES)]
            copy = np.asarray(Image.open(io.BytesIO(republished(image, change, "jpeg"))).convert("L"))
            rows.append(
                {
                    "image_id": f"img{index:06d}-copy",
                    "planted": f"img{index:06d}",
                    "change": change,
                    **duplicates.fingerprint(copy),
                }
            )
    return rows


def catalog_of(size: int, side: int, workers: int) -> pd.DataFrame:
    chunks = [(start, min(start + 500, size), side) for start in range(0, size, 500)]
    with ProcessPoolExecutor(workers) as pool:
        rows = [row for part in pool.map(fingerprints, chunks) for row in part]
    frame = pd.DataFrame(rows)
    # Every image its own bytes, patient and source, as the grouping reads them.
    return frame.assign(sha256=frame["image_id"], patient_id=frame["image_id"], source="bench", label="X")


def bench_fingerprint(files: int) -> dict:
    with tempfile.TemporaryDirectory() as scratch:
        paths = []
        for index in range(files):
            rng = np.random.default_rng([7, index])
            width = int(rng.integers(160, 321))
            path = Path(scratch) / f"{index}.jpeg"
            path.write_bytes(encode(draw_chest(rng, width, int(width * 1.1), "normal", ADULT), "jpeg"))
            paths.append(str(path))
        describe_images(paths[:20])  # TensorFlow's first decode builds its kernels
        with Timer() as plain:
            describe_images(paths)
        with Timer() as hashed:
            describe_images(paths, measure=duplicates.fingerprint, measured=("phash_64", "phash_256", "dhash_256"))
    return {
        "files": files,
        "describe_images_per_s": files / plain.seconds,
        "with_fingerprint_per_s": files / hashed.seconds,
        "fingerprint_share_of_merge_read": 1 - plain.seconds / hashed.seconds,
    }


def bench_group(size: int, side: int, workers: int, rules) -> dict:
    frame = catalog_of(size, side, workers)
    tracemalloc.start()
    with Timer() as timer:
        group, groups = duplicates.group(frame, rules)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    with Timer() as scan:
        coarse = duplicates.hash_words(frame["phash_64"])[:, 0]
        candidates = sum(
            int((np.bitwise_count(coarse[start : start + 128, None] ^ coarse[None, :]) <= rules.candidate_bits).sum())
            for start in range(0, len(coarse), 128)
        )
    candidates = (candidates - len(coarse)) // 2  # each pair once, no image with itself
    copies = frame[frame["planted"] != ""]
    group_of = dict(zip(frame["image_id"], group))
    hits = copies.assign(
        found=[group_of[copy] == group_of[original] for copy, original in zip(copies["image_id"], copies["planted"])]
    )
    with_planted = {entry["group"] for entry in groups if any(image.endswith("-copy") for image in entry["images"])}
    # Images grouped with an image that is not their planted original or copy.
    extra = sum(len(entry["images"]) - (2 if entry["group"] in with_planted else 0) for entry in groups)
    return {
        "images": len(frame),
        "planted_copies": len(copies),
        "planted_found": int(hits["found"].sum()),
        "planted_found_by_change": {
            change: f"{int(rows['found'].sum())}/{len(rows)}" for change, rows in hits.groupby("change", sort=False)
        },
        "groups": len(groups),
        "false_groups": len(groups) - len(with_planted),
        "images_grouped_wrongly": extra,
        "candidate_pairs": candidates,
        "group_s": timer.seconds,
        "candidate_scan_s": scan.seconds,
        "peak_mib": peak / 2**20,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000, 50000])
    parser.add_argument("--side", type=int, default=128)
    parser.add_argument("--files", type=int, default=400)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    rules = config().duplicates
    results = {"thresholds": {"candidate_bits": rules.candidate_bits, "confirm_bits": rules.confirm_bits}}
    results["fingerprint"] = bench_fingerprint(args.files)
    row = results["fingerprint"]
    print(
        f"merge's read of {row['files']} files: {row['describe_images_per_s']:.0f} images/s without the fingerprint, "
        f"{row['with_fingerprint_per_s']:.0f} with it ({row['fingerprint_share_of_merge_read']:.0%} of the time)"
    )
    results["group"] = []
    for size in args.sizes:
        row = bench_group(size, args.side, args.workers, rules)
        results["group"].append(row)
        print(
            f"N={row['images']}: group {row['group_s']:.2f} s ({row['images'] / row['group_s']:.0f} images/s), "
            f"peak {row['peak_mib']:.0f} MiB; {row['candidate_pairs']} candidate pairs "
            f"(scan {row['candidate_scan_s']:.2f} s); planted copies found {row['planted_found']}/"
            f"{row['planted_copies']} {row['planted_found_by_change']}; {row['groups']} groups, "
            f"{row['false_groups']} without a planted copy, "
            f"{row['images_grouped_wrongly']} images grouped with one that is not their copy"
        )
    rows = results["group"]
    for before, after in zip(rows, rows[1:]):
        exponent = math.log(after["group_s"] / before["group_s"]) / math.log(after["images"] / before["images"])
        print(f"grouping time grows as N^{exponent:.2f} from {before['images']} to {after['images']} images")
    save("duplicates", "python " + " ".join(sys.argv), vars(args), results)


if __name__ == "__main__":
    main()
