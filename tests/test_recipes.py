"""cxr-recipe: the overrides each recipe makes, checked against params.yaml before anything runs."""

import shlex

import pytest

from cxr import recipes
from conftest import REPO


def dry_run(capsys, *arguments: str) -> list[str]:
    recipes.main([*arguments, "--dry-run"])
    return shlex.split(capsys.readouterr().out.strip())


def set_values(line: list[str]) -> dict[str, str]:
    return dict(item.split("=", 1) for flag, item in zip(line, line[1:]) if flag == "-S")


def test_ct_scans_takes_the_ct_slices_of_the_covid_collection_alone(capsys, monkeypatch):
    monkeypatch.chdir(REPO)
    study = set_values(dry_run(capsys, "ct_scans"))
    assert study["filter.modalities"] == '["CT"]' and study["sources.use"] == '["covid_chestxray"]'
    assert study["task"] == "binary" and study["filter.views"] == "[]" and study["split.max_per_class"] == "null"
    assert study["sources.origin"] == "upstream" and study["synthetic.ct_share"] == "0.08"
    demo = set_values(dry_run(capsys, "ct_scans", "--settings", "demo"))
    assert demo["synthetic.ct_share"] == "0.7" and demo["sources.origin"] == "synthetic"


def test_a_recipe_resets_what_other_recipes_change(capsys, monkeypatch):
    """`dvc exp run` starts from the workspace: each recipe sets every key any recipe touches."""
    monkeypatch.chdir(REPO)
    line = dry_run(capsys, "first_try", "--settings", "demo")
    assert line[:3] == ["dvc", "exp", "run"]
    values = set_values(line)
    assert values["filter.modalities"] == "[]" and values["synthetic.ct_share"] == "0.08"


def test_an_unknown_recipe_or_a_bad_override_is_refused(capsys, monkeypatch):
    monkeypatch.chdir(REPO)
    with pytest.raises(SystemExit):
        recipes.main(["ct_scan", "--dry-run"])
    assert "unknown recipe 'ct_scan'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        recipes.main(["ct_scans", "--set", "sources.covid_chestxray.missing_files=skip", "--dry-run"])
    assert "sources.covid_chestxray.missing_files: 'skip' is not allowed" in capsys.readouterr().err


def test_larger_dataset_lifts_the_cap_and_pins_a_later_commit(capsys, monkeypatch):
    monkeypatch.chdir(REPO)
    study = set_values(dry_run(capsys, "larger_dataset"))
    assert study["split.max_per_class"] == "null" and study["train.class_weights"] == "true"
    assert study["sources.covid_chestxray.commit"] == "6a4242344473ccb5ed0d2148d8c7bfb1691e4ed8"
    assert study["synthetic.patients.covid_chestxray"] == "90"  # the demo block applies to --settings demo only
    demo = set_values(dry_run(capsys, "larger_dataset", "--settings", "demo"))
    assert demo["synthetic.patients.covid_chestxray"] == "180" and demo["synthetic.patients.kermany"] == "120"
    assert demo["synthetic.covid_chestxray_findings"] == "hierarchical"
