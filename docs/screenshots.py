"""Retake the screenshots in docs/screenshots/ from a repro'd checkout, as a new user sees it.

    make screenshots           # after `make repro`, in a fresh clone; or:
    python docs/screenshots.py --repo <a repro'd checkout> --out docs/screenshots

Starts `mlflow ui` on 127.0.0.1 (a free port) over the checkout's mlflow.db and drives headless
Chromium (Debian's `chromium`, installed with apt-get when missing and run as root) through
Playwright (the `docs` extra), with the network off: every request that is not to 127.0.0.1, a
file or inline data is refused, and host names other than 127.0.0.1 do not resolve. Pages: the
runs table (Model training view, the pipeline run's stage runs expanded, the headline columns
chosen), a training run's confusion matrix, the @candidate version with the model card, the
`cxr-plots show` page, and the split's Data Docs (cxr's index and a Great Expectations validation
page). MLflow's UI keeps its view in the browser's localStorage: the script sets it before each
page loads (the runs table's columns and expanded rows, Model training rather than GenAI, the
Assistant panel closed).

Each PNG is reduced to a palette so it stays small enough to commit, and
``docs/screenshots/manifest.json`` records, per screenshot, the md5 of what it shows: each pipeline
output's (from the checkout's dvc.lock) and each project file's that decides how it is drawn (e.g.
the code that logs the runs table's metrics); ``tests/test_screenshots.py`` fails when the committed
dvc.lock or files no longer have those md5s, i.e. when a change altered what a screenshot shows
without retaking it.
Refuses a checkout whose outputs differ from its dvc.lock (`dvc status` not clean).
Not part of `make test`: it needs a browser and a repro'd pipeline.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import urllib.parse
from dataclasses import dataclass
from pathlib import Path

import yaml
from mlflow.tracking import MlflowClient
from PIL import Image

from cxr.core.config import PARAMS_FILE, load
from cxr.data.data_docs import validation_page
from cxr.serve.local import free_port, mlflow_command, running

BROWSERS = ("chromium", "chromium-browser", "google-chrome")
MANIFEST = "manifest.json"
# The runs table's columns: what each stage run is, and the headline of each model's test.
PARAM_COLUMNS = ["backbone", "image_size_px"]
METRIC_COLUMNS = ["test_accuracy", "test_macro_f1", "test_sensitivity_{positive}", "test_specificity_{positive}"]
NETWORK_OFF = "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1"


@dataclass(frozen=True)
class Shot:
    """One screenshot: its file name, the page, what it shows (pipeline outputs by their dvc.lock
    path, and the project files that decide how they are drawn), the text to wait for (in an element
    matching ``selector``) before taking it, the window size, and whether to take the whole page."""

    name: str
    url: str
    shows: tuple[str, ...]
    wait_for: str = ""
    size: tuple[int, int] = (1440, 900)
    selector: str = "body"
    full_page: bool = False


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


def shots(repo: Path, base: str, task: str) -> tuple[list[Shot], dict[str, str]]:
    """The screenshots to take, and the localStorage MLflow's UI reads (the runs table's view)."""
    client = MlflowClient(f"sqlite:///{repo / 'mlflow.db'}")
    experiment = client.get_experiment_by_name(f"cxr-{task}")
    if experiment is None:
        raise SystemExit(f"error: no experiment cxr-{task} in {repo / 'mlflow.db'}; run `make repro` first")
    runs = client.search_runs([experiment.experiment_id], order_by=["attributes.start_time DESC"])
    train = next((run for run in runs if run.info.run_name.startswith("train@")), None)
    if train is None:
        raise SystemExit(f"error: no train@ run in {repo / 'mlflow.db'}; run `make repro` first")
    parents = sorted({run.data.tags["mlflow.parentRunId"] for run in runs if "mlflow.parentRunId" in run.data.tags})
    candidate = client.get_model_version_by_alias(f"cxr-{task}", "candidate")
    validated, plots = "reports/validation/split", repo / "dvc_plots/offline.html"
    validation = repo / validated / (validation_page(repo / validated, "split", "split") or "missing.html")
    positive = load(repo / PARAMS_FILE).positive_class
    columns = [f"params.`{name}`" for name in PARAM_COLUMNS]
    columns += [f"metrics.`{name.format(positive=positive)}`" for name in METRIC_COLUMNS]
    view = {
        "selectedColumns": columns,
        "columnOrder": ["attributes.`Run Name`", "runDateAndNestInfo", "duration", *columns],
        "columnWidths": {"attributes.`Run Name`": 200, **{column: 170 for column in columns}},
        "runsExpanded": {parent: True for parent in parents},
        "runsHiddenMode": "SHOW_ALL",
        "groupBy": None,
        "groupsExpanded": {},
        "viewMaximized": False,
        "runListHidden": False,
        "autoRefreshEnabled": False,
    }
    storage = {
        f'MLflowLocalStorage-1.1-ExperimentPage-["{experiment.experiment_id}"]-ReactComponentState': json.dumps(view),
        "mlflow.workflowType_v1": json.dumps("machine_learning"),
        "mlflow.assistant.panelOpen_v1": "false",
        "mlflow.assistant.fab.autoOpenedOnFirstLoad_v1": "true",
    }
    experiment_url = f"{base}/#/experiments/{experiment.experiment_id}"
    table = urllib.parse.urlencode(
        {
            "workflowType": "machine_learning",
            "orderByKey": "attributes.start_time",
            "orderByAsc": "false",
            "startTime": "ALL",
            "lifecycleFilter": "Active",
            "modelVersionFilter": "All Runs",
            "datasetsFilter": "W10=",  # base64 of []: no dataset filter
        }
    )
    pages = [
        Shot(
            "mlflow-experiment.png",
            f"{experiment_url}/runs?{table}",
            ("reports/eval/headline.json", "src/cxr/report/mlflow_log.py", "src/cxr/core/runs.py"),
            "train@vgg16",
            (1700, 900),
            ".ag-row",  # a row of the runs table (the experiment's description also says "train@")
        ),
        Shot(
            "mlflow-confusion.png",
            f"{experiment_url}/runs/{train.info.run_id}/artifacts/evaluation/confusion.png?workflowType=machine_learning",
            ("reports/eval/models",),
            "confusion.png",
        ),
        Shot(
            "mlflow-candidate.png",
            f"{base}/#/models/cxr-{task}/versions/{candidate.version}",
            ("reports/model_card.md",),
            "Model card",
        ),
        Shot(
            "dvc-plots.png",
            plots.as_uri(),
            ("reports/eval/confusion", "reports/eval/roc", ".dvc/plots/confusion_counts.json", "src/cxr/plots.py"),
            full_page=True,
        ),
        Shot("gx-data-docs.png", (repo / validated / "index.html").as_uri(), (validated,), full_page=True),
        Shot("gx-validation.png", validation.as_uri(), (validated,), full_page=True),
    ]
    for page in pages:
        if page.url.startswith("file:") and not Path(urllib.parse.unquote(page.url.removeprefix("file://"))).is_file():
            raise SystemExit(f"error: {page.url} does not exist; run `make repro` first")
    return pages, storage


def shown_md5(repo: Path, path: str) -> str:
    """The md5 of what ``path`` holds: a pipeline output's from dvc.lock, a project file's from its bytes."""
    locked = locked_outputs(repo)
    return locked[path] if path in locked else hashlib.md5((repo / path).read_bytes()).hexdigest()


def locked_outputs(repo: Path) -> dict[str, str]:
    """Every output path in the checkout's dvc.lock -> its md5."""
    lock = yaml.safe_load((repo / "dvc.lock").read_text())
    return {out["path"]: out["md5"] for stage in lock["stages"].values() for out in stage.get("outs", [])}


