"""The README's pipeline end to end with DVC, in a fresh git clone of the working tree."""

import base64
import hashlib
import json
import os
import re
import subprocess
import sys
import urllib.request
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from conftest import (
    confusion_cells,
    project_clone,
    rows_are_actual_and_columns_predicted,
    serve_model,
    sh,
    stdout,
    user_env,
)

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def clone(tmp_path_factory) -> Path:
    """The project, cloned at test size (:func:`conftest.project_clone`): the workspace the tests share."""
    return project_clone(tmp_path_factory.mktemp("clone"))


def mlflow_runs(folder: Path, uri: str | None = None) -> pd.DataFrame:
    import mlflow

    mlflow.set_tracking_uri(uri or f"sqlite:///{folder / 'mlflow.db'}")
    runs = mlflow.search_runs(experiment_names=["cxr-multiclass"])
    return runs[runs["tags.stage"].notna()]  # stage runs: their parents carry no `stage` tag


def mlflow_client(folder: Path):
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=f"sqlite:///{folder / 'mlflow.db'}")


def output_bytes(folder: Path, lock: dict, stages: tuple[str, ...]) -> dict[str, str]:
    """md5 of every file the stages write (directories file by file), by path."""
    digests = {}
    for stage in stages:
        for out in lock["stages"][stage]["outs"]:
            path = folder / out["path"]
            for file in sorted(path.rglob("*")) if path.is_dir() else [path]:
                if file.is_file():
                    digests[file.relative_to(folder).as_posix()] = hashlib.md5(file.read_bytes()).hexdigest()
    assert digests
    return digests


# The tests below share one repro'd workspace (`clone`) and run in file order: each checks one
# behaviour on what the ones before it left.


