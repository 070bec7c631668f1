"""The screenshots in docs/ show the committed demo run: each one's manifest entry (written by
docs/screenshots.py when it took them) names the pipeline outputs it shows with their md5, and the
committed dvc.lock must still have those md5s. A change to the model card, the headline, the plots or
the Data Docs without `make screenshots` fails here."""

import hashlib
import json
import re

import yaml
from conftest import REPO

SHOTS = REPO / "docs" / "screenshots"


def test_every_screenshot_shows_the_outputs_of_the_committed_run():
    manifest = json.loads((SHOTS / "manifest.json").read_text())
    lock = yaml.safe_load((REPO / "dvc.lock").read_text())
    locked = {out["path"]: out["md5"] for stage in lock["stages"].values() for out in stage.get("outs", [])}

    def now(path: str) -> str:  # a pipeline output's md5 in dvc.lock, a project file's of its bytes
        return locked[path] if path in locked else hashlib.md5((REPO / path).read_bytes()).hexdigest()

    assert set(manifest) == {path.name for path in SHOTS.glob("*.png")}
    stale = {name: path for name, shows in manifest.items() for path, md5 in shows.items() if now(path) != md5}
    assert not stale, f"retake the screenshots (`make screenshots` in a fresh clone after `make repro`): {stale}"
    # The model card's screenshot (the @candidate version's description) is among them.
    assert manifest["mlflow-candidate.png"] == {"reports/model_card.md": locked["reports/model_card.md"]}
    # The runs table's numbers are the headline's, as the code that logs them writes them.
    assert {"reports/eval/headline.json", "src/cxr/report/mlflow_log.py"} <= set(manifest["mlflow-experiment.png"])


def test_the_docs_show_only_screenshots_that_are_retaken():
    shown = {
        name
        for page in (REPO / "README.md", *(REPO / "docs").glob("*.md"))
        for name in re.findall(r"screenshots/([\w-]+\.png)", page.read_text())
    }
    assert shown <= set(json.loads((SHOTS / "manifest.json").read_text()))
