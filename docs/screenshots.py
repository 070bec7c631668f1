"""Retake the screenshots in docs/screenshots/ from a repro'd checkout, as a new user sees it.

    python docs/screenshots.py            # after `make repro`, from the project folder

Starts `mlflow ui` on 127.0.0.1 (a free port) over the checkout's mlflow.db, drives headless
Chromium (Debian's `chromium`; installed with apt-get when missing and run as root) to the
experiment's runs, a training run's confusion matrix, the @candidate registered version, the
DVC plots page (`cxr-plots show`, which works offline) and the split's Great Expectations Data
Docs, and saves one PNG per page, reduced to a palette so they stay small enough to commit.
Not part of `make test`: it needs a browser and a repro'd pipeline.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
from pathlib import Path

from mlflow.tracking import MlflowClient
from PIL import Image

from cxr.serve.local import free_port, mlflow_command, running

BROWSERS = ("chromium", "chromium-browser", "google-chrome")


def browser() -> str:
    found = next((shutil.which(name) for name in BROWSERS if shutil.which(name)), None)
    if found:
        return found
    if os.geteuid() != 0:
        raise SystemExit("error: no Chromium found; install Debian's `chromium` package (apt-get install chromium)")
    subprocess.run(
        ["apt-get", "install", "-y", "-q", "chromium"],
        check=True,
        env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"},
    )
    return shutil.which("chromium")


def shoot(chromium: str, url: str, path: Path, width: int, height: int, wait_ms: int) -> None:
    """A headless Chromium screenshot of ``url`` after ``wait_ms`` of page time, as a palette PNG."""
    subprocess.run(
        [
            chromium,
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--hide-scrollbars",
            f"--window-size={width},{height}",
            f"--virtual-time-budget={wait_ms}",
            f"--screenshot={path}",
            url,
        ],
        check=True,
        capture_output=True,
        timeout=180,
    )
    with Image.open(path) as shot:
        shot.convert("RGB").quantize(colors=128).save(path, optimize=True)
    print(f"{path} ({path.stat().st_size // 1024} KB) <- {url}")


def pages(repo: Path, base: str, task: str) -> dict[str, str]:
    """Screenshot name -> URL, found from the checkout's MLflow runs and reports."""
    client = MlflowClient(f"sqlite:///{repo / 'mlflow.db'}")
    experiment = client.get_experiment_by_name(f"cxr-{task}")
    if experiment is None:
        raise SystemExit(f"error: no experiment cxr-{task} in {repo / 'mlflow.db'}; run `make repro` first")
    champion = client.get_model_version_by_alias(f"cxr-{task}", "candidate")
    [train] = client.search_runs(
        [experiment.experiment_id],
        "attributes.run_name LIKE 'train@%'",
        order_by=["attributes.start_time DESC"],
        max_results=1,
    )
    docs = sorted((repo / "reports/validation/split/validations").rglob("*.html"))
    if not docs:
        raise SystemExit("error: reports/validation/split has no Data Docs; run `make repro` first")
    # MLflow 3.17's UI keeps a browser-wide GenAI/Model-training switch (GenAI on a first visit);
    # ``workflowType`` in the link selects Model training, where the runs table is.
    experiment_url = f"{base}/#/experiments/{experiment.experiment_id}"
    return {
        "mlflow-experiment.png": f"{experiment_url}/runs?workflowType=machine_learning",
        "mlflow-confusion.png": f"{experiment_url}/runs/{train.info.run_id}/artifacts/evaluation/confusion.png"
        "?workflowType=machine_learning",
        "mlflow-champion.png": f"{base}/#/models/cxr-{task}/versions/{champion.version}",
        "dvc-plots.png": (repo / "dvc_plots/offline.html").as_uri(),
        "gx-data-docs.png": max(docs, key=lambda page: page.stat().st_size).as_uri(),  # the main table
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repo", type=Path, default=Path.cwd(), help="a checkout after `make repro`")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "screenshots")
    parser.add_argument("--task", default="multiclass")
    parser.add_argument("--wait-ms", type=int, default=15000, help="page time before each screenshot")
    args = parser.parse_args()
    repo = args.repo.resolve()
    chromium = browser()
    subprocess.run([str(Path(sys.executable).parent / "cxr-plots"), "show"], cwd=repo, check=True, capture_output=True)
    args.out.mkdir(parents=True, exist_ok=True)
    port = free_port()
    ui = mlflow_command(
        "ui", "--backend-store-uri", f"sqlite:///{repo / 'mlflow.db'}", "--host", "127.0.0.1", "--port", str(port)
    )
    with running(ui, f"http://127.0.0.1:{port}/health", cwd=repo):
        for name, url in pages(repo, f"http://127.0.0.1:{port}", args.task).items():
            shoot(chromium, url, args.out / name, 1440, 900, args.wait_ms)


if __name__ == "__main__":
    main()