def test_repro_runs_every_stage_and_records_one_parent_run(clone):
    sh(clone, "dvc", "repro")
    split = pd.read_csv(clone / "data/processed/split.csv")
    assert set(split["split"]) == {"train", "val", "test"}
    for backbone in ("nasnetlarge", "vgg16", "xception", "inceptionresnetv2"):
        assert (clone / "models" / backbone / "model.keras").is_file()
    assert (clone / "models/finetuned/model.keras").is_file()
    runs = mlflow_runs(clone)
    backbones = ["inceptionresnetv2", "nasnetlarge", "vgg16", "xception"]
    assert sorted(runs["tags.mlflow.runName"]) == sorted(
        ["evaluate", "finetune", "audit_report", "cross_source"]
        + [f"{stage}@{name}" for stage in ("train", "audit") for name in backbones]
    )
    # Each stage run logs the params its dvc.yaml entry declares, with its own values: a train@ run
    # its own backbone and input side, not the fine-tuned model's base; the parent run every param.
    by_stage = runs.set_index("tags.mlflow.runName")
    for name in backbones:
        for stage in ("train", "audit"):
            assert by_stage.loc[f"{stage}@{name}", "params.backbone"] == name, stage
        assert by_stage.loc[f"train@{name}", "params.image_size_px"] == "75"
    assert by_stage.loc["finetune", "params.backbone"] == "xception"
    assert pd.isna(by_stage.loc["train@vgg16", "params.split.seed"]), "split.seed is not a train@ param"
    assert pd.notna(by_stage.loc["train@vgg16", "params.train.epochs"])
    assert "**xception.**" in (clone / "reports/eval/audit.md").read_text()
    # Real lung masks (lung_masks stage) for the COVID collection's images, none for Kermany's: the audit
    # measures Grad-CAM inside each image's own mask where it has one, in the box elsewhere, and says so.
    masks = pd.read_csv(clone / "data/processed/lung_masks/index.csv")
    assert len(masks) and masks["image_id"].str.startswith("covid_chestxray/").all()
    saliency = pd.read_csv(clone / "reports/audit/vgg16/saliency.csv")
    expected = saliency["image_id"].isin(masks["image_id"]).map({True: "mask", False: "box"})
    assert saliency["region"].tolist() == expected.tolist() and set(expected) == {"mask", "box"}
    audit = json.loads((clone / "reports/audit/vgg16.json").read_text())
    assert audit["saliency"]["regions"] == expected.value_counts().to_dict()
    masked_test = split[split["split"] == "test"]["image_id"].isin(masks["image_id"]).sum()
    assert audit["saliency"]["real_mask"]["images"] == masked_test > 0
    assert len(pd.read_csv(clone / "reports/audit/vgg16/saliency_real_mask.csv")) == masked_test
    assert audit["saliency"]["layer"] == "block4_conv3" and audit["saliency"]["map_side"] >= 7
    region = audit["lungs_hidden"]["region"]
    assert region["kind"] == "atlas" and region["masks"] > 0 and region["lungs_blanked"] > 0.9
    audit_md = (clone / "reports/eval/audit.md").read_text()
    assert f"real lung masks on {audit['saliency']['regions']['mask']} images" in audit_md
    assert f"| vgg16 | atlas of {region['masks']} masks | " in audit_md.split("### Real lungs against the box")[1]
    assert (clone / "reports/model_card.md").is_file()
    comparison = (clone / "reports/eval/comparison.md").read_text()
    for model in ("nasnetlarge", "vgg16", "xception", "inceptionresnetv2"):
        assert f"| {model} | " in comparison
    # A fine-tune whose best epoch is 0 kept the base's weights: every report says so, or none does,
    # and it does not compete for the release (it is its base).
    unchanged = json.loads((clone / "reports/finetune.json").read_text())["unchanged_from_base"]
    card = (clone / "reports/model_card.md").read_text()
    chosen = json.loads((clone / "reports/eval/release.json").read_text())
    assert ("| finetuned (= xception) | " in comparison) == unchanged == ("finetuned" not in chosen["ranking"])
    assert chosen["candidate"] != "finetuned" or ("fine-tuning changed nothing" in card) == unchanged
    assert f"@candidate: {chosen['candidate']}." in comparison
    assert unchanged or "| finetuned | " in comparison
    # One DVC metrics file, what users compare: per model the headline values, then their intervals,
    # rounded; every other statistic stays in the reports (metrics.json, training, audit).
    [shown] = json.loads(stdout(clone, "dvc", "metrics", "show", "--json")).values()
    assert list(shown["data"]) == ["reports/eval/headline.json"], list(shown["data"])
    headline = shown["data"]["reports/eval/headline.json"]["data"]
    assert set(headline) == {*backbones, "finetuned"}
    lead = ["accuracy", "macro_f1", "sensitivity_COVID", "specificity_COVID"]
    assert list(headline["xception"]) == [*lead, *(f"{key}{end}" for key in lead for end in ("_low", "_high"))]
    everything = json.loads((clone / "reports/eval/metrics.json").read_text())["xception"]
    assert {key: round(everything[key], 3) for key in headline["xception"]} == headline["xception"]
    assert all(headline["xception"][f"{key}_low"] <= headline["xception"][key] for key in lead)
    # Each model's run has the same numbers under one name each (test_<statistic>), rounded as shown.
    for key in headline["xception"]:
        assert by_stage.loc["train@xception", f"metrics.test_{key}"] == headline["xception"][key], key
    assert "metrics.learning_rate" not in runs.columns or runs["metrics.learning_rate"].isna().all()
    # One parent run groups the repro's stage runs and carries every model's headline.
    assert runs["tags.mlflow.parentRunId"].nunique() == 1
    parent = mlflow_client(clone).get_run(runs["tags.mlflow.parentRunId"].iloc[0])
    commit = sh(clone, "git", "rev-parse", "HEAD").strip()
    assert parent.info.run_name == f"workspace@{commit[:7]}"
    assert {f"test.{model}.macro_f1_low" for model in [*backbones, "finetuned"]} <= set(parent.data.metrics)

    lock = yaml.safe_load((clone / "dvc.lock").read_text())
    split_outs = {out["path"]: out for out in lock["stages"]["split"]["outs"]}
    assert len(split_outs["data/processed/split.csv"]["md5"]) == 32
    raw = {dep["path"]: dep for dep in lock["stages"]["merge"]["deps"]}
    assert raw["data/raw"]["md5"].endswith(".dir")