def take(shots_: list[Shot], storage: dict[str, str], chromium: str, base: str, out: Path) -> None:
    """Each shot through Playwright with the network off, saved as a palette PNG under ``out``."""
    from playwright.sync_api import sync_playwright

    refused: list[str] = []

    def local_only(route) -> None:
        url = route.request.url
        if url.startswith((f"{base}/", "file:", "data:", "blob:")):
            route.continue_()
        else:
            refused.append(url)
            route.abort()

    script = "(() => { try { for (const [k, v] of Object.entries(%s)) localStorage.setItem(k, v); } catch (e) {} })();"
    with sync_playwright() as playwright:
        chrome = playwright.chromium.launch(executable_path=chromium, args=[NETWORK_OFF])
        for shot in shots_:
            context = chrome.new_context(viewport=dict(zip(("width", "height"), shot.size)), service_workers="block")
            context.route("**/*", local_only)
            context.add_init_script(script % json.dumps(storage))
            page = context.new_page()
            page.goto(shot.url, wait_until="load")
            if shot.wait_for:
                page.locator(shot.selector, has_text=shot.wait_for).first.wait_for(timeout=120000)
            page.wait_for_timeout(2500)
            page.add_style_tag(content="button[data-assistant-ui]{display:none!important}")
            path = out / shot.name
            page.screenshot(path=path, full_page=shot.full_page)
            context.close()
            with Image.open(path) as picture:
                picture.convert("RGB").quantize(colors=128).save(path, optimize=True)
            print(f"{path} ({path.stat().st_size // 1024} KB) <- {shot.url}")
        chrome.close()
    print(f"requests refused (network off): {len(refused)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repo", type=Path, default=Path.cwd(), help="a checkout after `make repro`")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "screenshots")
    parser.add_argument("--task", default="multiclass")
    args = parser.parse_args()
    repo = args.repo.resolve()
    tools = Path(sys.executable).parent
    status = subprocess.run([str(tools / "dvc"), "status", "--quiet"], cwd=repo, capture_output=True, text=True)
    if status.returncode != 0:
        raise SystemExit(f"error: {repo}'s outputs differ from its dvc.lock (`dvc status`); run `make repro` first")
    chromium = browser()
    subprocess.run(
        [str(tools / "cxr-plots"), "show", "reports/eval/confusion", "reports/eval/roc"],
        cwd=repo,
        check=True,
        capture_output=True,
    )
    args.out.mkdir(parents=True, exist_ok=True)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    ui = mlflow_command(
        "ui", "--backend-store-uri", f"sqlite:///{repo / 'mlflow.db'}", "--host", "127.0.0.1", "--port", str(port)
    )
    with running(ui, f"{base}/health", cwd=repo):
        shots_, storage = shots(repo, base, args.task)
        take(shots_, storage, chromium, base, args.out)
    manifest = {shot.name: {path: shown_md5(repo, path) for path in shot.shows} for shot in shots_}
    (args.out / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    print(f"{args.out / MANIFEST}: the outputs each screenshot shows, by md5")


if __name__ == "__main__":
    main()
