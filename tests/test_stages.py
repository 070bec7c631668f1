"""The data stage scripts on bad inputs: a clear error, exit 1, no output that looks valid."""

import html
import json
import shutil

import numpy as np
import pandas as pd
import pytest
import yaml
from conftest import REPO, params_dict, run_stage, write_params


def outputs(folder):
    return sorted(
        path.relative_to(folder).as_posix()
        for path in folder.rglob("*")
        if path.is_file() and path.parts[len(folder.parts)] in ("reports", "data") and "raw" not in path.parts
    )


def test_data_stages_run_in_order(project):
    for stage in ("merge", "filter_pa", "split"):
        result = run_stage(project, stage)
        assert result.returncode == 0, result.stderr
    split = pd.read_csv(project / "data/processed/split.csv")
    assert list(split.columns[:4]) == ["image_id", "patient_id", "class", "split"]
    assert (project / "reports/validation/split.json").is_file()
    # Each validating stage's Data Docs name every expectation it checked.
    for stage in ("merge", "filter_pa", "split"):
        report = json.loads((project / f"reports/validation/{stage}.json").read_text())
        pages = "".join(page.read_text() for page in (project / "reports/validation" / stage).rglob("*.html"))
        descriptions = {
            item["expectation_config"]["description"]
            for result in report["results"].values()
            for item in result["results"]
        }
        assert descriptions and all(html.escape(text) in pages for text in descriptions), stage
    # Same data, same bytes: GX's random expectation ids and load times never reach a report.
    reports = project / "reports/validation"
    before = {path: path.read_bytes() for path in sorted(reports.rglob("*")) if path.is_file()}
    assert run_stage(project, "merge").returncode == 0
    assert {path: path.read_bytes() for path in sorted(reports.rglob("*")) if path.is_file()} == before


def test_corrupt_image_stops_merge_and_keeps_earlier_catalog(project):
    earlier = project / "data/interim/catalog.csv"
    earlier.parent.mkdir(parents=True)
    earlier.write_text("image_id\nearlier-good-run\n")
    victim = sorted((project / "data/raw/covid_chestxray/images").glob("*.jpg"))[0]
    victim.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    result = run_stage(project, "merge")
    assert result.returncode == 1
    assert f"error: data/raw/covid_chestxray/images/{victim.name}: cannot be decoded" in result.stderr
    assert "Traceback" not in result.stderr
    assert earlier.read_text() == "image_id\nearlier-good-run\n"
    assert outputs(project) == ["data/interim/catalog.csv"]


@pytest.mark.parametrize("kind", ["webp", "tiff", "bomb"])
def test_a_file_training_could_not_read_stops_merge_in_one_line(project, kind):
    """A WebP under a .jpg name (as the COVID collection once shipped), a TIFF under a Kermany .jpeg name,
    a PNG header claiming 65535 x 65535 px: merge stops on the file with one line naming it, and writes nothing."""
    from test_inputs import bomb_header_png, pil_bytes

    from cxr.data.sources.drawing import CHILD, draw_chest

    chest = draw_chest(np.random.default_rng(0), 96, 112, "covid", CHILD)
    folder = {"webp": "data/raw/covid_chestxray/images", "tiff": "data/raw/kermany", "bomb": "data/raw/kermany"}[kind]
    pattern = "*.jpg" if kind == "webp" else "**/*.jpeg"
    victim = sorted((project / folder).glob(pattern))[0]
    victim.write_bytes(
        {"webp": pil_bytes(chest, "WEBP"), "tiff": pil_bytes(chest, "TIFF"), "bomb": bomb_header_png()}[kind]
    )
    result = run_stage(project, "merge")
    assert result.returncode == 1
    [line] = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert line.startswith(f"error: {victim.relative_to(project)}: ")
    assert {"webp": "a WebP file", "tiff": "a TIFF file", "bomb": "over the limit of 67,108,864 pixels"}[kind] in line
    assert "Traceback" not in result.stderr and outputs(project) == []


def test_unmapped_finding_stops_merge(project):
    params = params_dict()
    del params["labels"]["Pneumocystis"]
    (project / "params.yaml").write_text(yaml.safe_dump(params))
    result = run_stage(project, "merge")
    assert result.returncode == 1
    assert "finding(s) not in the `labels` map of params.yaml: 'Pneumocystis' (" in result.stderr
    assert "image(s), e.g. ['covid_chestxray/" in result.stderr
    assert outputs(project) == []


def test_metadata_missing_column_stops_merge(project):
    metadata = project / "data/raw/covid_chestxray/metadata.csv"
    pd.read_csv(metadata, dtype=str, encoding_errors="replace").drop(columns=["view"]).to_csv(metadata, index=False)
    result = run_stage(project, "merge")
    assert result.returncode == 1
    assert "metadata.csv: missing column(s) ['view']" in result.stderr
    assert outputs(project) == []


def test_class_left_empty_by_filter_stops_split(project):
    write_params(project, {"sources": {"use": ["kermany"]}})
    assert run_stage(project, "merge").returncode == 0
    assert run_stage(project, "filter_pa").returncode == 0
    result = run_stage(project, "split")
    assert result.returncode == 1
    assert "class(es) ['COVID'] of task 'multiclass' have no images after filtering" in result.stderr
    assert not (project / "data/processed/split.csv").exists()


