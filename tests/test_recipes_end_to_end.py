"""The README's recipes end to end on the demo data, in their own clone: under ``make test`` (xdist,
one file per worker at a time) they run beside test_pipeline's shared workspace."""

import json

import pandas as pd
import pytest
import yaml
from conftest import SMALL, project_clone, sh

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def clone(tmp_path_factory):
    """A fresh clone of the project at test size, nothing reproduced yet."""
    return project_clone(tmp_path_factory.mktemp("recipes"))


TINY = [
    "--set",
    "train.epochs=1",
    "--set",
    "train.image_size=75",
    "--set",
    "finetune.epochs=1",
    "--set",
    "evaluate.bootstrap_resamples=50",
]


ONE_BACKBONE = ["--set", "backbones=[vgg16]", "--set", "backbone=vgg16"]

# The cross-source matrix's experiments run data -> train@vgg16 -> cross_source only.
MATRIX_SETTINGS = ["--set", "train.epochs=4", "--set", "train.image_size=64"]


@pytest.mark.parametrize(
    ("recipe", "modalities", "classes"),
    [
        ("ct_scans", {"CT"}, {"COVID", "OTHER"}),
        ("larger_dataset", {"X-ray"}, {"BACTERIA", "COVID", "NORMAL", "VIRAL"}),
    ],
)
def test_further_investigation_recipes_run_offline(clone, recipe, modalities, classes):
    """The study's open questions 2 and 3 end to end on the demo data (one backbone, to keep the
    suite's time; the recipes themselves train every backbone)."""
    # larger_dataset's demo block doubles the shipped demo's patients; here, the suite's smaller set's.
    larger = ["--set", "synthetic.patients.covid_chestxray=80", "--set", "synthetic.patients.kermany=28"]
    output = sh(
        clone,
        "cxr-recipe",
        recipe,
        "--settings",
        "demo",
        *TINY,
        *ONE_BACKBONE,
        *(larger if recipe == "larger_dataset" else []),
    )
    assert "dvc exp run" in output
    split = pd.read_csv(clone / "data/processed/split.csv")
    assert set(split["modality"]) == modalities
    assert split.groupby("patient_id")["split"].nunique().max() == 1, "a patient in two splits"
    report = json.loads((clone / "reports/data/split.json").read_text())
    assert set(split["class"]) == classes and set(report["images_per_class"]["test"]) == classes
    assert report["task"] == ("binary" if recipe == "ct_scans" else "multiclass") and set(
        json.loads((clone / "reports/eval/metrics.json").read_text())
    ) == {"vgg16", "finetuned"}
    card = (clone / "reports/model_card.md").read_text()
    print(recipe, {name: counts for name, counts in report["images_per_class"].items()})
    if recipe == "ct_scans":
        assert set(split["source"]) == {"covid_chestxray"} and set(split["view"]) <= {"Axial", "Coronal"}
        assert split["patient_id"].value_counts().max() > 1  # series of several slices, kept together
        assert (
            "External test source: none (no image of the external sources ['actualmed'] passes the filter"
            in (clone / "reports/eval/audit.md").read_text()
        )
        assert "slices chosen for publication in case reports" in card and "no external test" in card
    else:
        assert set(split["source"]) == {"covid_chestxray", "kermany"}
        assert split["finding"].str.startswith("Pneumonia/").any(), "the later commit's findings"
        assert (
            split.loc[split["source"] == "kermany", "patient_id"].nunique()
            > 3 * SMALL["synthetic"]["patients"]["kermany"]
        )
        assert "slices chosen for publication" not in card  # X-rays only


@pytest.mark.parametrize("recipe", ["nasnet_no_augmentation", "main_comparison", "first_try", "binary_finetune"])
def test_a_queued_recipe_is_validated_and_queued(clone, recipe):
    """Queued, not run, to keep the suite's time: main_comparison is the four-backbone pipeline that
    test_pipeline's shared repro runs; NASNetLarge stages are the slowest of the suite; first_try's
    path (the COVID collection alone, binary) is the one ct_scans runs, and binary_finetune's (binary,
    fine-tuned) the one ct_scans and test_repro's fine-tunes run. Queuing still validates the params."""
    output = sh(clone, "cxr-recipe", recipe, "--settings", "demo", "--queue", *TINY)
    assert "Queued experiment" in output
    assert "Queued" in sh(clone, "dvc", "queue", "status")
    sh(clone, "dvc", "queue", "remove", "--all")


