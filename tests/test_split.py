"""Patient-grouped, stratified split: no leakage, determinism, proportions, caps, bad inputs."""

import pandas as pd
import pytest
from conftest import make_config

from cxr.core.sections import Filter
from cxr.data import catalog
from cxr.data.expectations import split_tables
from cxr.data.split import SplitError, group_ids, make_split, source_quotas
from cxr.data.validation import DataValidationError, validate


@pytest.fixture(scope="module")
def filtered(raw_root):
    table, _ = catalog.build(make_config(), raw_root)
    return catalog.filter_views(table, make_config().filter)[0]


def test_no_patient_or_identical_image_in_two_splits(filtered, tmp_path):
    config = make_config()
    split, report = make_split(filtered, config, "catalog_pa.csv")
    assert (split.groupby("patient_id")["split"].nunique() == 1).all()
    both = split[split["patient_id"] == "kermany:person6"]
    assert set(both["label"]) == {"BACTERIA", "VIRAL"} and both["split"].nunique() == 1
    validate(
        "split",
        split_tables(split, config.class_names(), config.split.fractions, config.split.tolerance),
        tmp_path / "split.json",
    )
    assert set(report["images"]) == {"train", "val", "test"}


def test_shares_follow_fractions(filtered):
    split, _ = make_split(filtered, make_config(), "catalog_pa.csv")
    shares = split["split"].value_counts(normalize=True)
    assert shares["train"] == pytest.approx(0.64, abs=0.06)
    assert shares["val"] == pytest.approx(0.16, abs=0.06)
    assert shares["test"] == pytest.approx(0.20, abs=0.06)
    assert (pd.crosstab(split["split"], split["class"]) > 0).all().all()


def test_deterministic_for_a_seed_and_different_for_another(filtered):
    first, _ = make_split(filtered, make_config(), "x")
    again, _ = make_split(filtered, make_config(), "x")
    other, _ = make_split(filtered, make_config({"split": {"seed": 7}}), "x")
    pd.testing.assert_frame_equal(first, again)
    assert (first.set_index("image_id")["split"] != other.set_index("image_id")["split"]).any()


def test_images_of_one_duplicate_group_or_patient_are_grouped():
    frame = pd.DataFrame({"patient_id": ["a", "b", "c", "d", "d"], "duplicate_group": ["1", "2", "1", "3", "4"]})
    groups = group_ids(frame)
    assert groups[0] == groups[2] and groups[3] == groups[4] and len(set(groups)) == 3


def test_per_class_caps(filtered):
    split, report = make_split(filtered, make_config({"split": {"max_per_class": 20}}), "x")
    assert split["class"].value_counts().max() == 20
    capped, _ = make_split(filtered, make_config({"split": {"max_per_class": {"NORMAL": 10}}}), "x")
    counts = capped["class"].value_counts()
    assert counts["NORMAL"] == 10 and counts["BACTERIA"] > 10


def test_binary_task_groups_every_other_label(filtered):
    split, report = make_split(filtered, make_config({"task": "binary"}), "x")
    assert set(split["class"]) == {"COVID", "OTHER"}
    assert set(split.loc[split["class"] == "OTHER", "label"]) >= {"BACTERIA", "NORMAL", "VIRAL"}
    assert report["labels_left_out_by_task"] == {}


def test_class_left_empty_by_the_filter_is_named(raw_root):
    table, _ = catalog.build(make_config(), raw_root)
    no_covid, _ = catalog.filter_views(table, Filter(views=["PA"], modalities=["X-ray"], missing_view="drop"))
    no_covid = no_covid[no_covid["label"] != "COVID"]
    with pytest.raises(
        SplitError, match=r"catalog_pa.csv: class\(es\) \['COVID'.*\] of task 'multiclass' have no images"
    ):
        make_split(no_covid, make_config(), "catalog_pa.csv")


def test_split_validation_reports_leakage(filtered, tmp_path):
    config = make_config()
    split, _ = make_split(filtered, config, "x")
    patient = split.loc[split["split"] == "train", "patient_id"].iloc[0]
    leaked = split.copy()
    leaked.loc[leaked.index[(leaked["patient_id"] == patient)][0], "split"] = "test"
    extra = leaked[leaked["patient_id"] == patient]
    if extra["split"].nunique() == 1:
        row = leaked[leaked["split"] == "train"].iloc[[0]].assign(image_id="dup", split="train", patient_id=patient)
        leaked = pd.concat([leaked, row], ignore_index=True)
    with pytest.raises(DataValidationError, match=r"patients: no patient in two splits \[patient_id\]"):
        validate(
            "split",
            split_tables(leaked, config.class_names(), config.split.fractions, config.split.tolerance),
            tmp_path / "split.json",
        )


@pytest.mark.parametrize(
    ("counts", "limit", "quotas"),
    [
        ({"covid_chestxray": 14, "kermany": 2500}, 200, {"covid_chestxray": 14, "kermany": 186}),
        ({"covid_chestxray": 150, "kermany": 2500}, 200, {"covid_chestxray": 100, "kermany": 100}),
        ({"a": 5, "b": 40, "c": 1000}, 100, {"a": 5, "b": 40, "c": 55}),
        ({"a": 90, "b": 95}, 60, {"a": 30, "b": 30}),
        ({"a": 3}, 2, {"a": 2}),
    ],
)
def test_source_quotas_keep_rare_sources_whole(counts, limit, quotas):
    assert source_quotas(counts, limit) == quotas


def study_shaped_catalog() -> pd.DataFrame:
    """Like the study's PA catalog: the COVID collection's 14 bacterial, 16 viral and 140 COVID
    images (about two per patient) beside Kermany's thousands (one to three per child)."""
    rows = []
    for source, per_class, per_patient in (
        ("covid_chestxray", {"BACTERIA": 14, "VIRAL": 16, "COVID": 140}, 2),
        ("kermany", {"BACTERIA": 2500, "VIRAL": 1300, "NORMAL": 1500}, 3),
    ):
        for label, count in per_class.items():
            for index in range(count):
                patient = f"{source}:{label}{index // per_patient}"
                rows.append(
                    {
                        "image_id": f"{source}/{label}/{index}",
                        "source": source,
                        "patient_id": patient,
                        "sha256": f"{source}{label}{index}",
                        "duplicate_group": f"{source}/{label}/{index}",
                        "label": label,
                        "path": "x",
                    }
                )
    return pd.DataFrame(rows)


def test_cap_keeps_rare_sources_and_reports_split_by_source_and_class():
    config = make_config({"split": {"max_per_class": 200}})
    split, report = make_split(study_shaped_catalog(), config, "catalog_pa.csv")
    counts = pd.crosstab([split["source"]], split["class"])
    assert counts.loc["covid_chestxray", "BACTERIA"] == 14 and counts.loc["kermany", "BACTERIA"] == 186
    assert counts.loc["covid_chestxray", "VIRAL"] == 16 and counts.loc["kermany", "VIRAL"] == 184
    assert counts.loc["covid_chestxray", "COVID"] == 140 and counts.loc["kermany", "NORMAL"] == 200
    by_split = report["images_per_split_source_class"]
    for name in ("BACTERIA", "VIRAL"):  # the rare source reaches the test split, so the probe can be scored
        assert by_split["test"]["covid_chestxray"][name] >= 2 and by_split["test"]["kermany"][name] >= 30
        assert (
            sum(by_split[part]["covid_chestxray"][name] for part in ("train", "val", "test"))
            == counts.loc["covid_chestxray", name]
        )
    assert by_split["test"]["kermany"]["COVID"] == 0  # every class and source listed, zeros too
