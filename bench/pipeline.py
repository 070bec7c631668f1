"""Wall time and peak memory of the README's main command on a clean checkout, of a forced
retrain of one stage with unchanged inputs (`dvc repro -f -s train@xception`: same bytes, so
nothing downstream should rerun), of a second `dvc repro` (nothing to run), and of
`dvc exp run -S backbone=vgg16` after the full run; and whether the clean checkout's `dvc.lock`
equals the committed one (same inputs, same bytes).

    python bench/pipeline.py [--repeats 1] [--reuse-venv]

The checkout is a `git clone` of this repository's HEAD into a temporary folder. With
--reuse-venv the clone links this checkout's .venv, so `make repro` times the pipeline alone
(the install is timed separately when it is not reused). Peak memory is the largest resident
set of any single process the command ran.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

from common import Timer, median, save

REPO = Path(__file__).resolve().parents[1]


# Runs the command in a fresh process, so RUSAGE_CHILDREN covers this command's processes only.
MEASURE = ("import resource, subprocess, sys; code = subprocess.run(sys.argv[1:]).returncode; "
           "print('peak-rss-kib', resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, file=sys.stderr); "
           "sys.exit(code)")


def timed(command: list[str], folder: Path) -> dict:
    """Run ``command`` in ``folder`` with its .venv activated (as the README says); its wall time,
    peak RSS (MiB) and the DVC stages it ran."""
    env = {**os.environ, "PATH": f"{folder / '.venv' / 'bin'}{os.pathsep}{os.environ['PATH']}"}
    with Timer() as timer:
        result = subprocess.run([sys.executable, "-c", MEASURE, *command], cwd=folder, env=env, capture_output=True,
                                text=True)
    if result.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    peak_kib = int(re.findall(r"peak-rss-kib (\d+)", result.stderr)[-1])
    return {"seconds": timer.seconds, "peak_rss_mib": peak_kib / 1024,
            "stages_run": sorted(set(re.findall(r"Running stage '([^']+)'", result.stdout + result.stderr)))}


def one_run(reuse_venv: bool) -> dict:
    with tempfile.TemporaryDirectory(prefix="cxr-bench-pipeline-") as scratch:
        clone = Path(scratch) / "cxr"
        subprocess.run(["git", "clone", "--quiet", str(REPO), str(clone)], check=True)
        if reuse_venv:
            (clone / ".venv").symlink_to(REPO / ".venv")
            (REPO / ".venv" / ".installed").touch()
        results = {"make_repro": timed(["make", "repro"], clone)}
        lock_changed = subprocess.run(["git", "diff", "--stat", "dvc.lock"], cwd=clone, capture_output=True,
                                      text=True, check=True).stdout.strip()
        results |= {"forced_train_xception": timed(["dvc", "repro", "-f", "-s", "train@xception"], clone),
                    "noop_repro": timed(["dvc", "repro"], clone),
                    "exp_backbone_vgg16": timed(["dvc", "exp", "run", "-S", "backbone=vgg16"], clone)}
    for name, result in results.items():
        print(f"{name}: {result['seconds']:.1f} s, peak {result['peak_rss_mib']:.0f} MiB, "
              f"stages: {', '.join(result['stages_run']) or 'none'}")
    print(f"dvc.lock after make repro: {'differs from the committed one: ' + lock_changed if lock_changed else 'equal to the committed one'}")
    return results | {"dvc_lock_diff": lock_changed}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--reuse-venv", action="store_true", help="link this checkout's .venv into the clone")
    args = parser.parse_args()
    runs = [one_run(args.reuse_venv) for _ in range(args.repeats)]
    results = {name: {"seconds": median([run[name]["seconds"] for run in runs]),
                      "peak_rss_mib": max(run[name]["peak_rss_mib"] for run in runs),
                      "stages_run": runs[-1][name]["stages_run"]} for name in runs[0] if name != "dvc_lock_diff"}
    results["dvc_lock_equal_to_committed"] = all(not run["dvc_lock_diff"] for run in runs)
    results["runs"] = runs
    save("pipeline", "python " + " ".join(sys.argv), vars(args), results)


if __name__ == "__main__":
    main()
