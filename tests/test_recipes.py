"""cxr-recipe: the overrides each recipe makes, checked against params.yaml before anything runs."""

import json
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO

from cxr import recipes


def dry_run(capsys, *arguments: str) -> list[str]:
    recipes.main([*arguments, "--dry-run"])
    return shlex.split(capsys.readouterr().out.strip())


def set_values(line: list[str]) -> dict[str, str]:
    """Each ``-S key=value`` as DVC reads it (Hydra's override parser), strings as they are, other
    values in JSON."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parsed = OverridesParser.create().parse_overrides([item for flag, item in zip(line, line[1:]) if flag == "-S"])
    return {
        override.key_or_group: override.value() if isinstance(override.value(), str) else json.dumps(override.value())
        for override in parsed
    }


def test_ct_scans_takes_the_ct_slices_of_the_covid_collection_alone(capsys, monkeypatch):
    monkeypatch.chdir(REPO)
    study = set_values(dry_run(capsys, "ct_scans"))
    assert study["filter.modalities"] == '["CT"]' and study["sources.use"] == '["covid_chestxray"]'
    assert study["task"] == "binary" and study["filter.views"] == "[]" and study["split.max_per_class"] == "null"
    assert study["sources.origin"] == "upstream" and study["sources.covid_chestxray.synthetic.ct_share"] == "0.08"
    demo = set_values(dry_run(capsys, "ct_scans", "--settings", "demo"))
    assert demo["sources.covid_chestxray.synthetic.ct_share"] == "0.7" and demo["sources.origin"] == "synthetic"


def test_a_recipe_resets_what_other_recipes_change(capsys, monkeypatch):
    """`dvc exp run` starts from the workspace: each recipe sets every key any recipe touches."""
    monkeypatch.chdir(REPO)
    line = dry_run(capsys, "first_try", "--settings", "demo")
    assert line[:3] == ["dvc", "exp", "run"]
    values = set_values(line)
    assert values["filter.modalities"] == "[]" and values["sources.covid_chestxray.synthetic.ct_share"] == "0.08"


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
    assert demo["sources.covid_chestxray.synthetic.findings"] == "hierarchical"


def test_set_values_reach_dvc_as_one_literal_each(tmp_path, capsys, monkeypatch):
    """Mirror URLs with ``?``, ``=``, ``,``, ``[``, quotes, spaces and backslashes go through
    ``dvc exp run --queue`` and come back unchanged from the queued experiment's params; a comma is
    never a sweep (one experiment is queued)."""
    import shutil

    import yaml

    for name in ("params.yaml", "dvc.yaml", "recipes.yaml"):
        shutil.copy(REPO / name, tmp_path / name)
    monkeypatch.chdir(tmp_path)
    run = lambda *command: subprocess.run(command, cwd=tmp_path, check=True, capture_output=True, text=True)  # noqa: E731
    run("git", "init", "-q")
    dvc = str(Path(sys.executable).with_name("dvc"))
    run(dvc, "init", "-q")
    run("git", "-c", "user.name=t", "-c", "user.email=t@t", "add", ".")
    run("git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "base")
    urls = {
        "sources.kermany.url": "https://mirror.example/x.zip?dl=1&token=a=b,c",
        "sources.covid_chestxray.url": "file:///data/it's [v2]/a b\\c\\.zip",
    }
    arguments = [argument for key, value in urls.items() for argument in ("--set", f"{key}={value}")]
    with pytest.raises(SystemExit) as exit_:
        recipes.main(["study", "--settings", "demo", *arguments, "--queue", "--name", "quoted"])
    assert exit_.value.code == 0
    line = shlex.split(capsys.readouterr().out.strip().splitlines()[0])
    assert {key: set_values(line)[key] for key in urls} == urls
    queued = json.loads(run(dvc, "exp", "show", "--json").stdout)
    experiments = [experiment for row in queued for experiment in row.get("experiments") or []]
    assert len(experiments) == 1, experiments
    params = experiments[0]["revs"][0]["data"]["params"]["params.yaml"]["data"]
    assert params["sources"]["kermany"]["url"] == urls["sources.kermany.url"]
    assert params["sources"]["covid_chestxray"]["url"] == urls["sources.covid_chestxray.url"]
    assert yaml.safe_load((tmp_path / "params.yaml").read_text())["sources"]["kermany"]["url"] is None


def test_same_site_trains_on_actualmed_alone_and_holds_out_the_study_sources(capsys, monkeypatch):
    monkeypatch.chdir(REPO)
    values = set_values(dry_run(capsys, "same_site", "--settings", "demo"))
    assert values["sources.use"] == '["actualmed"]' and values["task"] == "covid_normal"
    assert values["sources.external"] == '["covid_chestxray", "kermany"]'


def test_the_matrix_dry_run_lists_one_experiment_per_row_and_seed(capsys, monkeypatch):
    """Rows of recipes.yaml's cross_source block, seeds from params.yaml's seed on, every other source
    held out, each run up to the cross_source stage; --seeds overrides the block's 5."""
    monkeypatch.chdir(REPO)
    recipes.main(["cross_source", "--settings", "demo", "--seeds", "2", "--dry-run"])
    lines = [shlex.split(line) for line in capsys.readouterr().out.strip().splitlines()]
    assert len(lines) == 6 and all(line[-1] == "cross_source" and "--queue" not in line for line in lines)
    named = {line[line.index("-n") + 1]: set_values(line) for line in lines}
    assert sorted(named) == [
        "cross_source-actualmed+covid_chestxray-seed42",
        "cross_source-actualmed+covid_chestxray-seed43",
        "cross_source-actualmed-seed42",
        "cross_source-actualmed-seed43",
        "cross_source-covid_chestxray+kermany-seed42",
        "cross_source-covid_chestxray+kermany-seed43",
    ]
    mixed = named["cross_source-covid_chestxray+kermany-seed43"]
    assert mixed["sources.use"] == '["covid_chestxray", "kermany"]' and mixed["sources.external"] == '["actualmed"]'
    assert mixed["seed"] == "43" and mixed["task"] == "covid_normal" and mixed["backbones"] == '["xception"]'
    assert named["cross_source-actualmed-seed42"]["sources.external"] == '["covid_chestxray", "kermany"]'
    recipes.main(["cross_source", "--settings", "demo", "--dry-run", "--queue"])
    queued = capsys.readouterr().out.strip().splitlines()
    assert len(queued) == 15 and all("--queue" in line for line in queued)
    with pytest.raises(SystemExit):
        recipes.main(["cross_source", "--seeds", "0", "--dry-run"])
    assert "matrix.seeds must be a whole number >= 1" in capsys.readouterr().err
    for wrong in (["first_try", "--seeds", "2"], ["first_try", "--report"], ["cross_source", "--name", "x"]):
        with pytest.raises(SystemExit):
            recipes.main([*wrong, "--dry-run"])
        assert "error: " in capsys.readouterr().err
