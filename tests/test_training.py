"""The train and finetune stages on tiny data: outputs, MLflow runs read back, resume, errors."""

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
from conftest import REPO, free_port, make_config, run_stage, stage_command, stage_env, write_params
from mlflow.tracking import MlflowClient

from cxr.core.errors import CxrError
from cxr.data.sources import download_source
from cxr.learn import checkpoints, runtime, training
from cxr.learn.model_files import load_model
from cxr.serve import register

TINY = {
    "backbones": ["vgg16"],
    "backbone": "vgg16",
    "train": {"image_size": 32, "epochs": 3, "batch_size": 16, "head": {"units": 8}},
    "finetune": {"epochs": 1, "unfreeze": 1},
}


@pytest.fixture(scope="module")
def data_project(tmp_path_factory, raw_root):
    """A project folder whose data stages have run, shared by this module's tests (copied per test)."""
    folder = tmp_path_factory.mktemp("data_project")
    shutil.copytree(REPO / "stages", folder / "stages")
    shutil.copytree(raw_root, folder / "data" / "raw")
    write_params(folder, TINY)
    for stage in ("merge", "filter_pa", "split"):
        assert run_stage(folder, stage).returncode == 0
    return folder


@pytest.fixture
def project(tmp_path, data_project):
    shutil.copytree(data_project, tmp_path / "p")
    return tmp_path / "p"


@pytest.fixture(scope="module")
def trained(tmp_path_factory, data_project):
    """train@vgg16, finetune, external, audit@vgg16 (what the release gate judges), register@vgg16 and
    register_finetuned, run once; MLflow at the default place (sqlite in the project)."""
    folder = tmp_path_factory.mktemp("trained") / "p"
    shutil.copytree(data_project, folder)
    download_source("actualmed", make_config(TINY), folder / "data/external")
    stages = (
        ("train", ["vgg16"]),
        ("finetune", []),
        ("external", []),
        ("audit", ["vgg16"]),
        ("register", ["vgg16"]),
        ("register_finetuned", []),
    )
    # MLflow samples system metrics every 10 s by default: every second, so a short fit has some.
    env = stage_env(MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL="1")
    for stage, args in stages:
        result = run_stage(folder, stage, *args, env=env)
        assert result.returncode == 0, result.stderr[-3000:]
    mlflow.set_tracking_uri(f"sqlite:///{folder / 'mlflow.db'}")
    return folder


def runs_named(client: MlflowClient, name: str):
    experiment = client.get_experiment_by_name("cxr-multiclass")
    return client.search_runs([experiment.experiment_id], filter_string=f"attributes.run_name = '{name}'")


def test_train_stage_writes_model_metrics_and_curves(trained):
    meta = json.loads((trained / "models/vgg16/meta.json").read_text())
    split = pd.read_csv(trained / "data/processed/split.csv").query("split == 'train'")
    assert meta == {
        "format_version": 2,
        "backbone": "vgg16",
        "image_size": 32,
        "classes": ["BACTERIA", "COVID", "NORMAL", "VIRAL"],
        "task": "multiclass",
        "weights": None,
        "views": ["PA"],
        "ages": {
            "min": split["age"].min(),
            "max": split["age"].max(),
            "recorded": int(split["age"].notna().sum()),
            "images": len(split),
        },
        "finetuned_from": None,
        "unfrozen_layers": [],
        "unchanged_from_base": False,
        "input": {"shape": [None, 32, 32, 3], "channels": "RGB", "dtype": "float32", "value_range": [0, 255]},
        "output": {
            "shape": [None, 4],
            "dtype": "float32",
            "kind": "softmax probabilities, sum 1",
            "names": ["BACTERIA", "COVID", "NORMAL", "VIRAL"],
        },
        "cxr_version": "0.1.0",
    }
    report = json.loads((trained / "reports/train/vgg16.json").read_text())
    assert report["epochs"] == 3 and 0 <= report["best_epoch"] <= 3
    assert 0 <= report["best"]["val_accuracy"] <= 1
    history = pd.read_csv(trained / "models/vgg16/history.csv")
    assert history["epoch"].tolist() == [1, 2, 3]
    accuracy = pd.read_csv(trained / "reports/train/curves/accuracy/vgg16.csv")
    assert list(accuracy.columns) == ["epoch", "accuracy", "val_accuracy"]
    assert not (trained / "models/.resume/vgg16").exists()