def test_a_second_repro_does_nothing_and_a_forced_rerun_writes_the_same_bytes(clone):
    lock = yaml.safe_load((clone / "dvc.lock").read_text())
    again = sh(clone, "dvc", "repro")
    assert "Data and pipelines are up to date" in again
    assert "Running stage" not in again

    # Same inputs, same bytes: every validating stage (Great Expectations results and Data Docs), a
    # retrain and a re-evaluation, forced, write identical files, so DVC sees nothing new and nothing
    # downstream reruns.
    stages = ("merge", "filter_pa", "split", "external", "train@xception", "evaluate")
    before = output_bytes(clone, lock, stages)
    assert {f"reports/validation/{stage}.json" for stage in stages[:4]} <= set(before)
    for stage in stages:
        sh(clone, "dvc", "repro", "-f", "-s", stage)
    assert output_bytes(clone, lock, stages) == before
    assert "Data and pipelines are up to date" in sh(clone, "dvc", "status")


def test_two_queued_experiments_run_two_at_a_time_and_record_their_runs(clone):
    # Two experiments queued and run two at a time (the README's `-j 2`), logging to the one SQLite
    # mlflow.db: every stage run and parent is recorded and each fine-tune registers a version. One of
    # them has a fine-tuning rate that can only hurt: no epoch beats the base, so the reports must say
    # the fine-tuned model is vgg16's weights rather than present it as a second result.
    # Queued experiments start from the last commit: commit dvc.lock, as after any `dvc repro`, so they
    # reuse its results instead of rerunning the stages whose metrics DVC does not cache.
    sh(clone, "git", "add", "dvc.lock")
    sh(clone, "git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "dvc repro")
    finetuned = "name = 'cxr-multiclass' and tags.model = 'finetuned'"
    versions = len(mlflow_client(clone).search_model_versions(finetuned))
    queued = {
        "lr-hurts": ["-S", "backbone=vgg16", "-S", "finetune.learning_rate=10"],
        "lr-small": ["-S", "finetune.learning_rate=0.00003"],
    }
    run_queued(clone, queued)
    # README's one screen: the experiments, the params they set and the headline values they changed,
    # nothing else (no other model's metrics, no dependency hashes, no reports).
    one_screen = ["--only-changed", "--drop", ONE_SCREEN_DROP]
    columns = stdout(clone, "dvc", "exp", "show", "--no-pager", "--csv", *one_screen).splitlines()[0].split(",")
    shown = set(columns) - {"Experiment", "rev", "typ", "parent", "State", "Executor"}
    lead = ["accuracy", "macro_f1", "sensitivity_COVID", "specificity_COVID"]
    allowed = {
        "backbone",
        "finetune.learning_rate",
        *(f"finetuned.{key}{end}" for key in lead for end in ("", "_low", "_high")),
    }
    assert {"backbone", "finetune.learning_rate", "finetuned.accuracy"} <= shown <= allowed, columns
    runs = mlflow_runs(clone)
    check_experiment_runs(clone, mlflow_client(clone), runs, queued)
    assert len(mlflow_client(clone).search_model_versions(finetuned)) == versions + 2
    hurts = runs[(runs["tags.DVC_EXP_NAME"] == "lr-hurts") & (runs["tags.mlflow.runName"] == "finetune")]
    assert hurts["tags.backbone"].tolist() == ["vgg16"]
    parent = mlflow_client(clone).get_run(hurts["tags.mlflow.parentRunId"].iloc[0])
    assert parent.data.params["backbone"] == "vgg16" and float(parent.data.params["finetune.learning_rate"]) == 10
    assert "test.finetuned.accuracy" in parent.data.metrics
    sh(clone, "dvc", "exp", "apply", "lr-hurts")
    assert json.loads((clone / "reports/finetune.json").read_text())["unchanged_from_base"] is True
    comparison = (clone / "reports/eval/comparison.md").read_text()
    assert "| finetuned (= vgg16) | " in comparison
    assert "| - | finetuned | - | does not compete: fine-tuning left its base unchanged |" in comparison
    assert "finetuned" not in json.loads((clone / "reports/eval/release.json").read_text())["ranking"]
    assert not list((clone / ".dvc").rglob("mlflow.db"))


def test_an_experiment_on_another_split_shows_in_exp_show_and_plots(clone):
    split = pd.read_csv(clone / "data/processed/split.csv")
    sh(clone, "dvc", "exp", "run", "-S", "split.seed=7", "-S", "backbones=[vgg16]")
    seven = pd.read_csv(clone / "data/processed/split.csv")
    assert yaml.safe_load((clone / "params.yaml").read_text())["split"]["seed"] == 7
    merged = split.merge(seven, on="image_id", suffixes=("", "_seven"))
    assert len(merged) == len(split)
    assert (merged["split"] != merged["split_seven"]).any()
    columns = stdout(clone, "dvc", "exp", "show", "--no-pager", "--csv").splitlines()[0].split(",")
    assert {"split.seed", "backbone", "vgg16.accuracy", "vgg16.specificity_COVID_high"} <= set(columns)
    # Split counts and training statistics are reports, not DVC metrics: exp show does not list them.
    assert not {"images.train", "best.val_accuracy"} & set(columns), columns
    plots = sh(clone, "dvc", "plots", "show", "-o", "plots")
    html = (clone / "plots/index.html").read_text()
    assert "plots" in plots and "val_accuracy" in html and "reports_eval_confusion_vgg16_csv" in html
    # cxr-plots, offline: the confusion matrix with its counts, rows actual and columns predicted (as the
    # MLflow PNGs), and the positive class's ROC curve.
    sh(clone, "cxr-plots", "-o", "offline", "show", "reports/eval/confusion", "reports/eval/roc")
    figures = {
        caption: figure
        for figure in (clone / "offline/offline.html").read_text().split("<figure>")[1:]
        for caption in re.findall(r"<figcaption>(\S+) \(", figure)
    }
    spec = json.loads(stdout(clone, "dvc", "plots", "show", "reports/eval/confusion", "--json"))["data"]
    [confusion_spec] = [item["content"] for item in spec["reports/eval/confusion/vgg16.csv"]]
    assert confusion_spec["spec"]["encoding"]["x"]["field"] == "predicted"
    assert confusion_spec["spec"]["encoding"]["y"]["field"] == "actual"
    pairs = pd.read_csv(clone / "reports/eval/confusion/vgg16.csv")
    # One row per actual class and one column per predicted class that occur (DVC's template draws
    # no column for a class the model never predicted), zeros included.
    cells = pd.crosstab(pairs["actual"], pairs["predicted"])
    drawn = confusion_cells(figures["reports/eval/confusion/vgg16.csv"])
    assert {cell: count for cell, (_, _, count) in drawn.items()} == {
        (actual, predicted): int(cells.loc[actual, predicted]) for actual in cells.index for predicted in cells.columns
    }
    assert rows_are_actual_and_columns_predicted(drawn)
    roc = pd.read_csv(clone / "reports/eval/roc/vgg16.csv")
    assert roc.iloc[0][["false_positive_rate", "sensitivity"]].tolist() == [0, 0]
    assert roc.iloc[-1][["false_positive_rate", "sensitivity"]].tolist() == [1, 1]
    assert roc["false_positive_rate"].is_monotonic_increasing and roc["sensitivity"].is_monotonic_increasing
    assert ">sensitivity (COVID)</text>" in figures["reports/eval/roc/vgg16.csv"]


# README's `dvc exp show --only-changed --drop ...`: the dates, dependency hashes and reports.
ONE_SCREEN_DROP = r"Created|models.*|params\.yaml|reports/.*"


def run_queued(folder: Path, experiments: dict[str, list[str]], env: dict[str, str] | None = None) -> None:
    """Queue ``experiments`` (name -> ``-S`` overrides) and run them two at a time, as README shows."""
    for name, overrides in experiments.items():
        assert "Queued experiment" in sh(folder, "dvc", "exp", "run", "--queue", "-n", name, *overrides, env=env)
    sh(folder, "dvc", "exp", "run", "--run-all", "-j", "2", env=env)
    status = stdout(folder, "dvc", "queue", "status")
    failed = [name for name in experiments if re.search(rf"\b{re.escape(name)}\s.*Failed", status)]
    assert not failed, "\n".join([status, *(sh(folder, "dvc", "queue", "logs", name) for name in failed)])
    shown = stdout(folder, "dvc", "exp", "show", "--no-pager", "--csv").splitlines()
    for name in experiments:
        assert any(line.startswith(f"{name},") for line in shown), shown[1:]


def check_experiment_runs(
    folder: Path, client, runs: pd.DataFrame, experiments: dict[str, list[str]], only_finetune_onwards: bool = True
) -> None:
    """Each experiment logged the fine-tune and what follows it (only those, unless told otherwise) as
    stage runs under one parent named after the experiment, and nothing under DVC's temporary copies."""
    for name, overrides in experiments.items():
        # Another backbone to fine-tune is another model for the cross_source stage to score.
        moved = any(item.startswith("backbone=") for item in overrides)
        expected = {"audit_report", "evaluate", "finetune", *(["cross_source"] if moved else [])}
        mine = runs[runs["tags.DVC_EXP_NAME"] == name]
        stages = set(mine["tags.mlflow.runName"])
        assert stages == expected if only_finetune_onwards else stages >= expected, (
            name,
            sorted(stages),
            stdout(folder, "dvc", "queue", "status"),
        )
        assert len(mine) == len(stages), (name, sorted(mine["tags.mlflow.runName"]))
        assert mine["status"].eq("FINISHED").all()
        [parent_id] = set(mine["tags.mlflow.parentRunId"])
        assert client.get_run(parent_id).info.run_name == name
    assert not list((folder / ".dvc").rglob("mlflow.db"))


def test_the_release_gate_decides_what_cxr_predict_and_the_server_use(clone):
    """README "Reading the results" and "Use the model". As this workspace's models scored, @candidate
    is the first on validation and @champion the first-ranked that passed the gate. Then limits that
    no model meets, as no model of the shipped demo meets the defaults: @champion is removed,
    cxr-predict says so in one line, and the @candidate predicts and is served with calibrated
    probabilities, the decision at the operating point and the gate's result in every row."""
    client = mlflow_client(clone)
    chosen = json.loads((clone / "reports/eval/release.json").read_text())
    assessed = {name: json.loads((clone / f"reports/register/{name}.json").read_text()) for name in chosen["ranking"]}
    ranked = sorted(chosen["ranking"], key=lambda name: -assessed[name]["validation"]["macro_f1"])
    passed = [name for name in ranked if assessed[name]["release"]["passed"]]
    assert chosen["ranking"] == ranked and chosen["candidate"] == ranked[0]
    assert chosen["champion"] == (passed[0] if passed else None)
    if passed:
        assert client.get_model_version_by_alias("cxr-multiclass", "champion").tags["model"] == passed[0]

    strict = ["max_lungs_hidden_above_chance=0", "max_within_class_probe=0", "max_external_drop=0", "min_images=1"]
    sh(clone, "dvc", "exp", "run", *[word for limit in strict for word in ("-S", f"release.{limit}")])
    chosen = json.loads((clone / "reports/eval/release.json").read_text())
    assert chosen["champion"] is None and chosen["candidate"] == chosen["ranking"][0]
    assert "champion" not in client.get_registered_model("cxr-multiclass").aliases
    candidate = client.get_model_version_by_alias("cxr-multiclass", "candidate")
    assert candidate.tags["model"] == chosen["candidate"] and candidate.tags["release_gate"].startswith("failed: ")
    assert candidate.tags["test.accuracy"] and candidate.tags["test.ece"]
    test = pd.read_csv(clone / "data/processed/split.csv").query("split == 'test'").head(3)
    refused = subprocess.run(
        ["cxr-predict", *test["path"], "--output", "predictions.csv"],
        cwd=clone,
        env=user_env(),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert refused.returncode == 1 and not (clone / "predictions.csv").exists()
    [line] = [line for line in refused.stderr.splitlines() if line.startswith("error: ")]
    assert line.startswith("error: models:/cxr-multiclass has no @champion: no model passed the release gate.")
    assert f"The candidate, version {candidate.version} ({candidate.tags['model']}), failed: " in line
    assert line.endswith("To use it anyway: --model models:/cxr-multiclass@candidate")

    uri = "models:/cxr-multiclass@candidate"
    printed = sh(clone, "cxr-predict", *test["path"], "--model", uri, "--output", "predictions.csv")
    assert "3 file(s), 3 predicted" in printed and "not diagnostic devices" in printed
    table = pd.read_csv(clone / "predictions.csv", keep_default_na=False)
    assert set(table["model"]) == {"cxr-multiclass"} and set(table["model_version"]) == {candidate.version}
    assert set(table["release"]) == {f"FAILED the release gate ({candidate.tags['release_gate'][8:]})"}
    threshold = json.loads((clone / f"reports/register/{chosen['candidate']}.json").read_text())["operating_point"]
    expected = np.where(table["p_COVID"] >= threshold["threshold"], "COVID", "not COVID")
    assert table["decision"].tolist() == expected.tolist()

    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
        "MLFLOW_TRACKING_URI": f"sqlite:///{clone / 'mlflow.db'}",
    }
    image = base64.b64encode((clone / test["path"].iloc[0]).read_bytes()).decode()
    request = json.dumps({"dataframe_split": {"columns": ["image"], "data": [[image]]}}).encode()
    with serve_model(uri, clone, env) as url:
        post = urllib.request.Request(f"{url}/invocations", data=request, headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(post, timeout=60) as answer:
            [prediction] = json.loads(answer.read())["predictions"]
    assert prediction["error"] == "" and prediction["predicted"] == table["predicted"].iloc[0]
    assert prediction["p_COVID"] == pytest.approx(table["p_COVID"].iloc[0], abs=1e-5)
    assert prediction["decision"] == table["decision"].iloc[0] and prediction["release"] == table["release"].iloc[0]


def test_a_params_error_removes_nothing_and_a_lone_stage_says_how_to_restore(clone):
    """README "When something fails": a bad param stops `dvc repro` at check_params with every earlier
    output in place; `dvc repro -s` of one stage (no check first) fails after DVC removed its outputs,
    and the one-line error's `dvc checkout` brings them back."""
    lock = yaml.safe_load((clone / "dvc.lock").read_text())
    before = output_bytes(clone, lock, tuple(lock["stages"]))
    original = (clone / "params.yaml").read_text()
    params = yaml.safe_load(original)
    params["train"]["epochs"] = -5
    stage = f"train@{params['backbones'][0]}"  # dvc.lock may keep entries of backbones no longer listed
    try:
        (clone / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
        failed = subprocess.run(
            ["dvc", "repro"], cwd=clone, env=user_env(), capture_output=True, text=True, timeout=600
        )
        assert failed.returncode != 0
        assert "error: params.yaml: train.epochs: -5 is out of range; it must be >= 1" in failed.stderr, failed.stderr
        assert "failed to reproduce 'check_params'" in failed.stderr
        assert output_bytes(clone, lock, tuple(lock["stages"])) == before
        alone = subprocess.run(
            ["dvc", "repro", "-s", stage], cwd=clone, env=user_env(), capture_output=True, text=True, timeout=600
        )
        assert alone.returncode != 0
        [line] = [line for line in alone.stderr.splitlines() if line.startswith("error: ")]
        assert line.endswith(
            f"DVC removed this stage's earlier outputs before running it: restore them with `dvc checkout {stage}`"
        ), line
        assert not (clone / "models" / stage.split("@")[1]).exists()
    finally:
        (clone / "params.yaml").write_text(original)
    sh(clone, "dvc", "checkout", stage)
    assert output_bytes(clone, lock, tuple(lock["stages"])) == before
    assert "Data and pipelines are up to date" in sh(clone, "dvc", "status")


def test_a_team_shares_one_tracking_server_and_one_dvc_remote(clone, tmp_path_factory):
    """README "Working as a team": an MLflow server on PostgreSQL that stores and proxies artifacts
    records two experiments run two at a time; a DVC remote carries data, models and reports to a
    second clone, which has nothing to reproduce and predicts with the team registry's champion."""
    from mlflow.tracking import MlflowClient

    from cxr.serve.local import postgresql, tracking_server

    scratch = tmp_path_factory.mktemp("team")
    with postgresql() as database, tracking_server(database, scratch / "artifacts") as url:
        team = {"MLFLOW_TRACKING_URI": url}
        # Different bootstrap seeds too: a one-epoch fine-tune may keep the base's weights for both rates,
        # and DVC's run-cache would then rightly restore the second experiment's evaluation.
        queued = {
            "team-a": ["-S", "finetune.learning_rate=0.0002", "-S", "evaluate.bootstrap_seed=1"],
            "team-b": ["-S", "finetune.learning_rate=0.0003", "-S", "evaluate.bootstrap_seed=2"],
        }
        # The workspace holds an earlier experiment's results: commit them, or a queued copy (which
        # starts from HEAD) lacks the metrics files DVC does not cache and reruns their stages.
        sh(clone, "git", "add", "-A")
        sh(clone, "git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "results so far")
        run_queued(clone, queued, env=team)
        client = MlflowClient(tracking_uri=url)
        runs = mlflow_runs(clone, url)
        # From a workspace that an earlier experiment changed, DVC may rerun a stage or two before the
        # fine-tune (outputs it does not cache): every run is still recorded, under its experiment.
        check_experiment_runs(clone, client, runs, queued, only_finetune_onwards=False)
        assert runs["artifact_uri"].str.startswith("mlflow-artifacts:/").all()
        versions = client.search_model_versions("name = 'cxr-multiclass' and tags.model = 'finetuned'")
        assert len(versions) == 2 and {version.run_id for version in versions} == set(
            runs.loc[runs["tags.mlflow.runName"] == "finetune", "run_id"]
        )
        assert list((scratch / "artifacts").rglob("model.keras")), "the server stores the models it proxies"

        sh(clone, "dvc", "remote", "add", "-d", "team", str(scratch / "remote"))
        sh(clone, "git", "add", "-A")
        sh(clone, "git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "results and the team remote")
        sh(clone, "dvc", "push")
        second = scratch / "second"
        sh(scratch, "git", "clone", "-q", str(clone), str(second))
        sh(second, "dvc", "pull")
        assert "Data and pipelines are up to date" in sh(second, "dvc", "status")
        test = pd.read_csv(second / "data/processed/split.csv").query("split == 'test'").head(2)
        # The team server registered what it trained: the two fine-tunes (the backbones came from the DVC
        # cache, trained elsewhere). Predict with the latest of them, from the team registry.
        latest = str(max(int(version.version) for version in versions))
        uri = f"models:/cxr-multiclass/{latest}"
        printed = sh(second, "cxr-predict", *test["path"], "--model", uri, "--output", "predictions.csv", env=team)
        assert "2 file(s), 2 predicted" in printed
        table = pd.read_csv(second / "predictions.csv", keep_default_na=False)
        assert set(table["model_version"].astype(str)) == {latest}
