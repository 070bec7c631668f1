"""Each source's layout parsing, on archives generated exactly like the upstream ones."""

import dataclasses
import hashlib
import json
import re
import shutil
import subprocess
import zipfile
from pathlib import Path, PurePosixPath

import numpy as np
import pytest
from conftest import make_config, serve_folder

from cxr.data.catalog import build
from cxr.data.sources import (
    MODULES,
    FetchError,
    SourceLayoutError,
    actualmed,
    covid_chestxray,
    download_source,
    kermany,
    params_of,
    read_source,
)


def test_covid_collection_drops_ct_volumes_and_keeps_rows_with_images(raw_root, config):
    table = read_source("covid_chestxray", raw_root / "covid_chestxray", config)
    metadata = table.metadata
    volumes = metadata[metadata["folder"] == "volumes"]
    assert len(table.images) == (metadata["folder"] == "images").sum()
    assert len(volumes) > 0 and {row["reason"].split()[0] for row in table.dropped} == {"folder=volumes"}
    assert table.images["patient_id"].str.startswith("covid_chestxray:").all()
    assert set(table.images["view"]) >= {"PA", "AP", "L"}
    assert all(Path(path).is_file() for path in table.images["path"])
    # The upstream header's stray spaces and trailing empty column are gone.
    assert list(table.metadata.columns) == [name.strip() for name in covid_chestxray.METADATA_HEADER if name]


def test_covid_archive_layout_matches_github(tmp_path, config):
    commit = params_of("covid_chestxray", config).commit
    archive = covid_chestxray.synthetic_archive(tmp_path, config.synthetic, params_of("covid_chestxray", config))
    names = zipfile.ZipFile(archive).namelist()
    top = f"covid-chestxray-dataset-{commit}/"
    assert all(name.startswith(top) for name in names)
    assert f"{top}metadata.csv" in names
    assert any(name.startswith(f"{top}volumes/") for name in names)


def test_kermany_skips_duplicate_tree_and_macos_forks(raw_root, config):
    commit_free = zipfile.ZipFile(
        kermany.synthetic_archive(raw_root.parent, config.synthetic, params_of("kermany", config))
    ).namelist()
    images_in_zip = [name for name in commit_free if name.endswith(".jpeg")]
    assert any(name.startswith("chest_xray/chest_xray/") for name in images_in_zip)
    assert any(name.startswith("chest_xray/__MACOSX/") and "/._" in name for name in commit_free)
    assert "chest_xray/train/.DS_Store" in commit_free

    table = read_source("kermany", raw_root / "kermany", config)
    primary = [
        name for name in images_in_zip if not name.startswith(("chest_xray/chest_xray/", "chest_xray/__MACOSX/"))
    ]
    assert len(table.images) == len(primary)
    assert table.images["image_id"].is_unique
    assert not (raw_root / "kermany" / "chest_xray" / "chest_xray").exists()
    assert not list((raw_root / "kermany").rglob("._*"))


def test_kermany_patients_and_findings(raw_root, config):
    images = read_source("kermany", raw_root / "kermany", config).images
    rows = images.set_index(images["path"].map(lambda path: Path(path).name))
    person = rows.loc[rows.index.str.startswith("person6_")]
    assert set(person["finding"]) == {"bacteria", "virus"}
    assert set(person["patient_id"]) == {"kermany:person6"}
    normal = rows.loc[rows.index.str.startswith("NORMAL2-IM-")].iloc[0]
    assert normal["finding"] == "NORMAL"
    assert normal["patient_id"] == "kermany:" + "-".join(normal.name.split("-")[:3])
    assert images["view"].isna().all() and (images["modality"] == "X-ray").all()


