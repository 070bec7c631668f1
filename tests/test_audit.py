"""The shortcut audit: its statistics on known tables, Grad-CAM on a model whose answer depends
on a known region, the external source, and the probe on data with and without a source shift."""

import shutil
from pathlib import Path

import keras
import numpy as np
import pandas as pd
import pytest
from conftest import make_config

from cxr.core import backbones
from cxr.core.config import ConfigError
from cxr.data import catalog
from cxr.data.sources import SourceLayoutError, download_source, read_source
from cxr.data.split import SplitError, external_test_set, make_split, source_confound
from cxr.learn import lungs, runtime
from cxr.report.audit import findings, gradcam, measures
from cxr.report.audit.hidden import lungs_hidden


def probe_table(rows: list[tuple[str, str, str]]) -> pd.DataFrame:
    """Probe predictions, one patient per image."""
    table = pd.DataFrame(rows, columns=["class", "actual", "predicted"])
    return table.assign(patient_id=[f"p{index}" for index in range(len(table))])


def test_within_class_probe_scores_a_class_only_guess_at_chance():
    # Always answering the class's most common source: right for every "b" image, wrong for every "a".
    guess = probe_table(
        [("X", "a", "b")] * 3
        + [("X", "b", "b")] * 9
        + [("Y", "a", "b")] * 2
        + [("Y", "b", "b")] * 5
        + [("Z", "a", "a")] * 4
    )
    result = measures.within_class_source_accuracy(guess, resamples=50, seed=0)
    assert result["value"] == pytest.approx(0.5) and result["chance"] == 0.5
    assert "Z" not in result["per_class"]  # one source only: no evidence either way
    assert result["smallest_source_images"] == {"X": 3, "Y": 2}


def test_within_class_probe_weights_classes_by_their_evidence():
    perfect = [("X", "a", "a")] * 4 + [("X", "b", "b")] * 4
    wrong_once = [("Y", "a", "b"), ("Y", "b", "a")]
    result = measures.within_class_source_accuracy(probe_table(perfect + wrong_once), resamples=200, seed=0)
    assert {name: score["balanced_accuracy"] for name, score in result["per_class"].items()} == {"X": 1.0, "Y": 0.0}
    assert result["per_class"]["X"]["images"] == {"a": 4, "b": 4}
    assert result["per_class"]["X"]["balanced_accuracy_low"] == 1.0  # every resample is perfect
    assert result["value"] == pytest.approx(4 / 5)


def test_within_class_scores_say_what_they_rest_on():
    table = probe_table(
        [("BACTERIA", "covid_chestxray", "covid_chestxray")] * 3
        + [("BACTERIA", "kermany", "kermany")] * 40
        + [("BACTERIA", "kermany", "covid_chestxray")] * 2
    )
    result = measures.within_class_source_accuracy(table, resamples=300, seed=0)
    bacteria = result["per_class"]["BACTERIA"]
    assert bacteria["balanced_accuracy"] == pytest.approx((1 + 40 / 42) / 2)
    assert bacteria["balanced_accuracy_low"] < bacteria["balanced_accuracy"] <= bacteria["balanced_accuracy_high"]
    text = findings.within_class_text(result["per_class"])
    assert text.startswith("BACTERIA 0.98 [") and text.endswith("on 3 covid_chestxray + 42 kermany images")
    # A score whose smallest source has fewer images than release.min_images is marked, not hidden.
    marked = findings.within_class_text(result["per_class"], min_images=5)
    assert marked.endswith(
        "on 3 covid_chestxray + 42 kermany images (not interpretable: 3 covid_chestxray images, fewer than 5)"
    )
    assert findings.within_class_text(result["per_class"], min_images=3) == text


def test_source_confound_rule_and_baselines():
    frame = pd.DataFrame(
        {
            "split": ["train"] * 6 + ["test"] * 4,
            "source": ["s1", "s1", "s2", "s2", "s2", "s2", "s1", "s2", "s2", "s2"],
            "class": ["C", "C", "N", "N", "B", "N", "C", "N", "B", "B"],
        }
    )
    result = source_confound(frame)
    assert result["source_only_rule"] == {"s1": "C", "s2": "N"}
    assert result["source_only_accuracy"] == pytest.approx(2 / 4)
    assert result["majority_class_accuracy"] == pytest.approx(1 / 4)
    assert result["images_per_source_class"]["s1"] == {"B": 0, "C": 3, "N": 0}