def test_mlflow_run_has_params_metrics_tags_and_model(trained):
    client = MlflowClient()
    [run] = runs_named(client, "train@vgg16")
    assert run.info.status == "FINISHED"
    assert (run.data.tags["distribute.strategy"], run.data.tags["distribute.replicas"]) == ("none", "1")
    params = run.data.params
    assert params["train.epochs"] == "3" and params["backbone"] == "vgg16" and params["split.seed"] == "42"
    assert params["labels.COVID-19_ ARDS"] == "COVID"
    tags = run.data.tags
    split_md5 = hashlib.md5((trained / "data/processed/split.csv").read_bytes()).hexdigest()
    assert tags["split_md5"] == split_md5
    assert tags["DVC_STAGE"] == "train@vgg16" and tags["backbone"] == "vgg16" and tags["task"] == "multiclass"
    assert tags["data_origin"] == "synthetic" and tags["synthetic"] == "true"
    assert "not a medical result" in tags["mlflow.note.content"]
    assert [metric.step for metric in client.get_metric_history(run.info.run_id, "val_accuracy")] == [1, 2, 3]
    # The learning rate is a setting (a param), not a measurement: no flat metric line at 1e-4.
    assert not client.get_metric_history(run.info.run_id, "learning_rate") and "train.learning_rate" in params
    assert client.get_metric_history(run.info.run_id, "system/cpu_utilization_percentage"), run.data.metrics
    assert {"training_curves.png", "history.json"} <= {item.path for item in client.list_artifacts(run.info.run_id)}
    inputs = {item.tags[0].value: item.dataset for item in run.inputs.dataset_inputs}
    assert sorted(inputs) == ["test", "train", "val"]
    assert {dataset.digest for dataset in inputs.values()} == {split_md5}
    assert inputs["train"].name == "split.csv:train"
    experiment = client.get_experiment_by_name("cxr-multiclass")
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"
    assert "one run per DVC stage execution" in experiment.tags["mlflow.note.content"]

    [version] = client.search_model_versions("name = 'cxr-multiclass' and tags.model = 'vgg16'")
    assert version.run_id == run.info.run_id
    # The registered version takes image files' bytes and answers with a class, calibrated
    # probabilities, the decision at the operating point and the release gate's result.
    model = mlflow.pyfunc.load_model(f"models:/cxr-multiclass/{version.version}")
    # base64 text over HTTP, decoded by cxr (so a null cell is a row error), bytes from Python.
    assert model.metadata.signature.inputs.to_dict() == [{"type": "string", "name": "image", "required": True}]
    paths = pd.read_csv(trained / "data/processed/split.csv")["path"].head(2)
    answer = model.predict(pd.DataFrame({"image": [(trained / path).read_bytes() for path in paths]}))
    classes = ["BACTERIA", "COVID", "NORMAL", "VIRAL"]
    columns = ["predicted", *[f"p_{name}" for name in classes], "decision", "release", "warning", "error"]
    assert list(answer.columns) == columns
    assert set(answer["predicted"]) <= set(classes) and (answer["error"] == "").all()
    assessed = json.loads((trained / "reports/register/vgg16.json").read_text())
    assert set(answer["decision"]) <= {"COVID", "not COVID"}
    gate = assessed["release"]
    said = "passed the release gate" if gate["passed"] else f"FAILED the release gate ({gate['summary'][8:]})"
    assert set(answer["release"]) == {said}
    assert version.tags["release_gate"] == gate["summary"]
    assert model.metadata.metadata["decision"]["temperature"] == assessed["calibration"]["temperature"] > 0
    assert answer[[f"p_{name}" for name in classes]].sum(axis=1).to_numpy() == pytest.approx([1, 1], abs=1e-5)


def test_finetune_is_logged_and_registered_as_the_task_model(trained):
    report = json.loads((trained / "reports/finetune.json").read_text())
    assert report["unfrozen_layers"] == ["block5_conv3"]
    assert json.loads((trained / "models/finetuned/meta.json").read_text())["finetuned_from"] == "vgg16"
    client = MlflowClient()
    [run] = runs_named(client, "finetune")
    assert run.data.tags["DVC_STAGE"] == "finetune"
    [version] = client.search_model_versions("name = 'cxr-multiclass' and tags.model = 'finetuned'")
    assert version.run_id == run.info.run_id
    record = json.loads((trained / "reports/register/finetuned.json").read_text())
    assert {key: record[key] for key in ("model", "model_md5", "registered_model", "requirements")} == {
        "model": "finetuned",
        "model_md5": hashlib.md5((trained / "models/finetuned/model.keras").read_bytes()).hexdigest(),
        "registered_model": "cxr-multiclass",
        "requirements": register.serving_requirements(),
    }
    # Assessed on the validation split before it was registered; judged on its base's audit.
    val_images = int((pd.read_csv(trained / "data/processed/split.csv")["split"] == "val").sum())
    assert record["calibration"]["validation"]["images"] == record["validation"]["images"] == val_images
    assert 0.05 <= record["calibration"]["temperature"] <= 20
    assert record["operating_point"]["rule"] == "target_sensitivity"
    assert [criterion["name"] for criterion in record["release"]["criteria"]] == [
        "lungs_hidden",
        "within_class_probe",
        "external_drop",
    ]
    # The model contract travels with the registered model, with the commit that registered it.
    metadata = mlflow.models.get_model_info(f"models:/cxr-multiclass/{version.version}").metadata
    assert metadata["format_version"] == 2 and metadata["finetuned_from"] == "vgg16"
    assert metadata["input"]["value_range"] == [0, 255]
    assert metadata["output"]["names"] == ["BACTERIA", "COVID", "NORMAL", "VIRAL"]
    assert metadata["git_commit"] == "unknown" or len(metadata["git_commit"]) == 40


def test_stage_nests_under_mlflow_run(project):
    uri = f"sqlite:///{project / 'mlflow.db'}"
    client = MlflowClient(uri)
    experiment = client.create_experiment("outer", artifact_location=(project / "outer").as_uri())
    parent = client.create_run(experiment, run_name="mlflow-run-parent").info.run_id
    result = run_stage(project, "train", "vgg16", env=stage_env(MLFLOW_RUN_ID=parent, MLFLOW_TRACKING_URI=uri))
    assert result.returncode == 0, result.stderr[-2000:]
    children = client.search_runs([experiment], filter_string=f"tags.mlflow.parentRunId = '{parent}'")
    assert [child.info.run_name for child in children] == ["train@vgg16"]
    assert client.get_run(parent).data.params == {}


