"""Merging, the finding -> label map, image checks, and the view filter."""

import shutil

import pandas as pd
import pytest
from conftest import make_config

from cxr.core.schema import CATALOG_COLUMNS, SchemaError
from cxr.core.sections import Filter
from cxr.data import catalog
from cxr.data.catalog import CatalogError
from cxr.data.expectations import catalog_expectations
from cxr.data.image_files import ImageFileError
from cxr.data.sources import SourceTable
from cxr.data.validation import DataValidationError, Table, validate


@pytest.fixture(scope="module")
def merged(raw_root):
    return catalog.build(make_config(), raw_root)


def test_catalog_schema_and_labels(merged):
    table, report = merged
    assert tuple(table.columns[: len(CATALOG_COLUMNS)]) == CATALOG_COLUMNS
    assert table["image_id"].is_unique
    finding_label = dict(zip(table["finding"], table["label"]))
    assert finding_label["COVID-19"] == "COVID" and finding_label["bacteria"] == "BACTERIA"
    assert finding_label["virus"] == "VIRAL" and finding_label["NORMAL"] == "NORMAL"
    assert (table["width"] > 0).all() and set(table["mode"]) >= {"L", "RGB"}
    assert report["images"] == len(table)
    assert report["images_per_source_label"]["kermany"]["COVID"] == 0
    nulls = report["metadata_nulls"]["covid_chestxray"]
    assert nulls["nulls"]["intubated"] == nulls["rows"] > nulls["nulls"]["survival"]


def test_map_findings_covers_the_study_map():
    labels = make_config().labels
    frame = pd.DataFrame(
        {"image_id": ["a", "b", "c", "d"], "finding": ["COVID-19, ARDS", "SARS", "Pneumocystis", "No Finding"]}
    )
    assert catalog.map_findings(frame, labels).tolist() == ["COVID", "VIRAL", "FUNGAL", "NORMAL"]


def test_unmapped_finding_names_it_and_its_rows():
    frame = pd.DataFrame({"image_id": ["x/1", "x/2", "x/3"], "finding": ["COVID-19", "MERS", "MERS"]})
    with pytest.raises(CatalogError, match=r"'MERS' \(2 image\(s\), e.g. \['x/2', 'x/3'\]\)"):
        catalog.map_findings(frame, make_config().labels)


def test_corrupt_image_names_the_file(tmp_path, raw_root):
    root = tmp_path / "raw"
    shutil.copytree(raw_root, root)
    victim = next((root / "kermany" / "chest_xray").rglob("*.jpeg"))
    victim.write_bytes(victim.read_bytes()[:200])
    with pytest.raises(ImageFileError, match=f"{victim.name}: cannot be decoded as an image"):
        catalog.build(make_config(), root)


def test_exact_duplicates_are_reported(tmp_path, raw_root):
    root = tmp_path / "raw"
    shutil.copytree(raw_root, root)
    normal = sorted((root / "kermany" / "chest_xray").glob("*/NORMAL/*.jpeg"))
    shutil.copy(normal[0], normal[0].with_name("IM-9999-0001.jpeg"))
    table, report = catalog.build(make_config(), root)
    [group] = [
        group for group in report["duplicate_groups"] if any("IM-9999-0001" in image for image in group["images"])
    ]
    assert len(group["images"]) == 2 and group["pairs"][0]["phash_256"] == 0
    copy = table.set_index("image_id").loc[[image for image in group["images"] if "IM-9999" in image][0]]
    assert copy["duplicate_group"] == group["group"] == min(group["images"])
    # The generated archive carries byte-identical files of its own, as the real set does.
    assert len(report["duplicate_groups"]) > 1 and report["duplicates"]["groups"] == len(report["duplicate_groups"])


def test_catalog_expectations_catch_bad_rows(tmp_path, merged):
    table = merged[0].copy()
    table.loc[0, "image_id"] = table.loc[1, "image_id"]
    table.loc[2, "label"] = "MYSTERY"
    with pytest.raises(DataValidationError) as error:
        validate(
            "merge",
            [
                Table(
                    "catalog",
                    table,
                    catalog_expectations(
                        ["COVID", "VIRAL", "BACTERIA", "NORMAL", "FUNGAL", "ARDS"], ["covid_chestxray", "kermany"]
                    ),
                )
            ],
            tmp_path / "merge.json",
        )
    message = str(error.value)
    assert "2 data expectation(s) failed" in message
    assert "image ids are unique [image_id]: 2 unexpected" in message
    assert "label is known [label]: 1 unexpected value(s), e.g. ['MYSTERY']" in message
    assert '"success": false' in (tmp_path / "merge.json").read_text()


def test_filter_keeps_views_and_reports_each_rule(merged):
    table = merged[0]
    kept, report = catalog.filter_views(table, Filter(views=["PA"], modalities=["X-ray"], missing_view="keep"))
    covid = kept[kept["source"] == "covid_chestxray"]
    assert set(covid["view"]) == {"PA"}
    assert (kept["source"] == "kermany").sum() == (table["source"] == "kermany").sum()
    dropped = report["dropped_by_rule"]
    assert report["images_in"] - report["images_kept"] == sum(dropped.values())
    assert dropped["modality not in filter.modalities"] == (table["modality"] == "CT").sum()

    strict, strict_report = catalog.filter_views(table, Filter(views=["PA"], modalities=[], missing_view="drop"))
    assert strict["view"].notna().all()
    assert strict_report["dropped_by_rule"]["no view recorded (filter.missing_view=drop)"] == table["view"].isna().sum()

    everything, _ = catalog.filter_views(table, Filter(views=[], modalities=[], missing_view="keep"))
    assert len(everything) == len(table)


def test_a_source_whose_rows_miss_a_column_is_a_one_line_error(monkeypatch, raw_root):
    read = catalog.read_source

    def without_view(name, root, config):
        table = read(name, root, config)
        return SourceTable(table.images.drop(columns=["view"]), table.metadata, table.dropped)

    monkeypatch.setattr(catalog, "read_source", without_view)
    with pytest.raises(
        SchemaError,
        match=r"source 'covid_chestxray' \(its reader's rows\): missing column\(s\) "
        r"\['view'\]; expected \['image_id', 'source'",
    ):
        catalog.build(make_config(), raw_root)
