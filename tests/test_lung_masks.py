"""The lung_masks annotation set: V7 Labs' Darwin outlines of the COVID collection, fetched and verified
like a source, read, and joined to the collection's images as masks, on stand-ins generated like the
upstream archives (the COVID stand-in's lungs are known exactly: the generator drew them)."""

import hashlib
import json
import zipfile
from pathlib import Path, PurePosixPath

import numpy as np
import pandas as pd
import pytest
from conftest import make_config, serve_folder
from PIL import Image, ImageOps

from cxr.core.config import ConfigError
from cxr.data.sources import (
    FetchError,
    SourceLayoutError,
    covid_chestxray,
    download_source,
    lung_masks,
    params_of,
    read_source,
)


@pytest.fixture(scope="module")
def config():
    return make_config()


@pytest.fixture(scope="module")
def mirror(tmp_path_factory, config) -> Path:
    """The lung outlines' stand-in, a GitHub commit zip, in a folder to serve."""
    folder = tmp_path_factory.mktemp("mirror")
    annotated = params_of("covid_chestxray", config)
    return lung_masks.synthetic_archive(folder, config.synthetic, params_of("lung_masks", config), annotated=annotated)


@pytest.fixture(scope="module")
def fetched(tmp_path_factory, mirror) -> tuple[Path, str]:
    """The stand-in fetched over HTTP as the pinned upstream would be (a mirror URL): (folder, URL)."""
    with serve_folder(mirror.parent) as base:
        url = f"{base}/{mirror.name}"
        upstream = make_config({"sources": {"origin": "upstream", "lung_masks": {"url": url}}})
        return download_source("lung_masks", upstream, tmp_path_factory.mktemp("raw")), url


@pytest.fixture(scope="module")
def covid_rows(tmp_path_factory, config) -> pd.DataFrame:
    """The COVID stand-in's images with their upright size, as the catalog has them."""
    root = tmp_path_factory.mktemp("covid")
    rows = read_source("covid_chestxray", download_source("covid_chestxray", config, root), config).images
    sizes = []
    for path in rows["path"]:
        with Image.open(path) as image:
            sizes.append(ImageOps.exif_transpose(image).size)
    return rows.assign(width=[size[0] for size in sizes], height=[size[1] for size in sizes])


@pytest.fixture(scope="module")
def drawn(config) -> dict:
    """The lungs the generator drew, by X-ray file name."""
    drawings = covid_chestxray.drawings(config.synthetic, params_of("covid_chestxray", config))
    return {row["filename"]: lungs for row, _, lungs in drawings if lungs is not None}


@pytest.fixture(scope="module")
def joined(tmp_path_factory, fetched, covid_rows) -> tuple[pd.DataFrame, dict, Path]:
    out = tmp_path_factory.mktemp("joined")
    index, report = lung_masks.join(covid_rows, lung_masks.read_outlines(fetched[0]), "covid_chestxray", out)
    return index, report, out


def darwin_documents(folder: Path) -> dict[str, dict]:
    with zipfile.ZipFile(folder / "covid-only.zip") as archive:
        return {name: json.loads(archive.read(name)) for name in archive.namelist()}


def test_the_stand_in_is_laid_out_as_upstream_and_only_the_covid_outlines_are_kept(mirror, fetched, config):
    commit = params_of("lung_masks", config).commit
    top = f"covid-19-xray-dataset-{commit}/"
    names = zipfile.ZipFile(mirror).namelist()
    assert mirror.name == f"covid-19-xray-dataset-{commit}.zip" and all(name.startswith(top) for name in names)
    assert {f"{top}annotations/covid-only.zip", f"{top}annotations/covid-only-coco.zip", f"{top}README.md"} <= set(
        names
    )
    assert sum(name.startswith(f"{top}annotations/all-images-semantic-masks/") for name in names) == 2

    folder, url = fetched
    assert sorted(path.name for path in folder.iterdir()) == ["MANIFEST.sha256", "SOURCE.json", "covid-only.zip"]
    provenance = json.loads((folder / "SOURCE.json").read_text())
    assert provenance["url"] == url and provenance["origin"] == "upstream" and provenance["commit"] == commit
    assert lung_masks.select_member(PurePosixPath(f"{top}annotations/covid-only.zip")) == PurePosixPath(
        "covid-only.zip"
    )
    for skipped in ("annotations/covid-only-coco.zip", "__MACOSX/annotations/._covid-only.zip", "covid-only.zip"):
        assert lung_masks.select_member(PurePosixPath(top + skipped)) is None