@pytest.mark.parametrize(
    ("folder", "filename", "patient", "finding"),
    [
        ("PNEUMONIA", "person12_bacteria_47.jpeg", "person12", "bacteria"),
        ("PNEUMONIA", "person3_virus_16.jpeg", "person3", "virus"),
        ("PNEUMONIA", "person447_virus_921_1.jpeg", "person447", "virus"),
        ("PNEUMONIA", "person1068_bacteria_3002.JPEG", "person1068", "bacteria"),
        ("PNEUMONIA", "BACTERIA-213622-0001.jpeg", "213622", "bacteria"),
        ("PNEUMONIA", "VIRUS-3637528-0002.jpeg", "3637528", "virus"),
        ("NORMAL", "IM-0115-0001.jpeg", "IM-0115", "NORMAL"),
        ("NORMAL", "IM-0608-0001-0001.jpeg", "IM-0608", "NORMAL"),
        ("NORMAL", "NORMAL2-IM-0927-0001.jpeg", "NORMAL2-IM-0927", "NORMAL"),
        ("NORMAL", "NORMAL2-IM-0374-0001-0002.jpg", "NORMAL2-IM-0374", "NORMAL"),
        ("NORMAL", "NORMAL-28501-0001.jpeg", "28501", "NORMAL"),
    ],
)
def test_kermany_reads_every_published_naming(folder, filename, patient, finding):
    assert kermany.parse_name(folder, filename) == (patient, finding)


@pytest.mark.parametrize(
    ("folder", "filename"),
    [
        ("PNEUMONIA", "scan_007.jpeg"),
        ("PNEUMONIA", "person12_fungus_3.jpeg"),
        ("PNEUMONIA", "IM-0115-0001.jpeg"),
        ("NORMAL", "person1_bacteria_1.jpeg"),
        ("NORMAL", "IM-0115-0001.png"),
        ("NORMAL", "IM-0115.jpeg"),
    ],
)
def test_kermany_names_that_fit_no_naming_are_refused(folder, filename):
    assert kermany.parse_name(folder, filename) is None


def kermany_tree(root: Path, bad: int) -> Path:
    """Two good images and ``bad`` badly named ones in a Kermany layout."""
    for folder, name in (("NORMAL", "IM-0001-0001.jpeg"), ("PNEUMONIA", "person1_virus_1.jpeg")):
        (root / "chest_xray" / "train" / folder).mkdir(parents=True, exist_ok=True)
        (root / "chest_xray" / "train" / folder / name).write_bytes(b"")
    for index in range(bad):
        (root / "chest_xray" / "train" / "PNEUMONIA" / f"scan_{index:03d}.jpeg").write_bytes(b"")
    return root


def test_kermany_unknown_names_are_all_counted_in_one_error(tmp_path, config):
    root = kermany_tree(tmp_path / "kermany", bad=12)
    with pytest.raises(SourceLayoutError) as error:
        kermany.read(root, params_of("kermany", config))
    message = str(error.value)
    assert "12 file name(s) follow none of the Kermany namings" in message
    assert "chest_xray/train/PNEUMONIA/scan_009.jpeg, ..." in message and "scan_010" not in message
    assert "sources.kermany.unknown_names=drop" in message


def test_kermany_unknown_names_dropped_and_listed_with_the_param(tmp_path):
    root = kermany_tree(tmp_path / "kermany", bad=12)
    params = params_of("kermany", make_config({"sources": {"kermany": {"unknown_names": "drop"}}}))
    table = kermany.read(root, params)
    assert sorted(table.images["patient_id"]) == ["kermany:IM-0001", "kermany:person1"]
    assert [row["file"] for row in table.dropped] == [
        f"chest_xray/train/PNEUMONIA/scan_{i:03d}.jpeg" for i in range(12)
    ]
    assert all("follows no Kermany naming" in row["reason"] for row in table.dropped)


def test_kermany_mendeley_v3_archive_layout_is_read():
    assert kermany.select_member(
        PurePosixPath("CellData/chest_xray/train/NORMAL/NORMAL-28501-0001.jpeg")
    ) == PurePosixPath("chest_xray/train/NORMAL/NORMAL-28501-0001.jpeg")
    assert kermany.select_member(PurePosixPath("CellData/OCT/train/CNV/CNV-1016042-1.jpeg")) is None
    assert kermany.select_member(PurePosixPath("chest_xray/__MACOSX/chest_xray/train/NORMAL/._IM-1-1.jpeg")) is None
    assert kermany.select_member(PurePosixPath("chest_xray/chest_xray/train/NORMAL/IM-0001-0001.jpeg")) is None