class KeepTopLeft(keras.layers.Layer):
    """Zero every feature outside the top-left quadrant: the model sees only that region."""

    def call(self, features):
        size = features.shape[1]
        mask = np.zeros((1, size, size, 1), np.float32)
        mask[:, : size // 2, : size // 2] = 1.0
        return features * mask


def region_model(size: int, masked: bool, scale: float = 1.0) -> keras.Model:
    """A classifier laid out like build_classifier's whose class-1 score grows with the
    brightness of the top-left quadrant only (or of the whole image when not ``masked``)."""
    base_input = keras.Input((size, size, 3))
    brightness = keras.layers.Conv2D(
        1, 1, use_bias=False, kernel_initializer="ones", activation="relu", name="brightness"
    )(base_input)
    base = keras.Model(base_input, KeepTopLeft()(brightness) if masked else brightness, name="base")
    inputs = keras.Input((size, size, 3))
    scaled = keras.layers.Rescaling(1 / 255, name="preprocess")(inputs)
    features = keras.layers.GlobalAveragePooling2D(name="pool")(base(scaled))
    head = keras.Sequential([keras.Input((1,)), keras.layers.Dense(2, activation="softmax")], name="head")
    head.layers[-1].set_weights([np.array([[-scale, scale]], np.float32), np.zeros(2, np.float32)])
    return keras.Model(inputs, head(features))


def test_gradcam_finds_the_region_the_answer_depends_on():
    size = 16
    batch = np.random.default_rng(0).uniform(0, 255, (3, size, size, 3)).astype(np.float32)
    quadrant = slice(0, size // 2)
    maps = gradcam.gradcam(region_model(size, masked=True), batch, np.array([1, 1, 1]), layer=None)
    assert maps.shape == (3, size, size) and maps.max() == pytest.approx(1.0)
    inside = maps[:, quadrant, quadrant].sum(axis=(1, 2)) / maps.sum(axis=(1, 2))
    assert (inside > 0.9).all()
    # The same model looking at the whole image spreads its saliency: about a quarter in the quadrant.
    spread = gradcam.gradcam(region_model(size, masked=False), batch, np.array([1, 1, 1]), layer="brightness")
    share = spread[:, quadrant, quadrant].sum(axis=(1, 2)) / spread.sum(axis=(1, 2))
    assert np.allclose(share, 0.25, atol=0.08)
    # Class 0's score falls as the region brightens: no positive evidence, an all-zero map.
    assert gradcam.gradcam(region_model(size, masked=True), batch[:1], np.array([0]), layer=None).max() == 0


def test_gradcam_of_a_confident_prediction_is_not_blank():
    """Grad-CAM differentiates the score before the softmax: a prediction at p = 1.0 (the softmax's
    gradient p(1 - p) is 0 in float32) still has its map."""
    size = 16
    batch = np.random.default_rng(0).uniform(128, 255, (2, size, size, 3)).astype(np.float32)
    model = region_model(size, masked=True, scale=1000.0)
    assert (model.predict(batch, verbose=0)[:, 1] == 1.0).all()
    maps = gradcam.gradcam(model, batch, np.array([1, 1]), layer=None)
    assert maps.max() == pytest.approx(1.0)
    quadrant = slice(0, size // 2)
    assert (maps[:, quadrant, quadrant].sum(axis=(1, 2)) / maps.sum(axis=(1, 2)) > 0.9).all()


def test_gradcam_under_mixed_float16_is_not_blank():
    """Under a mixed_float16 policy (what GPU training uses) the maps are computed in float32 from the
    head's scores on: still non-zero, still on the region the answer depends on."""
    size = 16
    batch = np.random.default_rng(1).uniform(0, 255, (2, size, size, 3)).astype(np.float32)
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        model = region_model(size, masked=True, scale=1000.0)
        assert model.get_layer("pool").compute_dtype == "float16"
        maps = gradcam.gradcam(model, batch, np.array([1, 1]), layer=None)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    assert maps.dtype == np.float32 and maps.max() == pytest.approx(1.0)
    quadrant = slice(0, size // 2)
    assert (maps[:, quadrant, quadrant].sum(axis=(1, 2)) / maps.sum(axis=(1, 2)) > 0.9).all()


def test_box_share_of_even_peaked_and_empty_maps():
    even = np.ones((1, 10, 10))
    peaked = np.zeros((1, 10, 10))
    peaked[0, 5, 5] = 1.0
    shares = gradcam.box_share(np.concatenate([even, peaked, np.zeros((1, 10, 10))]), 0.6)
    assert shares[0] == pytest.approx(0.36) and shares[1] == 1.0 and np.isnan(shares[2])
    assert gradcam.even_share(10, 0.6) == pytest.approx(0.36)
    assert gradcam.even_share(96, 0.6) == pytest.approx((58 / 96) ** 2)


@pytest.fixture(scope="module")
def external_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("external")
    download_source("actualmed", make_config(), root)
    return root


def test_actualmed_layout_imagename_and_inconclusive_rows(external_root):
    config = make_config()
    table = read_source("actualmed", external_root / "actualmed", config)
    metadata = pd.read_csv(external_root / "actualmed" / "metadata.csv", dtype=str)
    assert "imagename" in metadata.columns and "filename" not in metadata.columns
    inconclusive = metadata["finding"].isna()
    assert inconclusive.any() and len(table.images) == (~inconclusive).sum()
    assert {row["reason"] for row in table.dropped} == {"finding is empty (inconclusive)"}
    assert set(table.images["finding"]) == {"COVID-19", "No finding"}
    assert set(table.images["view"]) == {"PA", "AP"}
    assert table.images["patient_id"].str.fullmatch(r"actualmed:ANON\d+").all()
    assert all(Path(path).is_file() for path in table.images["path"])
    # DICOM-UID file names with many dots; the repository's sample image is in no metadata row.
    assert table.images["path"].str.fullmatch(r".*/images/(CR|DX)\.1\.2\.840\.[0-9.]+\.png").all()
    assert {"artifacts/distortion", "notes"} <= set(table.metadata.columns)
    assert (external_root / "actualmed" / "images" / "SAMPLE.png").is_file()


def test_actualmed_without_imagename_column_is_named(external_root, tmp_path):
    shutil.copytree(external_root / "actualmed", tmp_path / "actualmed")
    metadata = pd.read_csv(tmp_path / "actualmed" / "metadata.csv", dtype=str)
    metadata.rename(columns={"imagename": "filename"}).to_csv(tmp_path / "actualmed" / "metadata.csv", index=False)
    with pytest.raises(SourceLayoutError, match=r"actualmed/metadata.csv: missing column\(s\) \['imagename'\]"):
        read_source("actualmed", tmp_path / "actualmed", make_config())


def test_external_set_keeps_task_classes_and_drops_copies_of_training_images(external_root):
    config = make_config()
    table, _ = catalog.build(config, external_root, names=["actualmed"])
    kept, _ = catalog.filter_views(table, config.filter)
    assert set(kept["view"]) == {"PA"}
    training_rows = kept.head(2)
    external, report = external_test_set(kept, config, training_rows, origin="data/external")
    assert len(report["duplicates_of_split_images"]) == 2 and len(external) == len(kept) - 2
    assert set(external["class"]) == {"COVID", "NORMAL"} and set(external["split"]) == {"external"}
    binary, _ = external_test_set(kept, make_config({"task": "binary"}), training_rows.head(0), "x")
    assert set(binary["class"]) == {"COVID", "OTHER"}
    with pytest.raises(SplitError, match="no external image is left"):
        external_test_set(kept, config, kept, origin="data/external")


def test_an_external_source_cannot_also_be_trained_on():
    with pytest.raises(ConfigError, match=r"sources.external: \['actualmed'\] also in sources.use"):
        make_config({"sources": {"use": ["covid_chestxray", "kermany", "actualmed"]}})
    with pytest.raises(ConfigError, match="sources.external: the shortcut audit needs one external test source"):
        make_config({"sources": {"external": []}})
    with pytest.raises(ConfigError, match="audit.lung_box"):
        make_config({"audit": {"lung_box": 1.5}})


def shortcut_split(source_shift: bool, root: Path) -> tuple[pd.DataFrame, object]:
    """Enough synthetic data for the probe to have evidence: many COVID-collection patients, every view."""
    config = make_config(
        {
            "synthetic": {"source_shift": source_shift, "patients": {"covid_chestxray": 400, "kermany": 30}},
            "filter": {"views": []},
            "backbones": ["vgg16"],
            "backbone": "vgg16",
            "train": {"image_size": 64, "epochs": 30, "head": {"units": 32}},
        }
    )
    for name in config.sources.use:
        download_source(name, config, root)
    table, _ = catalog.build(config, root)
    kept, _ = catalog.filter_views(table, config.filter)
    frame, _ = make_split(kept, config, "synthetic")
    runtime.configure_runtime(config.train, config.seed)
    return frame, config


@pytest.mark.parametrize("source_shift", [True, False])
def test_source_probe_detects_the_source_shift_and_falls_to_chance_without_it(tmp_path, source_shift):
    frame, config = shortcut_split(source_shift, tmp_path / "raw")
    vgg16 = backbones.get("vgg16")
    probe = measures.within_class_source_accuracy(
        measures.source_probe(vgg16, frame, 64, config, tmp_path / "probe"), resamples=100, seed=0
    )
    assert sum(probe["smallest_source_images"].values()) >= 15
    if source_shift:
        assert probe["value"] >= 0.9
        box = lungs.hidden_region(frame, {}, 64, config.audit.lung_box, config.audit.mask_margin)
        assert box.kind == "box"
        hidden = lungs_hidden(vgg16, frame, config.class_names(), 64, config, tmp_path / "hidden", box)
        scores = measures.scored(hidden, config.class_names(), resamples=200, seed=0)
        assert scores["balanced_accuracy_low"] > 1 / len(config.class_names())
    else:
        assert probe["value"] < probe["chance"] + findings.PROBE_MARGIN


def test_verdict_follows_the_numbers():
    metrics = {
        "classifier": {"accuracy": 0.97, "sensitivity_COVID": 1.0},
        "source_probe": {
            "within_class_accuracy": 1.0,
            "within_class_chance": 0.5,
            "within_class": {
                "BACTERIA": {
                    "balanced_accuracy": 1.0,
                    "balanced_accuracy_low": 1.0,
                    "balanced_accuracy_high": 1.0,
                    "images": {"covid_chestxray": 3, "kermany": 40},
                }
            },
        },
        "lungs_hidden": {
            "balanced_accuracy": 0.45,
            "balanced_accuracy_low": 0.35,
            "balanced_accuracy_high": 0.55,
            "sensitivity_COVID": 0.8,
        },
        "saliency": {"lung_share": 0.2, "lung_area_share": 0.36, "map_side": 7, "layer": "block4_conv3"},
        "external": {"sensitivity_COVID": 0.5},
    }
    assert findings.evidence(metrics, 4, "COVID") == {
        "probe": True,
        "lungs_hidden": True,
        "saliency": True,
        "external": True,
    }
    text = findings.verdict("vgg16", metrics, 4, "COVID")
    assert "1.00 (chance 0.50; BACTERIA 1.00 [1.00, 1.00] on 3 covid_chestxray + 40 kermany images)" in text
    assert "0.45 [0.35, 0.55]" in text and "a 7x7 feature map" in text
    assert "The COVID result is not evidence of COVID detection" in text
    clean = {
        **metrics,
        "source_probe": {"within_class_accuracy": 0.55, "within_class_chance": 0.5},
        "lungs_hidden": {**metrics["lungs_hidden"], "balanced_accuracy_low": 0.2},
        "saliency": {"lung_share": 0.35, "lung_area_share": 0.36},
        "external": {"sensitivity_COVID": 0.95},
    }
    assert not any(findings.evidence(clean, 4, "COVID").values())
    assert "find no sign" in findings.verdict("vgg16", clean, 4, "COVID")


def test_the_verdict_names_the_positive_class_it_is_given():
    metrics = {
        "classifier": {"sensitivity_PNEUMONIA": 1.0},
        "source_probe": {"within_class_accuracy": 0.5, "within_class_chance": 0.5, "within_class": {}},
        "lungs_hidden": {
            "balanced_accuracy": 0.5,
            "balanced_accuracy_low": 0.4,
            "balanced_accuracy_high": 0.6,
            "sensitivity_PNEUMONIA": 0.2,
        },
        "saliency": {"lung_share": 0.4, "lung_area_share": 0.36, "map_side": 3},
        "external": {"sensitivity_PNEUMONIA": 0.1},
    }
    assert findings.evidence(metrics, 2, "PNEUMONIA")["external"]
    text = findings.verdict("vgg16", metrics, 2, "PNEUMONIA")
    assert "a PNEUMONIA sensitivity of 0.20" in text and "PNEUMONIA sensitivity is 0.10 against 1.00" in text
    assert "COVID" not in text


def test_verdict_when_no_class_has_two_sources_in_the_test_split():
    metrics = {
        "classifier": {"sensitivity_COVID": 1.0},
        "source_probe": {
            "within_class_accuracy": None,
            "within_class_chance": 0.5,
            "accuracy": 1.0,
            "class_only_accuracy": 1.0,
        },
        "lungs_hidden": {"balanced_accuracy": 0.3, "balanced_accuracy_low": 0.2, "balanced_accuracy_high": 0.4},
        "saliency": {"lung_share": 0.5, "lung_area_share": 0.36},
    }
    assert not any(findings.evidence(metrics, 4, "COVID").values())
    text = findings.verdict("vgg16", metrics, 4, "COVID")
    assert "cannot be scored within a class" in text and "find no sign" in text


def test_an_empty_map_is_named_not_drawn(tmp_path):
    """cxr-predict's overlays: a map with no positive evidence writes no blank picture and says so."""
    from cxr.serve.explain import Explainer

    size = 16
    batch = np.random.default_rng(0).uniform(0, 255, (2, size, size, 3)).astype(np.float32)
    explainer = Explainer(tmp_path / "gradcam", "vgg16", 8, ["a.png", "b.png"], ["NORMAL", "COVID"], None)
    previews = [np.zeros((40, 30), np.uint8)] * 2
    probabilities = np.array([[0.2, 0.8], [0.9, 0.1]])
    written = explainer(region_model(size, masked=True), ["a.png", "b.png"], batch, probabilities, previews)
    assert written[0] == (str(tmp_path / "gradcam" / "a.png.gradcam.png"), "")
    assert written[1][0] == "" and written[1][1].startswith("Grad-CAM map empty (no positive evidence")
    assert sorted(path.name for path in (tmp_path / "gradcam").iterdir()) == ["a.png.gradcam.png"]


def test_the_gradcam_grid_has_a_colour_scale_and_a_labelled_lung_box():
    from cxr.core.figures import saliency_grid

    batch = np.full((2, 32, 32, 3), 128, np.float32)
    maps = np.stack([np.tile(np.linspace(0, 1, 32), (32, 1))] * 2)
    table = pd.DataFrame(
        {"class": ["COVID", "NORMAL"], "predicted": ["COVID", "COVID"], "lung_box_share": [0.5, np.nan]}
    )
    figure = saliency_grid(batch, maps, table, slice(6, 26), "vgg16: Grad-CAM")
    assert [text.get_text() for axis in figure.axes for text in axis.texts] == ["lung box", "lung box"]
    titles = [axis.get_title() for axis in figure.axes if axis.get_title()]
    assert titles == ["COVID -> COVID\nin lung box: 0.50", "NORMAL -> COVID\nin lung box: -"]
    [scale] = [axis for axis in figure.axes if axis.get_ylabel().startswith("Grad-CAM")]
    assert scale.get_ylim() == (0.0, 1.0)