def test_a_killed_run_resumes_to_the_bytes_of_an_uninterrupted_one(project, tmp_path):
    params = TINY | {
        "train": {"image_size": 32, "epochs": 12, "batch_size": 8, "head": {"units": 8}, "augment": {"enabled": True}}
    }
    write_params(project, params)
    uninterrupted = tmp_path / "uninterrupted"
    shutil.copytree(project, uninterrupted)
    process = subprocess.Popen(
        stage_command(project, "train", "vgg16"),
        cwd=project,
        env=stage_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    history = project / "models/.resume/vgg16/history.csv"
    deadline = time.time() + 300
    while time.time() < deadline and not (history.exists() and len(history.read_text().splitlines()) >= 4):
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)  # at any instant of the epoch after the third
    process.wait()
    assert not (project / "models/vgg16").exists()
    assert not (project / "reports/train/vgg16.json").exists()
    done = json.loads((project / "models/.resume/vgg16/state.json").read_text())["epoch"]
    assert 3 <= done < 12

    client = MlflowClient(f"sqlite:///{project / 'mlflow.db'}")
    [killed] = runs_named(client, "train@vgg16")
    assert killed.info.status == "RUNNING"  # SIGKILL cannot be caught: the next run closes it

    resumed = run_stage(project, "train", "vgg16")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    first_epoch = next(line for line in resumed.stdout.splitlines() if line.startswith("Epoch "))
    assert first_epoch.startswith(f"Epoch {done + 1}/12")
    [announced] = [line for line in resumed.stdout.splitlines() if line.startswith("resuming ")]
    assert announced.startswith(
        f"resuming at epoch {done + 1} of 12 from the checkpoint "
        f"{Path('models/.resume/vgg16/state.json')} of epoch {done} "
    ), announced
    assert pd.read_csv(project / "models/vgg16/history.csv")["epoch"].tolist() == list(range(1, 13))
    statuses = {run.info.run_id: run.info.status for run in runs_named(client, "train@vgg16")}
    assert statuses.pop(killed.info.run_id) == "KILLED" and list(statuses.values()) == ["FINISHED"]
    assert client.get_run(killed.info.run_id).data.tags["killed"].startswith(f"process {process.pid} was gone")
    # The resumed run names the killed one and holds the whole metric history, epoch 1 included.
    [finished] = statuses
    assert client.get_run(finished).data.tags["resumed_from_run"] == killed.info.run_id
    assert [point.step for point in client.get_metric_history(finished, "val_loss")] == list(range(1, 13))

    # Exact: the same weights, history and metrics as a run never killed.
    whole = run_stage(uninterrupted, "train", "vgg16")
    assert whole.returncode == 0, whole.stderr[-2000:]
    for name in ("models/vgg16/model.keras", "models/vgg16/history.csv", "reports/train/vgg16.json"):
        assert (project / name).read_bytes() == (uninterrupted / name).read_bytes(), name


def test_sigterm_ends_the_run_as_killed_and_leaves_nothing_half_written(project):
    write_params(
        project,
        TINY
        | {
            "train": {
                "image_size": 32,
                "epochs": 200,
                "batch_size": 8,
                "head": {"units": 8},
                "augment": {"enabled": True},
            }
        },
    )
    process = subprocess.Popen(
        stage_command(project, "train", "vgg16"),
        cwd=project,
        env=stage_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    history = project / "models/.resume/vgg16/history.csv"
    deadline = time.time() + 300
    while time.time() < deadline and not (history.exists() and len(history.read_text().splitlines()) >= 3):
        time.sleep(0.05)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 128 + signal.SIGTERM, stderr[-2000:]
    [line] = [line for line in stderr.splitlines() if line.startswith("error: ")]
    assert line == "error: stopped by SIGTERM; nothing half-written was left, and its MLflow run ended as KILLED"
    assert "Traceback" not in stderr
    [run] = runs_named(MlflowClient(f"sqlite:///{project / 'mlflow.db'}"), "train@vgg16")
    assert run.info.status == "KILLED"
    assert not (project / "models/vgg16").exists() and not (project / "reports/train/vgg16.json").exists()
    staging = [
        path.name
        for folder in (project / "models", project / "reports")
        for path in folder.rglob(".*")
        if path.name != ".resume" and ".resume" not in path.parts
    ]
    assert staging == []


def _tiny_fit(work_dir: Path, epochs: int, learning_rate: float, patience: int | None):
    import keras
    import tensorflow as tf

    from cxr.learn.images import TrainingBatches

    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [keras.Input((4,)), keras.layers.Dropout(0.5), keras.layers.Dense(2, activation="softmax")]
    )
    rng = np.random.default_rng(0)
    data = tf.data.Dataset.from_tensor_slices((rng.normal(size=(12, 4)).astype("float32"), np.arange(12) % 2))
    return model, training.fit(
        model,
        TrainingBatches(data, 12, 4, seed=0),
        data.batch(4),
        epochs=epochs,
        learning_rate=learning_rate,
        amsgrad=False,
        weights=None,
        patience=patience,
        work_dir=work_dir,
    )


def test_a_fit_that_stopped_early_stays_stopped_when_run_again(tmp_path):
    """Patience counts from the starting weights (epoch 0); the stop is part of the committed state."""
    _, stopped = _tiny_fit(tmp_path / "work", epochs=6, learning_rate=0.0, patience=2)
    assert stopped.history["epoch"].tolist() == [1, 2] and stopped.best["epoch"] == 0
    assert json.loads((tmp_path / "work/state.json").read_text())["stopped"] is True
    _, again = _tiny_fit(tmp_path / "work", epochs=6, learning_rate=0.0, patience=2)
    assert again.history.equals(stopped.history)


def test_a_checkpoint_restores_weights_optimizer_and_dropout_state(tmp_path):
    """Two epochs, then two more from the checkpoint: the same variables as four at once."""
    whole, _ = _tiny_fit(tmp_path / "whole", epochs=4, learning_rate=0.1, patience=None)
    _tiny_fit(tmp_path / "split", epochs=2, learning_rate=0.1, patience=None)
    state = json.loads((tmp_path / "split/state.json").read_text())
    assert state["epoch"] == 2 and (tmp_path / "split" / state["variables"]).is_file()
    resumed, _ = _tiny_fit(tmp_path / "split", epochs=4, learning_rate=0.1, patience=None)
    for one, other in zip(checkpoints._fit_variables(whole), checkpoints._fit_variables(resumed)):
        assert np.array_equal(np.asarray(one), np.asarray(other)), one.path
    assert sorted(path.name for path in (tmp_path / "split").glob("state-*.npz")) == ["state-4.npz"]