def test_generated_archives_carry_the_upstream_quirks(raw_root, config):
    kermany_names = {path.name for path in (raw_root / "kermany" / "chest_xray").glob("*/*/*")}
    assert any(re.fullmatch(r"person\d+_(bacteria|virus)_\d+_\d+\.jpeg", name) for name in kermany_names)
    assert any(re.fullmatch(r"(NORMAL2-)?IM-\d+-\d+-\d+\.jpeg", name) for name in kermany_names)
    assert any(name.startswith("NORMAL2-IM-") for name in kermany_names)
    raw_metadata = (raw_root / "covid_chestxray" / "metadata.csv").read_bytes()
    assert raw_metadata.splitlines()[0].endswith(b"clinical notes,other notes,")
    assert b"\xe0" in raw_metadata  # not UTF-8
    assert re.search(rb"\.(jpe?g|png) ,", raw_metadata)  # a filename with a trailing space
    catalog, report = build(config, raw_root)
    assert set(catalog["mode"]) >= {"L", "RGB", "RGBA", "P", "I;16"}
    assert 6 in set(catalog["orientation"])
    assert catalog["width"].max() >= 2000
    assert report["duplicate_groups"]
    names = catalog.loc[catalog["source"] == "covid_chestxray", "path"].map(lambda path: Path(path).name)
    assert (
        names.str.contains(r"\..*\.").any() and names.str.endswith(".png").any() and names.str.endswith(".jpeg").any()
    )


def test_metadata_missing_a_column_is_named(tmp_path, raw_root, config):
    root = tmp_path / "covid"
    root.mkdir()
    metadata = read_source("covid_chestxray", raw_root / "covid_chestxray", config).metadata
    metadata.drop(columns=["finding"]).to_csv(root / "metadata.csv", index=False)
    with pytest.raises(SourceLayoutError, match=r"metadata.csv: missing column\(s\) \['finding'\]"):
        covid_chestxray.read(root, params_of("covid_chestxray", config))


def test_rows_without_image_error_or_are_dropped_and_listed(tmp_path):
    config = make_config({"synthetic": {"missing_files": 3}})
    download_source("covid_chestxray", config, tmp_path)
    with pytest.raises(SourceLayoutError, match=r"3 row\(s\) name images absent from the archive \(line \d+: images/"):
        read_source("covid_chestxray", tmp_path / "covid_chestxray", config)
    dropping = make_config(
        {"synthetic": {"missing_files": 3}, "sources": {"covid_chestxray": {"missing_files": "drop"}}}
    )
    table = read_source("covid_chestxray", tmp_path / "covid_chestxray", dropping)
    absent = [row for row in table.dropped if "absent" in row["reason"]]
    assert len(absent) == 3 and all(row["file"].startswith("images/") for row in absent)


def test_download_writes_verifiable_manifest_and_provenance(raw_root):
    folder = raw_root / "kermany"
    checked = subprocess.run(["sha256sum", "--quiet", "-c", "MANIFEST.sha256"], cwd=folder, capture_output=True)
    assert checked.returncode == 0, checked.stdout
    provenance = (folder / "SOURCE.json").read_text()
    assert '"url": "synthetic:chest-xray-pneumonia.zip"' in provenance


def test_synthetic_archives_are_reproducible(tmp_path, config):
    first = kermany.synthetic_archive(tmp_path / "1", config.synthetic, params_of("kermany", config))
    second = kermany.synthetic_archive(tmp_path / "2", config.synthetic, params_of("kermany", config))
    assert hashlib.sha256(first.read_bytes()).digest() == hashlib.sha256(second.read_bytes()).digest()