def test_same_site_recipe_runs_offline(clone):
    """DeGrave's same-site baseline: the Actualmed stand-in alone, COVID vs NORMAL, split by patient,
    the study's two sources held out and scored by cross_source (one backbone, as above)."""
    sh(clone, "cxr-recipe", "same_site", "--settings", "demo", *TINY, *ONE_BACKBONE)
    split = pd.read_csv(clone / "data/processed/split.csv")
    assert set(split["source"]) == {"actualmed"} and set(split["class"]) == {"COVID", "NORMAL"}
    assert split.groupby("patient_id")["split"].nunique().max() == 1, "a patient in two splits"
    external = pd.read_csv(clone / "data/processed/external.csv")
    assert set(external["source"]) == {"covid_chestxray", "kermany"} and set(external["class"]) <= {"COVID", "NORMAL"}
    row = json.loads((clone / "reports/eval/cross_source.json").read_text())
    assert row["trained_on"] == ["actualmed"] and set(row["tests"]) == {"test", "covid_chestxray", "kermany"}
    assert row["tests"]["test"]["images"] == (split["split"] == "test").sum()
    assert row["tests"]["kermany"]["sensitivity"] is None, "the Kermany stand-in holds no COVID-19"
    assert row["tests"]["kermany"]["images"] == (external["source"] == "kermany").sum()
    card = (clone / "reports/model_card.md").read_text()
    assert (
        "One source (actualmed): every class comes from the same site" in card and "`cxr-recipe cross_source`" in card
    )


def test_the_matrix_report_shows_the_shortcut_off_the_diagonal_only_when_sources_differ(clone):
    """Two one-row matrices (the study's mixed sources, two seeds, one backbone) on the demo data, its
    sources drawn differently (synthetic.source_shift) or alike: the held-out Actualmed column drops
    with the shift and not without; the report comes from DVC's finished experiments and goes to MLflow."""
    from mlflow.tracking import MlflowClient

    from cxr.report import cross_source

    book = yaml.safe_load((clone / "recipes.yaml").read_text())
    for name, shift in (("xs_shift", True), ("xs_alike", False)):
        book["recipes"][name] = {
            "task": "covid_normal",
            "synthetic.source_shift": shift,
            "matrix": {"train": [["covid_chestxray", "kermany"]], "seeds": 2},
        }
    (clone / "recipes.yaml").write_text(yaml.safe_dump(book, sort_keys=False))
    sh(clone, "git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "two matrices", "recipes.yaml")
    drops = {}
    for name in ("xs_shift", "xs_alike"):
        sh(clone, "cxr-recipe", name, "--settings", "demo", *MATRIX_SETTINGS, *ONE_BACKBONE)
        output = sh(clone, "cxr-recipe", name, "--settings", "demo", "--report")
        print(output)
        table = pd.read_csv(clone / f"reports/matrix/{name}.csv")
        accuracy = table[table["statistic"] == "accuracy"].set_index("test")
        assert set(accuracy.index) == {"test", "actualmed"} and (accuracy["seeds"] == 2).all()
        drops[name] = {
            statistic: cross_source.drops(table, statistic)["covid_chestxray+kermany"]["actualmed"]
            for statistic in ("accuracy", "sensitivity")
        }
        client = MlflowClient(f"sqlite:///{clone / 'mlflow.db'}")
        experiment = client.get_experiment_by_name("cxr-covid_normal").experiment_id
        runs = client.search_runs([experiment], filter_string=f"attributes.run_name = 'matrix:{name}'")
        held_out = runs[0].data.metrics["covid_chestxray-kermany.actualmed.accuracy_mean"]
        assert len(runs) == 1 and held_out == pytest.approx(accuracy.loc["actualmed", "mean"])
        children = client.search_runs([experiment], filter_string=f"tags.mlflow.parentRunId = '{runs[0].info.run_id}'")
        assert len(children) == 2, "the two experiments' pipeline runs nest under the matrix run"
    # Asking for a third seed skips the two experiments already run and queues the third; the report
    # leaves the queued one out (its stash commit holds the baseline's outputs, not its own).
    more = ["--seeds", "3", "--queue", *MATRIX_SETTINGS, *ONE_BACKBONE]
    queued = sh(clone, "cxr-recipe", "xs_shift", "--settings", "demo", *more)
    assert queued.count("already run, skipped") == 2 and "Queued experiment" in queued
    output = sh(clone, "cxr-recipe", "xs_shift", "--settings", "demo", "--report")
    assert "xs_shift-covid_chestxray+kermany-seed44: queued, not finished" in output
    assert (pd.read_csv(clone / "reports/matrix/xs_shift.csv")["seeds"] == 2).all()
    sh(clone, "dvc", "queue", "remove", "--all")
    print("accuracy drop off the diagonal:", drops)
    # With the shift, the held-out source's accuracy and COVID sensitivity fall below the test split's
    # pooled intervals (the model learned the framing); without it, both stay within them.
    assert all(drops["xs_shift"][statistic]["apart"] for statistic in ("accuracy", "sensitivity"))
    assert not any(drops["xs_alike"][statistic]["apart"] for statistic in ("accuracy", "sensitivity"))
    assert drops["xs_shift"]["sensitivity"]["drop"] > drops["xs_alike"]["sensitivity"]["drop"] + 0.3
