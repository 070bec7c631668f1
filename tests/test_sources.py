"""Each source's layout parsing, on archives generated exactly like the upstream ones."""

import hashlib
import subprocess
import zipfile
from pathlib import Path

import pandas as pd
import pytest

from cxr.sources import FetchError, SourceLayoutError, covid_chestxray, download_source, kermany, read_source, synthetic
from conftest import make_config


def test_covid_collection_drops_ct_volumes_and_keeps_rows_with_images(raw_root, config):
    table = read_source("covid_chestxray", raw_root / "covid_chestxray", config)
    metadata = pd.read_csv(raw_root / "covid_chestxray" / "metadata.csv", dtype=str)
    volumes = metadata[metadata["folder"] == "volumes"]
    assert len(table.images) == (metadata["folder"] == "images").sum()
    assert len(volumes) > 0 and {row["reason"].split()[0] for row in table.dropped} == {"folder=volumes"}
    assert table.images["patient_id"].str.startswith("covid_chestxray:").all()
    assert set(table.images["view"]) >= {"PA", "AP", "L"}
    assert all(Path(path).is_file() for path in table.images["path"])
    assert list(table.metadata.columns) == synthetic.COVID_METADATA_COLUMNS


def test_covid_archive_layout_matches_github(tmp_path, config):
    commit = config.sources.covid_chestxray.commit
    archive = synthetic.write_covid_chestxray_archive(tmp_path / "c.zip", config.synthetic, commit)
    names = zipfile.ZipFile(archive).namelist()
    top = f"covid-chestxray-dataset-{commit}/"
    assert all(name.startswith(top) for name in names)
    assert f"{top}metadata.csv" in names
    assert any(name.startswith(f"{top}volumes/") for name in names)


def test_kermany_skips_duplicate_tree_and_macos_forks(raw_root, config):
    commit_free = zipfile.ZipFile(
        synthetic.write_kermany_archive(raw_root.parent / "k.zip", config.synthetic)).namelist()
    images_in_zip = [name for name in commit_free if name.endswith(".jpeg")]
    assert any(name.startswith("chest_xray/chest_xray/") for name in images_in_zip)
    assert any(name.startswith("__MACOSX/") and "/._" in name for name in commit_free)

    table = read_source("kermany", raw_root / "kermany", config)
    primary = [name for name in images_in_zip if not name.startswith(("chest_xray/chest_xray/", "__MACOSX/"))]
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


def test_kermany_file_not_following_naming_is_named(tmp_path, raw_root):
    root = tmp_path / "kermany"
    (root / "chest_xray" / "train" / "PNEUMONIA").mkdir(parents=True)
    (root / "chest_xray" / "train" / "PNEUMONIA" / "scan_007.jpeg").write_bytes(b"")
    with pytest.raises(SourceLayoutError, match=r"scan_007.jpeg: file name does not follow the PNEUMONIA naming"):
        kermany.read(root)


def test_metadata_missing_a_column_is_named(tmp_path, raw_root, config):
    root = tmp_path / "covid"
    root.mkdir()
    metadata = pd.read_csv(raw_root / "covid_chestxray" / "metadata.csv", dtype=str)
    metadata.drop(columns=["finding"]).to_csv(root / "metadata.csv", index=False)
    with pytest.raises(SourceLayoutError, match=r"metadata.csv: missing column\(s\) \['finding'\]"):
        covid_chestxray.read(root, config.sources.covid_chestxray)


def test_rows_without_image_error_or_are_dropped_and_listed(tmp_path):
    config = make_config({"synthetic": {"missing_files": 3}})
    download_source("covid_chestxray", config, tmp_path)
    with pytest.raises(SourceLayoutError, match=r"3 row\(s\) name images absent from the archive \(line \d+: images/"):
        read_source("covid_chestxray", tmp_path / "covid_chestxray", config)
    dropping = make_config({"synthetic": {"missing_files": 3}, "sources": {"covid_chestxray": {"missing_files": "drop"}}})
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
    first = synthetic.write_kermany_archive(tmp_path / "1.zip", config.synthetic)
    second = synthetic.write_kermany_archive(tmp_path / "2.zip", config.synthetic)
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
    archive = synthetic.write_kermany_archive(tmp_path / "mirror" / "chest-xray-pneumonia.zip", config.synthetic)
    digest = hashlib.sha256(archive.read_bytes()).hexdigest()
    mirror = make_config({"sources": {"origin": "upstream",
                                      "kermany": {"method": "url", "url": archive.as_uri(), "sha256": digest}}})
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