def test_pinned_manifest_mismatch_keeps_earlier_data(tmp_path, raw_root):
    good = make_config()
    download_source("kermany", good, tmp_path)
    before = (tmp_path / "kermany" / "MANIFEST.sha256").read_text()
    pinned = make_config({"sources": {"kermany": {"manifest_sha256": "f" * 64}}})
    with pytest.raises(FetchError, match="extracted files differ from the pinned content"):
        download_source("kermany", pinned, tmp_path)
    assert (tmp_path / "kermany" / "MANIFEST.sha256").read_text() == before
    assert sorted(path.name for path in tmp_path.iterdir()) == ["kermany"]


def test_kermany_from_a_mirror_url(tmp_path, config):
    archive = kermany.synthetic_archive(tmp_path / "mirror", config.synthetic, params_of("kermany", config))
    digest = hashlib.sha256(archive.read_bytes()).hexdigest()
    mirror = make_config(
        {"sources": {"origin": "upstream", "kermany": {"method": "url", "url": archive.as_uri(), "sha256": digest}}}
    )
    folder = download_source("kermany", mirror, tmp_path / "raw")
    assert len(read_source("kermany", folder, mirror).images) > 0
    assert archive.as_uri() in (folder / "SOURCE.json").read_text()


def test_kaggle_without_credentials_says_how(tmp_path, monkeypatch):
    monkeypatch.delenv("KAGGLE_USERNAME", raising=False)
    monkeypatch.delenv("KAGGLE_KEY", raising=False)
    monkeypatch.setenv("KAGGLE_CONFIG_DIR", str(tmp_path))
    config = make_config({"sources": {"origin": "upstream"}})
    with pytest.raises(FetchError, match="no Kaggle credentials .* sources.kermany.method=url"):
        download_source("kermany", config, tmp_path / "raw")
    assert not (tmp_path / "raw" / "kermany").exists()


@pytest.mark.parametrize("scheme", ["http", "file"])
def test_github_sources_from_a_mirror_url(tmp_path, config, scheme):
    mirror = tmp_path / "mirror"
    commits = {name: params_of(name, config).commit for name in ("covid_chestxray", "actualmed")}
    mirror.mkdir()
    for module, archive in ((covid_chestxray, "covid.zip"), (actualmed, "actualmed.zip")):
        module.synthetic_archive(tmp_path, config.synthetic, params_of(module.NAME, config)).rename(mirror / archive)
    with serve_folder(mirror) as base:
        root = base if scheme == "http" else mirror.as_uri()
        upstream = make_config(
            {
                "sources": {
                    "origin": "upstream",
                    "covid_chestxray": {"url": f"{root}/covid.zip"},
                    "actualmed": {"url": f"{root}/actualmed.zip"},
                }
            }
        )
        for name, archive in (("covid_chestxray", "covid.zip"), ("actualmed", "actualmed.zip")):
            folder = download_source(name, upstream, tmp_path / "raw")
            provenance = json.loads((folder / "SOURCE.json").read_text())
            assert provenance["url"] == f"{root}/{archive}" and provenance["commit"] == commits[name]
            assert provenance["origin"] == "upstream"
            assert len(read_source(name, folder, upstream).images) > 0


def test_github_source_defaults_to_the_commit_zip(config):
    assert params_of("covid_chestxray", config).archive_url == (
        "https://github.com/ieee8023/covid-chestxray-dataset/archive/a64215bea3982e9f0d3a10c2b316d357d7fa7ed2.zip"
    )
    mirrored = make_config({"sources": {"actualmed": {"url": "file:///mirror/actualmed.zip"}}})
    assert params_of("actualmed", mirrored).archive_url == "file:///mirror/actualmed.zip"