def test_label_a_task_leaves_out_is_named_when_a_class_shrinks(project):
    params = params_dict()
    params["labels"]["COVID-19"] = "CORONA"  # a typo'd label: COVID keeps only 'COVID-19, ARDS'
    (project / "params.yaml").write_text(yaml.safe_dump(params))
    for stage in ("merge", "filter_pa"):
        assert run_stage(project, stage).returncode == 0
    result = run_stage(project, "split")
    assert result.returncode == 1
    assert "Labels that no class of task 'multiclass' lists were left out: " in result.stderr
    assert "'CORONA' (" in result.stderr and "Traceback" not in result.stderr
    assert not (project / "data/processed/split.csv").exists()


def test_out_of_range_param_stops_a_stage_naming_the_key(project):
    write_params(project, {"train": {"epochs": -3}})
    result = run_stage(project, "merge")
    assert result.returncode == 1
    assert "train.epochs: -3 is out of range; it must be >= 1" in result.stderr and "Traceback" not in result.stderr


def test_bad_param_stops_a_stage_naming_the_key(project):
    write_params(project, {"filter": {"view": ["PA"]}})
    result = run_stage(project, "merge")
    assert result.returncode == 1
    assert "unknown key 'filter.view'; allowed: ['views', 'modalities', 'missing_view']" in result.stderr


@pytest.mark.parametrize("damage", ["truncate", "zip_slip"])
def test_bad_archive_stops_download_and_keeps_earlier_data(project, tmp_path, damage):
    import zipfile

    from conftest import make_config

    from cxr.data.sources import kermany, params_of

    config = make_config()
    mirror = kermany.synthetic_archive(tmp_path / "mirror", config.synthetic, params_of("kermany", config))
    if damage == "truncate":
        mirror.write_bytes(mirror.read_bytes()[:-5000])
        expected = "not a readable zip archive"
    else:
        with zipfile.ZipFile(mirror, "a") as archive:
            archive.writestr("chest_xray/../../escape.jpeg", b"x")
        expected = "unsafe member path 'chest_xray/../../escape.jpeg'"
    write_params(project, {"sources": {"origin": "upstream", "kermany": {"method": "url", "url": mirror.as_uri()}}})
    before = (project / "data/raw/kermany/MANIFEST.sha256").read_text()
    result = run_stage(project, "download", "kermany")
    assert result.returncode == 1
    assert expected in result.stderr
    assert (project / "data/raw/kermany/MANIFEST.sha256").read_text() == before
    assert sorted(path.name for path in (project / "data/raw").iterdir()) == ["covid_chestxray", "kermany"]
    assert not (project / "escape.jpeg").exists() and not (project / "data/escape.jpeg").exists()
    shutil.rmtree(tmp_path / "mirror")


def test_upstream_path_end_to_end_from_a_local_http_mirror(tmp_path):
    """Not the synthetic branch: every source fetched by URL from a server, as from real mirrors."""
    from conftest import make_config, serve_folder

    from cxr.data.sources import MODULES, params_of

    config = make_config()
    mirror, project = tmp_path / "mirror", tmp_path / "project"
    mirror.mkdir()
    for name, archive in (
        ("covid_chestxray", "covid-chestxray-dataset.zip"),
        ("kermany", "chest-xray-pneumonia.zip"),
        ("actualmed", "Actualmed-COVID-chestxray-dataset.zip"),
    ):
        MODULES[name].synthetic_archive(tmp_path / "generated", config.synthetic, params_of(name, config)).rename(
            mirror / archive
        )
    shutil.copytree(REPO / "stages", project / "stages")
    with serve_folder(mirror) as base:
        write_params(
            project,
            {
                "sources": {
                    "origin": "upstream",
                    "covid_chestxray": {"url": f"{base}/covid-chestxray-dataset.zip"},
                    "kermany": {"method": "url", "url": f"{base}/chest-xray-pneumonia.zip"},
                    "actualmed": {"url": f"{base}/Actualmed-COVID-chestxray-dataset.zip"},
                }
            },
        )
        for source in ("covid_chestxray", "kermany", "actualmed"):
            result = run_stage(project, "download", source)
            assert result.returncode == 0, result.stderr
    for stage in ("merge", "filter_pa", "split", "external"):
        result = run_stage(project, stage)
        assert result.returncode == 0, result.stderr
    for folder in ("raw/covid_chestxray", "raw/kermany", "external/actualmed"):
        provenance = json.loads((project / "data" / folder / "SOURCE.json").read_text())
        assert provenance["origin"] == "upstream" and provenance["url"].startswith(base + "/")
    split = pd.read_csv(project / "data/processed/split.csv")
    assert set(split["class"]) == {"BACTERIA", "COVID", "NORMAL", "VIRAL"}
    assert set(split["source"]) == {"covid_chestxray", "kermany"}
    assert (split.groupby("patient_id")["split"].nunique() == 1).all()
    assert len(pd.read_csv(project / "data/processed/external.csv")) > 0