def test_changed_params_discard_checkpoints(tmp_path):
    folder = checkpoints.resume_dir(tmp_path / "resume", {"epochs": 3})
    (folder / "best.json").write_text("{}")
    assert (checkpoints.resume_dir(tmp_path / "resume", {"epochs": 3}) / "best.json").exists()
    assert not (checkpoints.resume_dir(tmp_path / "resume", {"epochs": 4}) / "best.json").exists()
    (folder / "best.json").write_text("{}")
    # A fit that must not resume (across workers) starts from nothing under the same key.
    assert not (checkpoints.resume_dir(tmp_path / "resume", {"epochs": 4}, fresh=True) / "best.json").exists()


def test_an_unreachable_tracking_server_stops_train_at_once(project):
    uri = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    started = time.monotonic()
    result = run_stage(project, "train", "vgg16", env=stage_env(MLFLOW_TRACKING_URI=uri))
    assert result.returncode == 1 and time.monotonic() - started < 15
    assert f"error: the MLflow tracking server {uri} (MLFLOW_TRACKING_URI) does not answer" in result.stderr
    assert "Traceback" not in result.stderr and not (project / "models/vgg16").exists()


def test_finetune_without_model_names_the_file(project):
    result = run_stage(project, "finetune")
    assert result.returncode == 1
    assert "models/vgg16/model.keras: not found" in result.stderr
    (project / "models/vgg16").mkdir(parents=True)
    (project / "models/vgg16/model.keras").write_bytes(b"not a keras archive")
    (project / "models/vgg16/meta.json").write_text("{}")
    result = run_stage(project, "finetune")
    assert "models/vgg16/model.keras: cannot be loaded as a Keras model" in result.stderr
    assert not (project / "models/finetuned").exists()


def test_image_too_small_stops_train(project):
    write_params(project, {"backbones": ["xception"], "backbone": "xception", "train": {"image_size": 64}})
    result = run_stage(project, "train", "xception")
    assert result.returncode == 1
    assert "error: params.yaml: train.image_size: xception needs at least 71 px, got 64" in result.stderr


def test_class_weights_are_balanced():
    weights = training.class_weights(np.array([0, 0, 1, 2]), n_classes=4)
    assert weights == pytest.approx({0: 4 / 6, 1: 4 / 3, 2: 4 / 3, 3: 1.0})


MIRRORED = """
from dataclasses import replace
import numpy as np, pandas as pd, tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
from cxr.core import backbones, registry
from cxr.core.config import load
from cxr.core.sections import Head
from cxr.learn.images import TrainingBatches
from cxr.learn.model import build_classifier
from cxr.learn.runtime import configure_runtime
from cxr.learn.training import fit
strategy = configure_runtime(replace(load("{params}").train, distribute="{mode}", deterministic=False), seed=0)
print("replicas", strategy.num_replicas_in_sync)
with strategy.scope():
    model = build_classifier(backbones.get("vgg16"), 32, 2, Head(units=4, dropout=0.5, normalize=False), None)
    x = np.random.default_rng(0).uniform(0, 255, (8, 32, 32, 3)).astype("float32")
    data = tf.data.Dataset.from_tensor_slices((x, np.array([0, 1] * 4)))
    result = fit(model, TrainingBatches(data, 8, 4, seed=0), data.batch(4), epochs=1, learning_rate=1e-3,
                 amsgrad=True, weights=None, patience=None, work_dir=__import__("pathlib").Path("{work}"))
print("epochs", len(result.history))
"""


