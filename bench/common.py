"""What every benchmark shares: the machine and versions, medians, results files, test images.

Benchmarks print measured numbers and write them to ``bench/results/<name>.json``; they never
assert. ``docs/PERFORMANCE.md`` keeps the table and the command behind each row.
"""

from __future__ import annotations

import json
import os
import platform
import re
import statistics
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path

# CXR_BENCH_RESULTS writes elsewhere (a scratch run, or a machine whose files are copied back).
RESULTS = Path(os.environ.get("CXR_BENCH_RESULTS", Path(__file__).resolve().parent / "results"))
PACKAGES = ("tensorflow-cpu", "tensorflow", "keras", "jax", "jaxlib", "dvc", "mlflow", "numpy", "pandas")


def machine() -> dict:
    """CPU model and cores, memory, GPUs (from nvidia-smi when present), OS and Python."""
    cpu = platform.processor() or platform.machine()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        names = [
            line.split(":", 1)[1].strip() for line in cpuinfo.read_text().splitlines() if line.startswith("model name")
        ]
        cpu = names[0] if names else cpu
    memory_gib = None
    meminfo = Path("/proc/meminfo")
    if meminfo.is_file():
        kib = int(meminfo.read_text().split("MemTotal:")[1].split()[0])
        memory_gib = round(kib / 2**20, 1)
    try:
        gpus = (
            subprocess.run(
                ["nvidia-smi", "--query-gpu=name,memory.total", "--format=csv,noheader"],
                capture_output=True,
                text=True,
                timeout=30,
            )
            .stdout.strip()
            .splitlines()
        )
    except (OSError, subprocess.TimeoutExpired):
        gpus = []
    return {
        "cpu": cpu,
        "cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "memory_gib": memory_gib,
        "gpus": gpus,
        "os": platform.platform(),
        "python": platform.python_version(),
    }


def versions() -> dict:
    found = {}
    for name in PACKAGES:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return found


def median(values: list[float]) -> float:
    return float(statistics.median(values))


class Timer:
    """``with Timer() as t: ...`` then ``t.seconds``."""

    def __enter__(self):
        self.start = time.perf_counter()
        return self

    def __exit__(self, *exc):
        self.seconds = time.perf_counter() - self.start


def save(name: str, command: str, settings: dict, results) -> Path:
    """Write ``bench/results/<name>.json`` (or under ``CXR_BENCH_RESULTS``) with the machine, versions,
    settings and results."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    record = {
        "benchmark": name,
        "command": command,
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": machine(),
        "versions": versions(),
        "settings": settings,
        "results": results,
    }
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(record, indent=2) + "\n")
    print(f"wrote {path}")
    return path


# Runs the command in a fresh process, so RUSAGE_CHILDREN covers this command's processes only.
MEASURE = (
    "import resource, subprocess, sys; code = subprocess.run(sys.argv[1:]).returncode; "
    "print('peak-rss-kib', resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, file=sys.stderr); "
    "sys.exit(code)"
)


def measured(command: list[str], folder: Path, env: dict | None = None) -> dict:
    """Run ``command`` in ``folder``: ``seconds`` (wall), ``peak_rss_mib`` (the largest resident set
    of any one process it ran) and ``output`` (stdout and stderr). Exits naming the command if it fails."""
    with Timer() as timer:
        result = subprocess.run(
            [sys.executable, "-c", MEASURE, *command], cwd=folder, env=env, capture_output=True, text=True
        )
    if result.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    peak_kib = int(re.findall(r"peak-rss-kib (\d+)", result.stderr)[-1])
    return {"seconds": timer.seconds, "peak_rss_mib": peak_kib / 1024, "output": result.stdout + result.stderr}


def synthetic_split(folder: Path, *, covid_patients: int, kermany_per_class: int, min_px: int, max_px: int):
    """Generated archives (the pipeline's synthetic sources) -> the split table and its config.

    ``min_px``/``max_px`` set the generated images' sides: the real X-rays are 1000-3000 px,
    which is what makes decoding expensive.
    """
    import yaml

    from cxr.core.config import from_dict
    from cxr.data import catalog
    from cxr.data.sources import download_source
    from cxr.data.split import make_split

    params = yaml.safe_load((Path(__file__).resolve().parents[1] / "params.yaml").read_text())
    params["synthetic"]["patients"].update(covid_chestxray=covid_patients, kermany=kermany_per_class)
    params["synthetic"].update(min_size=min_px, max_size=max_px)
    config = from_dict(params)
    for name in config.sources.use:
        download_source(name, config, folder)
    table, _ = catalog.build(config, folder)
    kept, _ = catalog.filter_views(table, config.filter)
    frame, _ = make_split(kept, config, "bench")
    return frame, config