def test_later_commits_findings_are_paths_mapped_by_their_last_part(tmp_path):
    """The larger_dataset recipe's COVID collection: `Pneumonia/Viral/COVID-19`, `Pneumonia/Viral/Herpes `
    (trailing space), `todo`; the label map covers them, and findings mapped to null are left out."""
    config = make_config(
        {
            "synthetic": {"patients": {"covid_chestxray": 160}},
            "sources": {"use": ["covid_chestxray"], "covid_chestxray": {"synthetic": {"findings": "hierarchical"}}},
        }
    )
    download_source("covid_chestxray", config, tmp_path)
    table = read_source("covid_chestxray", tmp_path / "covid_chestxray", config)
    assert table.images["finding"].str.startswith("Pneumonia/Viral/COVID-19").any()
    catalog, report = build(config, tmp_path)
    labels = dict(zip(catalog["finding"], catalog["label"]))
    assert (
        labels["Pneumonia/Viral/COVID-19"] == "COVID"
        and labels["Pneumonia/Bacterial/Staphylococcus/MRSA"] == "BACTERIA"
    )
    assert labels["Tuberculosis"] == "TUBERCULOSIS" and labels["Pneumonia/Viral/Herpes"] == "VIRAL"
    assert {"todo", "Pneumonia"} <= set(report["left_out_by_labels"]) and not {"todo", "Pneumonia"} & set(
        catalog["finding"]
    )
    assert sum(report["left_out_by_labels"].values()) + len(catalog) == len(table.images)


def test_ct_series_are_ct_slices_of_one_patient_each(tmp_path):
    config = make_config({"sources": {"use": ["covid_chestxray"], "covid_chestxray": {"synthetic": {"ct_share": 1.0}}}})
    download_source("covid_chestxray", config, tmp_path)
    images = read_source("covid_chestxray", tmp_path / "covid_chestxray", config).images
    ct = images[images["modality"] == "CT"]
    assert (
        set(ct["view"]) == {"Axial", "Coronal"}
        and ct["patient_id"].nunique() == config.synthetic.patients["covid_chestxray"]
    )
    assert ct.groupby("patient_id").size().max() > 1
    from PIL import Image

    with Image.open(ct["path"].iloc[0]) as slice_image:
        pixels = np.asarray(slice_image.convert("L"), dtype=float)
    assert pixels.shape[0] == pixels.shape[1] and pixels[-2:].mean() < 30  # square, air below the table


def test_a_refused_archive_is_named_by_its_url_and_member_not_a_scratch_path(tmp_path, raw_root):
    """A zip-slip member in a mirrored Kermany archive: the error names the URL the user set and the
    member, and the earlier download stays in place."""

    evil = tmp_path / "mirror" / "chest-xray.zip"
    evil.parent.mkdir()
    with zipfile.ZipFile(evil, "w") as archive:
        archive.writestr("chest_xray/train/NORMAL/IM-0001-0001.jpeg", b"x")
        archive.writestr("../escape.jpeg", b"pwned")
    earlier = tmp_path / "raw" / "kermany"
    shutil.copytree(raw_root / "kermany", earlier)
    before = sorted(path.relative_to(earlier) for path in earlier.rglob("*"))
    mirror = make_config({"sources": {"origin": "upstream", "kermany": {"method": "url", "url": evil.as_uri()}}})
    with pytest.raises(FetchError) as error:
        download_source("kermany", mirror, tmp_path / "raw")
    assert str(error.value) == (
        f"{evil.as_uri()}: unsafe member path '../escape.jpeg' (absolute or '..'); refusing to extract"
    )
    assert sorted(path.relative_to(earlier) for path in earlier.rglob("*")) == before


@pytest.mark.parametrize("name", sorted(MODULES))
def test_each_source_module_satisfies_the_written_interface(name):
    import inspect

    from cxr.data.sources.layout import SourceModule

    module = MODULES[name]
    assert isinstance(module, SourceModule) and module.NAME == name
    assert dataclasses.is_dataclass(module.Params)
    for function in ("select_member", "check_layout", "upstream_archive", "read", "synthetic_archive"):
        expected = [p for p in inspect.signature(getattr(SourceModule, function)).parameters if p != "self"]
        assert list(inspect.signature(getattr(module, function)).parameters) == expected, (name, function)