@pytest.mark.parametrize(("mode", "replicas"), [("mirrored", 2), ("auto", 1)])
def test_distribution_strategy_on_two_logical_cpus(tmp_path, mode, replicas):
    script = (
        MIRRORED.replace("{mode}", mode)
        .replace("{work}", str(tmp_path / "work"))
        .replace("{params}", str(REPO / "params.yaml"))
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=stage_env(), timeout=300
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"replicas {replicas}" in result.stdout and "epochs 1" in result.stdout


@pytest.mark.parametrize(
    ("tf_config", "chief", "task", "workers"),
    [
        ("", True, "", 1),
        ('{"cluster": {"worker": ["a:1", "b:2"]}, "task": {"type": "worker", "index": 0}}', True, "", 2),
        ('{"cluster": {"worker": ["a:1", "b:2"]}, "task": {"type": "worker", "index": 1}}', False, "worker-1", 2),
        (
            '{"cluster": {"chief": ["c:0"], "worker": ["a:1"]}, "task": {"type": "worker", "index": 0}}',
            False,
            "worker-0",
            2,
        ),
        ('{"cluster": {"chief": ["c:0"], "worker": ["a:1"]}, "task": {"type": "chief", "index": 0}}', True, "", 2),
    ],
)
def test_the_chief_is_the_chief_task_else_worker_0(monkeypatch, tf_config, chief, task, workers):
    monkeypatch.setenv("TF_CONFIG", tf_config)
    assert (runtime.is_chief(), runtime.task_name(), runtime.cluster()["workers"]) == (chief, task, workers)
    train = make_config(TINY).train
    assert runtime.multi_worker(train) == (workers > 1)
    assert not runtime.multi_worker(replace(train, distribute="none"))
    # A worker of a cluster writes nothing only when it trains across workers; alone, it writes its outputs.
    assert runtime.worker_task(train) == task
    assert runtime.worker_task(replace(train, distribute="none")) == ""


def test_a_tf_config_that_is_not_json_is_one_line(monkeypatch):
    monkeypatch.setenv("TF_CONFIG", "{cluster: worker}")
    with pytest.raises(CxrError, match=r"^TF_CONFIG: not valid JSON \("):
        runtime.cluster()


@pytest.mark.slow
def test_two_local_workers_train_in_step_and_the_chief_alone_writes(project):
    """TF_CONFIG as a launcher sets it, two workers on 127.0.0.1 running train@vgg16 in one folder:
    MultiWorkerMirroredStrategy, Model.fit, the same best epoch and val_loss on both; one MLflow run."""
    write_params(project, TINY | {"train": TINY["train"] | {"epochs": 2}})
    cluster = {"worker": [f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"]}
    workers = [
        subprocess.Popen(
            stage_command(project, "train", "vgg16"),
            cwd=project,
            env=stage_env(TF_CONFIG=json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}})),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for index in (0, 1)
    ]
    try:
        outputs = [worker.communicate(timeout=600) for worker in workers]
    finally:
        for worker in workers:
            if worker.poll() is None:
                os.kill(worker.pid, signal.SIGKILL)
    assert [worker.returncode for worker in workers] == [0, 0], outputs[0][1][-3000:] + outputs[1][1][-3000:]
    report = json.loads((project / "reports/train/vgg16.json").read_text())
    assert pd.read_csv(project / "models/vgg16/history.csv")["epoch"].tolist() == [1, 2]
    said = "worker-1 trained in step with the chief (2 replicas), which writes the outputs"
    assert f"{said} (best: epoch {report['best_epoch']}, " in outputs[1][0]
    assert f"val_loss {report['best']['val_loss']!r})" in outputs[1][0]
    # A client of this project's store: the module's other tests read the `trained` project's.
    [run] = runs_named(MlflowClient(f"sqlite:///{project / 'mlflow.db'}"), "train@vgg16")
    assert run.info.status == "FINISHED"
    assert run.data.tags["distribute.strategy"] == "MultiWorkerMirroredStrategy"
    assert run.data.tags["distribute.replicas"] == "2"
    assert run.data.metrics["best_val_loss"] == pytest.approx(report["best"]["val_loss"])
    assert not list(project.glob("models/.resume/vgg16*"))


def test_evaluate_stage_reports_and_logs_to_each_training_run(trained):
    result = run_stage(trained, "evaluate", env=stage_env(TF_CPP_MIN_LOG_LEVEL="3"))
    assert result.returncode == 0, result.stderr[-3000:]
    comparison = pd.read_csv(trained / "reports/eval/comparison.csv")
    assert comparison["model"].tolist() == ["vgg16", "finetuned"]
    assert (comparison["accuracy_low"] <= comparison["accuracy"]).all()
    assert (comparison["accuracy"] <= comparison["accuracy_high"]).all()
    markdown = (trained / "reports/eval/comparison.md").read_text()
    assert "| vgg16 | " in markdown and "| finetuned | " in markdown and "not a medical result" in markdown
    metrics = json.loads((trained / "reports/eval/metrics.json").read_text())
    assert set(metrics) == {"vgg16", "finetuned"} and "macro_f1_high" in metrics["vgg16"]
    predictions = pd.read_csv(trained / "reports/eval/models/vgg16/predictions.csv")
    test_rows = pd.read_csv(trained / "data/processed/split.csv").query("split == 'test'")
    assert len(predictions) == len(test_rows)
    assert list(predictions.columns) == [
        "image_id",
        "patient_id",
        "source",
        "actual",
        "predicted",
        "p_BACTERIA",
        "p_COVID",
        "p_NORMAL",
        "p_VIRAL",
    ]
    assert np.allclose(predictions.filter(like="p_").sum(axis=1), 1, atol=1e-4)
    confusion = pd.read_csv(trained / "reports/eval/confusion/vgg16.csv")
    assert list(confusion.columns) == ["actual", "predicted"] and len(confusion) == len(test_rows)
    assert len(pd.read_csv(trained / "reports/eval/mcnemar.csv")) == 1

    client = MlflowClient()
    [train_run] = runs_named(client, "train@vgg16")
    logged = client.get_run(train_run.info.run_id).data.metrics
    assert logged["test_accuracy"] == round(metrics["vgg16"]["accuracy"], 3)  # rounded as headline.json
    artifacts = {item.path for item in client.list_artifacts(train_run.info.run_id, "evaluation")}
    assert {"evaluation/confusion.png", "evaluation/predictions.csv", "evaluation/report.json"} <= artifacts
    [evaluate_run] = runs_named(client, "evaluate")
    # One name per number: each model's test metrics are on its own run (test_*), the headline on the
    # parent (test.<model>.*); the evaluate run holds the comparison, not a third copy.
    assert not evaluate_run.data.metrics, evaluate_run.data.metrics
    # One parent run groups the stages of this pipeline execution and carries the headline numbers.
    [parent] = {run.data.tags["mlflow.parentRunId"] for run in (train_run, evaluate_run)}
    parent = client.get_run(parent)
    assert parent.info.run_name.startswith("workspace@") and parent.data.params["backbone"] == "vgg16"
    assert parent.data.metrics["test.vgg16.accuracy"] == round(metrics["vgg16"]["accuracy"], 3)
    assert parent.data.metrics["test.finetuned.macro_f1_high"] == round(metrics["finetuned"]["macro_f1_high"], 3)
    assert parent.data.metrics["test.vgg16.specificity_COVID"] == round(metrics["vgg16"]["specificity_COVID"], 3)
    # @candidate is the model first on validation; @champion only if it passed the gate; each version
    # carries its test numbers.
    chosen = json.loads((trained / "reports/eval/release.json").read_text())
    assessed = {name: json.loads((trained / f"reports/register/{name}.json").read_text()) for name in chosen["ranking"]}
    assert chosen["ranking"] == sorted(chosen["ranking"], key=lambda name: -assessed[name]["validation"]["macro_f1"])
    candidate = client.get_model_version_by_alias("cxr-multiclass", "candidate")
    assert candidate.tags["model"] == chosen["candidate"] == chosen["ranking"][0]
    passed = [name for name in chosen["ranking"] if assessed[name]["release"]["passed"]]
    assert chosen["champion"] == (passed[0] if passed else None)
    if passed:
        assert client.get_model_version_by_alias("cxr-multiclass", "champion").tags["model"] == passed[0]
    else:
        with pytest.raises(mlflow.exceptions.MlflowException):
            client.get_model_version_by_alias("cxr-multiclass", "champion")
    [finetuned_version] = client.search_model_versions("name = 'cxr-multiclass' and tags.model = 'finetuned'")
    finetuned = metrics["finetuned"]
    assert finetuned_version.tags["test.accuracy"] == (
        f"{finetuned['accuracy']:.2f} [{finetuned['accuracy_low']:.2f}, {finetuned['accuracy_high']:.2f}]"
    )
    [vgg16] = client.search_model_versions("name = 'cxr-multiclass' and tags.model = 'vgg16'")
    assert vgg16.tags["test.macro_f1"].startswith(f"{metrics['vgg16']['macro_f1']:.2f} [")
    assert "ece" in metrics["vgg16"] and "brier_softmax_high" in metrics["vgg16"]
    report = json.loads((trained / "reports/eval/models/vgg16/report.json").read_text())
    assert report["calibration"]["temperature"] == assessed["vgg16"]["calibration"]["temperature"]
    assert (trained / "reports/eval/models/vgg16/reliability.png").stat().st_size > 5_000
    assert list(pd.read_csv(trained / "reports/eval/reliability/vgg16.csv").columns) == [
        "confidence",
        "accuracy",
        "images",
    ]
    assert "## Calibration" in markdown and "## Release" in markdown


def test_evaluate_names_a_model_that_fails_to_load(project):
    (project / "models/vgg16").mkdir(parents=True)
    (project / "models/vgg16/model.keras").write_bytes(b"truncated")
    (project / "models/vgg16/meta.json").write_text("{}")
    result = run_stage(project, "evaluate")
    assert result.returncode == 1
    assert "models/vgg16/model.keras: cannot be loaded as a Keras model" in result.stderr
    assert not (project / "reports/eval/models").exists()


def test_audit_stages_write_metrics_verdict_card_and_mlflow_overlays(trained):
    if not (trained / "reports/eval/models/finetuned/report.json").is_file():
        assert run_stage(trained, "evaluate").returncode == 0
    result = run_stage(trained, "audit_report", env=stage_env(TF_CPP_MIN_LOG_LEVEL="3"))
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((trained / "reports/audit/vgg16.json").read_text())
    assert set(metrics) == {"classifier", "source_probe", "lungs_hidden", "saliency", "external"}
    assert metrics["source_probe"]["within_class_chance"] == 0.5
    assert 0 <= metrics["saliency"]["lung_box_share"] <= 1 and metrics["saliency"]["images"] == 16
    # At 32 px vgg16's last map (block5_conv3) is 2x2 and no candidate reaches 7x7: the finest is read.
    saliency = metrics["saliency"]
    assert (saliency["layer"], saliency["map_side"], saliency["last_map_side"]) == ("block4_conv3", 4, 2)
    external = pd.read_csv(trained / "reports/audit/vgg16/external_predictions.csv")
    assert set(external["actual"]) == {"COVID", "NORMAL"}
    assert external["source"].eq("actualmed").all()
    assert (trained / "reports/audit/vgg16/gradcam.png").stat().st_size > 10_000
    assert not list((trained / "models/.resume").glob("audit-*"))
    audit_md = (trained / "reports/eval/audit.md").read_text()
    assert "| vgg16 | " in audit_md and "**vgg16.**" in audit_md and "not a medical result" in audit_md
    card = (trained / "reports/model_card.md").read_text()
    assert "# Model card: cxr-multiclass" in card and "## Shortcut audit" in card and "sensitivity COVID" in card
    assert "## Release gate" in card and "Calibration: the probabilities are temperature-scaled" in card
    assert "`decision`: `COVID` or `not COVID`" in card

    client = MlflowClient()
    [audit_run] = runs_named(client, "audit@vgg16")
    assert audit_run.data.metrics["source_probe.within_class_chance"] == 0.5
    assert audit_run.data.metrics["saliency.lung_box_share"] == pytest.approx(metrics["saliency"]["lung_box_share"])
    overlays = [item.path for item in client.list_artifacts(audit_run.info.run_id, "gradcam/COVID")]
    assert len(overlays) == 4 and all(path.endswith(".png") for path in overlays)
    inputs = {item.tags[0].value: item.dataset for item in client.get_run(audit_run.info.run_id).inputs.dataset_inputs}
    assert sorted(inputs) == ["external", "test", "train", "val"]
    external_md5 = hashlib.md5((trained / "data/processed/external.csv").read_bytes()).hexdigest()
    assert inputs["external"].digest == external_md5 and inputs["external"].name == "external.csv:external"
    assert client.get_registered_model("cxr-multiclass").description == card
    # The card describes the @candidate (vgg16, or the fine-tune of it): its version, judged on vgg16's audit.
    candidate = json.loads((trained / "reports/eval/release.json").read_text())["candidate"]
    [release] = client.search_model_versions(f"name = 'cxr-multiclass' and tags.model = '{candidate}'")
    assert release.description == card
    assert client.get_model_version_by_alias("cxr-multiclass", "candidate").version == release.version
    [vgg16] = client.search_model_versions("name = 'cxr-multiclass' and tags.model = 'vgg16'")
    assert release.tags["audit.shortcut_evidence"] == vgg16.tags["audit.shortcut_evidence"] != ""
    [report_run] = runs_named(client, "audit_report")
    assert {"audit.md", "model_card.md"} <= {item.path for item in client.list_artifacts(report_run.info.run_id)}


TINY_MODEL_SAVE = """
import sys
from pathlib import Path
import keras, pandas as pd
from cxr.core.spec import ModelSpec
from cxr.learn.model_files import save_model
keras.utils.set_random_seed(0)
inputs = keras.Input((8, 8, 3), name="image")
features = keras.layers.GlobalAveragePooling2D(name="pool")(keras.layers.Conv2D(2, 3, name="conv")(inputs))
model = keras.Model(inputs, keras.layers.Dense(2, name="head")(features), name="tiny")
spec = ModelSpec(backbone="tiny", image_size=8, classes=["A", "B"], task="t", weights=None, views=[], ages=None)
save_model(model, Path(sys.argv[1]), spec, pd.DataFrame({"epoch": [0]}))
"""


def test_the_same_weights_saved_by_two_processes_give_the_same_bytes(tmp_path):
    """No save date, zip time or memory address reaches model.keras (DVC would see a new model).
    Layers are named: Keras' automatic names count the layers a process has built before."""
    exec(compile(TINY_MODEL_SAVE.replace("sys.argv[1]", repr(str(tmp_path / "here"))), "save", "exec"), {})
    subprocess.run(
        [sys.executable, "-c", TINY_MODEL_SAVE, str(tmp_path / "there")],
        check=True,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
        capture_output=True,
    )
    here, there = ((tmp_path / name / "model.keras").read_bytes() for name in ("here", "there"))
    assert here == there
    model, spec = load_model(tmp_path / "there")
    assert spec.classes == ["A", "B"] and model.output_shape == (None, 2)


def gone(pid: int) -> bool:
    """The process has exited (a zombie waiting for a reaper counts as gone)."""
    try:
        return open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[0] in ("Z", "X")
    except FileNotFoundError:
        return True


def test_a_stage_stops_when_the_dvc_process_that_started_it_dies(project):
    """`kill -9` of `dvc repro` must not leave the stage running on as an orphan: a stand-in parent (as
    DVC runs stages: DVC_STAGE set, the command as its child) is killed mid-training."""
    write_params(
        project,
        TINY
        | {
            "train": {
                "image_size": 32,
                "epochs": 200,
                "batch_size": 8,
                "head": {"units": 8},
                "augment": {"enabled": True},
            }
        },
    )
    launcher = (
        "import subprocess, sys; child = subprocess.Popen(sys.argv[1:]); print(child.pid, flush=True); child.wait()"
    )
    parent = subprocess.Popen(
        [sys.executable, "-c", launcher, *stage_command(project, "train", "vgg16")],
        cwd=project,
        env=stage_env(DVC_STAGE="train@vgg16"),
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    child = int(parent.stdout.readline())
    history = project / "models/.resume/vgg16/history.csv"
    deadline = time.time() + 300
    while time.time() < deadline and not (history.exists() and len(history.read_text().splitlines()) >= 3):
        time.sleep(0.05)
    parent.kill()
    parent.wait()
    deadline = time.time() + 60
    while time.time() < deadline and not gone(child):
        time.sleep(0.1)
    assert gone(child), "the stage ran on after its parent died"
    [run] = runs_named(MlflowClient(f"sqlite:///{project / 'mlflow.db'}"), "train@vgg16")
    assert run.info.status == "KILLED" and not (project / "models/vgg16").exists()


def test_a_full_disk_during_evaluate_leaves_the_earlier_report_set_whole(tmp_path, trained):
    """Writes that fail half-way (here: a file-size limit, as a full disk fails them) end evaluate with one
    line naming the file; every report of the earlier run is byte for byte as it was, no staging is left."""
    import resource

    project = tmp_path / "p"
    shutil.copytree(trained, project)
    assert run_stage(project, "evaluate").returncode == 0
    reports = project / "reports" / "eval"

    def digests() -> dict[str, str]:
        return {
            path.relative_to(reports).as_posix(): hashlib.md5(path.read_bytes()).hexdigest()
            for path in sorted(reports.rglob("*"))
            if path.is_file()
        }

    before = digests()
    assert {"headline.json", "metrics.json", "comparison.md", "models/vgg16/roc.png"} <= set(before)
    # Another bootstrap seed: every interval changes, so any report written before the failure would show.
    write_params(project, TINY | {"evaluate": {"bootstrap_resamples": 50, "bootstrap_seed": 1}})

    def small_disk() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (20_000, 20_000))

    full = subprocess.run(
        stage_command(project, "evaluate"),
        cwd=project,
        env=stage_env(),
        capture_output=True,
        text=True,
        timeout=600,
        preexec_fn=small_disk,
    )
    assert full.returncode == 1
    [line] = [line for line in full.stderr.splitlines() if line.startswith("error: ")]
    assert "File too large" in line and "Traceback" not in full.stderr, full.stderr[-2000:]
    assert digests() == before
    assert not list(reports.rglob(".staging-*"))


def test_a_stage_that_finds_the_disk_full_says_so_in_one_line(capsys, monkeypatch):
    import errno

    from cxr.core.stage import run

    def full() -> None:
        raise OSError(errno.ENOSPC, "No space left on device", "reports/eval/metrics.json")

    monkeypatch.setenv("DVC_STAGE", "evaluate")
    with pytest.raises(SystemExit) as exit_:
        run(full)
    assert exit_.value.code == 1
    assert capsys.readouterr().err == (
        "error: reports/eval/metrics.json: No space left on device (free some space, "
        "then rerun); DVC removed this stage's earlier outputs before running it: "
        "restore them with `dvc checkout evaluate`\n"
    )


def test_a_registry_write_refused_for_a_moment_is_retried(tmp_path):
    """Two experiments evaluated at once can collide on the registry: a write the store refuses now
    (here: an alias on a version another process registers a moment later) succeeds on a retry."""
    import threading

    from cxr.core.tracking import retry_write

    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    client.create_registered_model("m")
    later = threading.Timer(1.0, lambda: client.create_model_version("m", source=str(tmp_path)))
    later.start()
    retry_write(client.set_registered_model_alias, "m", "champion", "1")
    later.join()
    assert str(client.get_model_version_by_alias("m", "champion").version) == "1"


# Each process starts a run, waits for the others, then logs the split as its dataset inputs.
LOG_SPLIT_AT_ONCE = """
import sys, time
from pathlib import Path
import mlflow
from cxr.core.tracking import log_split_inputs
url, experiment, split, ready, go = sys.argv[1:]
mlflow.set_tracking_uri(url)
with mlflow.start_run(experiment_id=experiment):
    Path(ready).touch()
    while not Path(go).exists():
        time.sleep(0.01)
    log_split_inputs(Path(split), "d" * 32)
"""


def test_experiments_logging_the_same_split_at_once_on_a_shared_server_all_succeed(tmp_path):
    """`dvc exp run -j 2` on a team server: the experiments' first stages log the same split as their
    runs' dataset inputs at the same moment. MLflow inserts a dataset select-then-insert, so the
    later ones collide on its unique key (PostgreSQL); each retries and finds the row the first wrote."""
    from cxr.serve.local import postgresql, tracking_server

    split = tmp_path / "split.csv"
    pd.DataFrame(
        {
            "image_id": [f"i{n}" for n in range(9)],
            "patient_id": [f"p{n}" for n in range(9)],
            "source": "kermany",
            "class": ["NORMAL", "COVID", "VIRAL"] * 3,
            "split": ["train"] * 3 + ["val"] * 3 + ["test"] * 3,
        }
    ).to_csv(split, index=False)
    go, processes = tmp_path / "go", 6
    with postgresql() as database, tracking_server(database, tmp_path / "artifacts", workers=4) as url:
        client = MlflowClient(url)
        experiment = client.create_experiment("cxr-multiclass")
        started = [
            subprocess.Popen(
                [
                    sys.executable,
                    "-c",
                    LOG_SPLIT_AT_ONCE,
                    url,
                    experiment,
                    str(split),
                    str(tmp_path / f"ready{n}"),
                    str(go),
                ],
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
            for n in range(processes)
        ]
        deadline = time.monotonic() + 180
        while len(list(tmp_path.glob("ready*"))) < processes and time.monotonic() < deadline:
            time.sleep(0.1)
        go.touch()
        printed = [process.communicate(timeout=180)[0] for process in started]
        assert [process.returncode for process in started] == [0] * processes, printed
        runs = client.search_runs([experiment])
        assert len(runs) == processes
        for found in runs:
            inputs = found.inputs.dataset_inputs
            assert sorted(entry.dataset.name for entry in inputs) == [
                "split.csv:test",
                "split.csv:train",
                "split.csv:val",
            ]
            assert {entry.dataset.digest for entry in inputs} == {"d" * 32}


def test_a_retrained_model_of_the_same_bytes_finds_the_version_registered_for_them(tmp_path, monkeypatch):
    """`dvc repro -f` of a training stage gives the same model.keras in a new run, and its register@
    stage (unchanged deps) does not run: evaluate still tags and aliases the version of those bytes."""
    from cxr.core import registry

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    client = MlflowClient()
    experiment = client.create_experiment("cxr-multiclass", artifact_location=(tmp_path / "artifacts").as_uri())
    first, again, other = (client.create_run(experiment).info.run_id for _ in range(3))
    for run_id, md5 in ((first, "a" * 32), (again, "a" * 32), (other, "b" * 32)):
        client.set_tag(run_id, registry.MODEL_MD5_TAG, md5)
    client.create_registered_model("cxr-multiclass")
    version = client.create_model_version("cxr-multiclass", "runs:/x/model", run_id=first).version
    client.set_model_version_tag("cxr-multiclass", version, registry.MODEL_MD5_TAG, "a" * 32)
    assert (
        registry.describe_version("cxr-multiclass", again, tags={"test.accuracy": "0.9"}, alias="champion") == version
    )
    assert client.get_model_version_by_alias("cxr-multiclass", "champion").tags["test.accuracy"] == "0.9"
    assert registry.describe_version("cxr-multiclass", other, tags={}) is None


def test_the_run_of_a_model_file_is_found_in_any_experiment_and_only_when_finished(tmp_path, monkeypatch):
    """Under `mlflow run --experiment-name outer` the training run lives in "outer"; a run of the same
    bytes still RUNNING in another `dvc exp run -j` worker is not the one to reopen."""
    from cxr.core import registry

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    mlflow.set_tracking_uri(uri)
    client = MlflowClient()
    model_file = tmp_path / "model.keras"
    model_file.write_bytes(b"weights")
    md5 = hashlib.md5(b"weights").hexdigest()
    outer = client.create_experiment("outer", artifact_location=(tmp_path / "a").as_uri())
    finished = client.create_run(outer).info.run_id
    client.set_tag(finished, registry.MODEL_MD5_TAG, md5)
    client.set_terminated(finished, "FINISHED")
    assert registry.find_model_run("multiclass", model_file) == finished
    task = client.create_experiment("cxr-multiclass", artifact_location=(tmp_path / "b").as_uri())
    running = client.create_run(task).info.run_id
    client.set_tag(running, registry.MODEL_MD5_TAG, md5)
    assert registry.find_model_run("multiclass", model_file) == finished
    client.set_terminated(running, "FINISHED")
    assert registry.find_model_run("multiclass", model_file) == running  # the task's experiment first


def test_a_re_registration_takes_over_tags_description_and_champion(tmp_path):
    """The same model file registered again (serving code changed): its new version is what @champion
    serves, with the test tags and model card evaluate and audit_report gave the old one."""
    from cxr.core import registry

    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    client = MlflowClient()
    client.create_registered_model("cxr-multiclass")
    old = client.create_model_version("cxr-multiclass", "runs:/x/model", run_id=None).version
    client.set_model_version_tag("cxr-multiclass", old, registry.MODEL_MD5_TAG, "a" * 32)
    client.set_model_version_tag("cxr-multiclass", old, "test.accuracy", "0.95 [0.90, 0.99]")
    client.update_model_version("cxr-multiclass", old, description="the model card")
    client.set_registered_model_alias("cxr-multiclass", "champion", old)
    new = client.create_model_version("cxr-multiclass", "runs:/y/model", run_id=None).version
    assert registry.latest_version_of("cxr-multiclass", "a" * 32) == old
    registry.carry_over("cxr-multiclass", old, new)
    champion = client.get_model_version_by_alias("cxr-multiclass", "champion")
    assert champion.version == new and champion.description == "the model card"
    assert champion.tags["test.accuracy"] == "0.95 [0.90, 0.99]" and champion.tags[registry.MODEL_MD5_TAG] == "a" * 32
