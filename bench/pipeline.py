"""Wall time and peak memory of the README's main command on a clean checkout, of a forced
retrain of one stage with unchanged inputs (`dvc repro -f -s train@xception`: same bytes, so
nothing downstream should rerun), of a second `dvc repro` (nothing to run), and of
`dvc exp run -S backbone=vgg16` after the full run; and whether the clean checkout's `dvc.lock`
equals the committed one (same inputs, same bytes). Then N fine-tuning experiments run one after
the other against N queued and run two at a time (`dvc exp run --run-all -j 2`), and MLflow's
logging time per training epoch with the SQLite file against a tracking server on PostgreSQL.

    python bench/pipeline.py [--repeats 1] [--reuse-venv] [--experiments 2]
    python bench/pipeline.py --logging-only      # the logging comparison alone (a minute)

The checkout is a `git clone` of this repository's HEAD into a temporary folder. With
--reuse-venv the clone links this checkout's .venv, so `make repro` times the pipeline alone
(the install is timed separately when it is not reused). Peak memory is the largest resident
set of any single process the command ran.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from common import Timer, measured, median, save

REPO = Path(__file__).resolve().parents[1]


def timed(command: list[str], folder: Path) -> dict:
    """Run ``command`` in ``folder`` with its .venv activated (as the README says); its wall time,
    peak RSS (MiB) and the DVC stages it ran."""
    env = {**os.environ, "PATH": f"{folder / '.venv' / 'bin'}{os.pathsep}{os.environ['PATH']}"}
    result = measured(command, folder, env)
    return {
        "seconds": result["seconds"],
        "peak_rss_mib": result["peak_rss_mib"],
        "stages_run": sorted(set(re.findall(r"Running stage '([^']+)'", result["output"]))),
    }


def experiments(clone: Path, count: int) -> dict:
    """``count`` fine-tuning experiments (only finetune, evaluate and audit_report rerun) one after the
    other, then ``count`` others queued and run two at a time."""
    rates = [f"0.000{index + 11}" for index in range(2 * count)]
    results = {"sequential": {"seconds": 0.0, "peak_rss_mib": 0.0, "stages_run": []}}
    for rate in rates[:count]:
        one = timed(["dvc", "exp", "run", "-S", f"finetune.learning_rate={rate}"], clone)
        results["sequential"] = {
            "seconds": results["sequential"]["seconds"] + one["seconds"],
            "peak_rss_mib": max(results["sequential"]["peak_rss_mib"], one["peak_rss_mib"]),
            "stages_run": one["stages_run"],
        }
    for rate in rates[count:]:
        subprocess.run(
            ["dvc", "exp", "run", "--queue", "-S", f"finetune.learning_rate={rate}"],
            cwd=clone,
            check=True,
            capture_output=True,
            env={**os.environ, "PATH": f"{clone / '.venv' / 'bin'}{os.pathsep}{os.environ['PATH']}"},
        )
    results["queued_j2"] = timed(["dvc", "exp", "run", "--run-all", "-j", "2"], clone)
    return results


def logging_overhead(epochs: int) -> dict:
    """Milliseconds per epoch that logging one epoch's metrics (as training's EpochMetrics does) takes,
    with the SQLite file and with a tracking server on PostgreSQL, in one run of this script."""
    import mlflow

    from cxr.serve.local import postgresql, tracking_server

    def per_epoch(uri: str) -> float:
        mlflow.set_tracking_uri(uri)
        mlflow.set_experiment("bench-logging")
        seconds = []
        with mlflow.start_run():
            for epoch in range(1, epochs + 1):
                metrics = {
                    "loss": 1 / epoch,
                    "accuracy": 0.5,
                    "val_loss": 1 / epoch,
                    "val_accuracy": 0.5,
                    "learning_rate": 0.001,
                }
                with Timer() as timer:
                    mlflow.log_metrics(metrics, step=epoch)
                seconds.append(timer.seconds)
        return 1000 * statistics.median(seconds)

    with tempfile.TemporaryDirectory(prefix="cxr-bench-logging-") as scratch:
        sqlite = per_epoch(f"sqlite:///{scratch}/mlflow.db")
        with postgresql() as database, tracking_server(database, Path(scratch) / "artifacts") as url:
            server = per_epoch(url)
    print(
        f"MLflow logging per epoch ({epochs} epochs, median): SQLite {sqlite:.1f} ms, server on PostgreSQL "
        f"{server:.1f} ms (x{server / sqlite:.2f})"
    )
    return {"epochs": epochs, "sqlite_ms_per_epoch": sqlite, "server_ms_per_epoch": server, "ratio": server / sqlite}


def one_run(reuse_venv: bool, count: int) -> dict:
    with tempfile.TemporaryDirectory(prefix="cxr-bench-pipeline-") as scratch:
        clone = Path(scratch) / "cxr"
        subprocess.run(["git", "clone", "--quiet", str(REPO), str(clone)], check=True)
        if reuse_venv:
            (clone / ".venv").symlink_to(REPO / ".venv")
            (REPO / ".venv" / ".installed-cpu").touch()
        results = {"make_repro": timed(["make", "repro"], clone)}
        lock_changed = subprocess.run(
            ["git", "diff", "--stat", "dvc.lock"], cwd=clone, capture_output=True, text=True, check=True
        ).stdout.strip()
        results |= {
            "forced_train_xception": timed(["dvc", "repro", "-f", "-s", "train@xception"], clone),
            "noop_repro": timed(["dvc", "repro"], clone),
        }
        if count:  # before any experiment changes the backbone: both sides fine-tune xception
            results |= {f"{name}_{count}_experiments": value for name, value in experiments(clone, count).items()}
        results["exp_backbone_vgg16"] = timed(["dvc", "exp", "run", "-S", "backbone=vgg16"], clone)
    for name, result in results.items():
        print(
            f"{name}: {result['seconds']:.1f} s, peak {result['peak_rss_mib']:.0f} MiB, "
            f"stages: {', '.join(result['stages_run']) or 'none'}"
        )
    lock = "differs from the committed one: " + lock_changed if lock_changed else "equal to the committed one"
    print(f"dvc.lock after make repro: {lock}")
    return results | {"dvc_lock_diff": lock_changed}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--reuse-venv", action="store_true", help="link this checkout's .venv into the clone")
    parser.add_argument("--experiments", type=int, default=2, help="fine-tuning experiments, sequential and -j 2")
    parser.add_argument("--epochs", type=int, default=60, help="epochs logged by the logging comparison")
    parser.add_argument("--logging-only", action="store_true", help="run only the logging comparison")
    args = parser.parse_args()
    if args.logging_only:
        save("tracking_logging", "python " + " ".join(sys.argv), vars(args), logging_overhead(args.epochs))
        return
    runs = [one_run(args.reuse_venv, args.experiments) for _ in range(args.repeats)]
    results = {
        name: {
            "seconds": median([run[name]["seconds"] for run in runs]),
            "peak_rss_mib": max(run[name]["peak_rss_mib"] for run in runs),
            "stages_run": runs[-1][name]["stages_run"],
        }
        for name in runs[0]
        if name != "dvc_lock_diff"
    }
    results["dvc_lock_equal_to_committed"] = all(not run["dvc_lock_diff"] for run in runs)
    results["runs"] = runs
    save("pipeline", "python " + " ".join(sys.argv), vars(args), results)
    results["logging"] = logging_overhead(args.epochs)
    save("pipeline", "python " + " ".join(sys.argv), vars(args), results)


if __name__ == "__main__":
    main()