def test_a_pinned_manifest_that_differs_fails_and_keeps_nothing(tmp_path, mirror):
    pinned = make_config(
        {"sources": {"origin": "upstream", "lung_masks": {"url": mirror.as_uri(), "manifest_sha256": "0" * 64}}}
    )
    with pytest.raises(FetchError, match="extracted files differ from the pinned content"):
        download_source("lung_masks", pinned, tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_outlines_are_read_with_and_without_lungs(fetched, drawn):
    documents = darwin_documents(fetched[0])
    outlines = lung_masks.read_outlines(fetched[0])
    with_lungs = {
        doc["image"]["original_filename"]
        for doc in documents.values()
        if any(annotation["name"] == "Lung" for annotation in doc["annotations"])
    }
    assert set(outlines.outlines) == with_lungs and len(with_lungs) > 20
    assert set(outlines.without_lungs) == {doc["image"]["original_filename"] for doc in documents.values()} - with_lungs
    assert len(outlines.without_lungs) >= 2
    assert len(with_lungs - set(drawn)) == 2  # annotated images the pinned collection does not hold
    complex_lungs = [
        name
        for name, doc in documents.items()
        if any(annotation["name"] == "Lung" and "complex_polygon" in annotation for annotation in doc["annotations"])
    ]
    assert len(complex_lungs) == 1
    outline = outlines.outlines[documents[complex_lungs[0]]["image"]["original_filename"]]
    assert outline.darwin_id == PurePosixPath(complex_lungs[0]).stem and len(outline.lungs) == 1
    assert [len(path) for path in outline.lungs[0]] == [96, 96]


def test_every_annotated_xray_gets_the_mask_of_the_lungs_the_generator_drew(joined, covid_rows, drawn, fetched):
    index, report, out = joined
    outlines = lung_masks.read_outlines(fetched[0])
    rows = covid_rows.assign(name=covid_rows["path"].map(lambda path: PurePosixPath(path).name))
    annotated = rows[rows["name"].isin(set(outlines.outlines))]
    assert list(index["image_id"]) == sorted(annotated["image_id"])
    assert list(index.columns) == ["image_id", "mask", "lung_share", "rescaled"]
    assert list(index["mask"]) == [f"masks/{k:05d}.png" for k in range(len(index))]
    assert sorted(path.name for path in out.iterdir()) == ["masks"]
    names = annotated.set_index("image_id")["name"]
    for entry in index.itertuples():
        with Image.open(out / entry.mask) as picture:
            assert picture.mode == "L" and picture.format == "PNG"
            pixels = np.asarray(picture)
        assert set(np.unique(pixels)) <= {0, 255}
        mask, lungs = pixels == 255, drawn[names[entry.image_id]].mask
        assert mask.shape == lungs.shape
        assert (mask & lungs).sum() / (mask | lungs).sum() >= 0.95, entry.image_id
        assert entry.lung_share == pytest.approx(mask.mean(), abs=1e-6)
    assert index["rescaled"].sum() == 1
    assert report == {
        "outlines": len(outlines.outlines),
        "without_lungs": len(outlines.without_lungs),
        "joined": len(index),
        "rescaled": 1,
        "images_of_source": len(covid_rows),
        "images_without_outline": len(covid_rows) - len(index),
        "outlines_without_image": 2,
        "left_out_other_aspect": [],
        "left_out_outside_image": [],
    }
    assert report["images_without_outline"] > 0


def test_the_same_inputs_give_the_same_bytes(tmp_path, joined, covid_rows, fetched):
    index, _, out = joined
    again, _ = lung_masks.join(
        covid_rows.sample(frac=1, random_state=0), lung_masks.read_outlines(fetched[0]), "covid_chestxray", tmp_path
    )
    pd.testing.assert_frame_equal(again, index)

    def digests(folder: Path) -> dict[str, str]:
        return {path.name: hashlib.sha256(path.read_bytes()).hexdigest() for path in (folder / "masks").iterdir()}

    assert digests(tmp_path) == digests(out)


def outline_zip(folder: Path, documents: dict[str, dict]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(folder / "covid-only.zip", "w") as archive:
        for name, document in documents.items():
            archive.writestr(name, document if isinstance(document, str) else json.dumps(document))
    return folder


LUNG = {"name": "Lung", "polygon": {"path": [{"x": 1, "y": 1}, {"x": 8, "y": 1}, {"x": 8, "y": 8}]}}


def darwin(filename: str | None, annotations: list[dict] | None = None) -> dict:
    image = {"width": 10, "height": 10, "filename": "1.jpg", **({"original_filename": filename} if filename else {})}
    return {"dataset": "covid-19-xray", "image": image, "annotations": annotations or [LUNG]}


@pytest.mark.parametrize(
    ("documents", "message"),
    [
        ({"1.json": darwin("a.jpg"), "2.json": darwin(None)}, r"member '2\.json' has no image\.original_filename"),
        ({"1.json": darwin("a.jpg"), "3.json": darwin("a.jpg")}, r"members '1\.json' and '3\.json' both annotate"),
        ({"4.json": {**darwin("b.jpg"), "image": {"original_filename": "b.jpg"}}}, r"'4\.json': image\.width"),
        ({"5.json": darwin("c.jpg", [{"name": "Lung", "polygon": {"path": [{"x": 1}] * 3}}])}, r"'5\.json': a Lung"),
        (
            {"6.json": darwin("d.jpg", [{"name": "Lung", "polygon": {"path": [{"x": "nan", "y": 1}] * 3}}])},
            r"'6\.json': a Lung annotation is malformed \(ValueError: a coordinate is not a finite number\)",
        ),
        ({"7.json": "{not json"}, r"member '7\.json' is not valid JSON"),
    ],
)
def test_a_broken_outline_is_named_by_its_member(tmp_path, documents, message):
    with pytest.raises(SourceLayoutError, match=message):
        lung_masks.read_outlines(outline_zip(tmp_path, documents))


def test_a_member_above_the_bound_is_refused(tmp_path):
    folder = outline_zip(tmp_path, {"1.json": darwin("a.jpg")})
    with zipfile.ZipFile(folder / "covid-only.zip", "a") as archive:
        archive.writestr("2.json", " " * 5_000_001, compress_type=zipfile.ZIP_DEFLATED)
    with pytest.raises(SourceLayoutError, match=r"member '2\.json' is 5000001 bytes, above"):
        lung_masks.read_outlines(folder)


def test_ignore_regions_are_not_lungs_and_outlines_scale_to_the_image(tmp_path):
    left_half = [{"x": 0, "y": 0}, {"x": 5, "y": 0}, {"x": 5, "y": 10}, {"x": 0, "y": 10}]
    marker = [[{"x": 6, "y": 0}, {"x": 10, "y": 0}, {"x": 10, "y": 4}]]
    ignore = {"name": "Ignore", "complex_polygon": {"path": marker}}
    annotations = [{"name": "Lung", "polygon": {"path": left_half}}, ignore]
    folder = outline_zip(tmp_path, {"1.json": darwin("a.jpg", annotations)})
    outline = lung_masks.read_outlines(folder).outlines["a.jpg"]
    mask = lung_masks.rasterise(outline, 10, 10)
    assert mask[:, :5].all() and not mask[:, 5:].any()
    stretched = lung_masks.rasterise(outline, 20, 40)
    assert stretched.shape == (40, 20) and stretched[:, :10].all() and not stretched[:, 10:].any()


@pytest.mark.parametrize("key", ["use", "external"])
def test_an_annotation_set_is_not_an_image_source(key):
    names = ["lung_masks"] if key == "external" else ["covid_chestxray", "lung_masks"]
    with pytest.raises(ConfigError, match=f"sources.{key}: 'lung_masks' is an annotation set, not an image source"):
        make_config({"sources": {key: names}})


def square(low: float, high: float) -> list[dict]:
    return [{"x": low, "y": low}, {"x": high, "y": low}, {"x": high, "y": high}, {"x": low, "y": high}]


def test_a_complex_polygon_s_inner_path_is_a_hole(tmp_path):
    """V7 writes a region with a hole as a complex polygon of its outer and inner contours."""
    ring = {"name": "Lung", "complex_polygon": {"path": [square(0, 10), square(3, 7)]}}
    folder = outline_zip(tmp_path, {"1.json": darwin("a.jpg", [ring])})
    mask = lung_masks.rasterise(lung_masks.read_outlines(folder).outlines["a.jpg"], 10, 10)
    assert mask.sum() == 100 - 16 and not mask[3:7, 3:7].any() and mask[:3].all()


def test_an_outline_of_another_shape_or_outside_the_image_is_left_out_and_listed(tmp_path):
    """An outline drawn on the stored, unturned pixels of an EXIF-rotated image (its width and height
    swapped) would be stretched onto the wrong lungs; one outside the image outlines nothing."""
    turned = {**darwin("turned.jpg"), "image": {"width": 10, "height": 20, "original_filename": "turned.jpg"}}
    outside = darwin("outside.jpg", [{"name": "Lung", "polygon": {"path": square(20, 30)}}])
    folder = outline_zip(tmp_path, {"1.json": turned, "2.json": outside, "3.json": darwin("good.jpg")})
    rows = pd.DataFrame(
        {
            "image_id": [f"covid_chestxray/{name}" for name in ("turned.jpg", "outside.jpg", "good.jpg")],
            "source": "covid_chestxray",
            "path": ["images/turned.jpg", "images/outside.jpg", "images/good.jpg"],
            "width": [20, 10, 20],
            "height": [10, 10, 20],
        }
    )
    index, report = lung_masks.join(rows, lung_masks.read_outlines(folder), "covid_chestxray", tmp_path / "out")
    assert index["image_id"].tolist() == ["covid_chestxray/good.jpg"] and index["rescaled"].tolist() == [True]
    assert report["left_out_other_aspect"] == ["covid_chestxray/turned.jpg"]
    assert report["left_out_outside_image"] == ["covid_chestxray/outside.jpg"]
    assert report["joined"] == 1 and report["images_without_outline"] == 0
    assert sorted(path.name for path in (tmp_path / "out/masks").iterdir()) == ["00000.png"]
