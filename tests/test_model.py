"""Backbones, the head, freezing and unfreezing."""

import keras
import numpy as np
import pytest

from cxr.core import backbones
from cxr.core.backbones import BackboneError
from cxr.core.sections import Head
from cxr.learn.model import (
    base_of,
    build_base,
    build_classifier,
    feature_extractor,
    keras_preprocess_input,
    preprocessing,
    unfreeze_last,
)

TINY_HEAD = Head(units=8, dropout=0.0, normalize=False)


@pytest.mark.parametrize("name", sorted(backbones.BACKBONES))
def test_each_backbone_builds_and_trains_a_step_at_its_minimum_size(name):
    backbone = backbones.get(name)
    size = backbone.min_size
    model = build_classifier(backbone, size, 4, TINY_HEAD, weights=None)
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    before = [weight.numpy().copy() for weight in model.trainable_weights]
    images = np.random.default_rng(0).uniform(0, 255, (4, size, size, 3)).astype(np.float32)
    model.train_on_batch(images, np.array([0, 1, 2, 3]))
    assert model.predict(images, verbose=0).shape == (4, 4)
    assert any(not np.allclose(a, b.numpy()) for a, b in zip(before, model.trainable_weights))


def test_too_small_unknown_and_missing_weights_are_clear_errors(tmp_path):
    with pytest.raises(BackboneError, match="xception needs images of at least 71 px, got train.image_size=64"):
        backbones.get("xception").input_size(64)
    with pytest.raises(BackboneError, match="inceptionresnetv2 needs images of at least 75 px"):
        backbones.get("inceptionresnetv2").input_size(74)
    assert backbones.get("vgg16").input_size("native") == 224
    with pytest.raises(
        BackboneError, match=r"unknown backbone 'resnet50'; known: \['inceptionresnetv2', 'nasnetlarge'"
    ):
        backbones.get("resnet50")
    missing = tmp_path / "vgg16.weights.h5"
    with pytest.raises(BackboneError, match=f"weights file {missing} does not exist"):
        build_base(backbones.get("vgg16"), 32, str(missing))


def test_weights_file_is_loaded(tmp_path):
    backbone = backbones.get("vgg16")
    source = build_base(backbone, 32, None)
    path = tmp_path / "vgg16_notop.weights.h5"
    source.save_weights(path)
    loaded = build_base(backbone, 32, str(path))
    assert all(np.array_equal(a, b) for a, b in zip(source.get_weights(), loaded.get_weights()))


@pytest.mark.parametrize("name", ["vgg16", "xception"])
def test_built_in_preprocessing_matches_keras_preprocess_input(name):
    backbone = backbones.get(name)
    pixels = np.random.default_rng(1).uniform(0, 255, (2, 8, 8, 3)).astype(np.float32)
    expected = keras_preprocess_input(backbone, pixels.copy())
    assert np.allclose(keras.ops.convert_to_numpy(preprocessing(backbone)(pixels)), expected, atol=1e-4)


@pytest.mark.parametrize("normalize", [False, True])
def test_only_the_head_trains_and_batchnorm_stays_in_inference_mode(normalize):
    model = build_classifier(backbones.get("xception"), 71, 3, Head(units=16, dropout=0.0, normalize=normalize), None)
    assert [tuple(weight.shape) for weight in model.trainable_weights] == [(2048, 16), (16,), (16, 3), (3,)]
    assert not base_of(model).trainable
    images = np.random.default_rng(2).uniform(0, 255, (3, 71, 71, 3)).astype(np.float32)
    training_mode = keras.ops.convert_to_numpy(model(images, training=True))
    inference_mode = keras.ops.convert_to_numpy(model(images, training=False))
    assert np.allclose(training_mode, inference_mode, atol=1e-6)


def test_head_on_cached_features_equals_the_whole_model():
    model = build_classifier(backbones.get("vgg16"), 32, 4, Head(units=8, dropout=0.5, normalize=False), None)
    images = np.random.default_rng(3).uniform(0, 255, (5, 32, 32, 3)).astype(np.float32)
    features = feature_extractor(model).predict(images, verbose=0)
    through_head = model.get_layer("head").predict(features, verbose=0)
    assert np.allclose(model.predict(images, verbose=0), through_head, atol=1e-6)


@pytest.mark.parametrize("count", [0, 2, 5])
def test_unfreeze_exactly_n_layers_and_keep_batchnorm_frozen(count):
    model = build_classifier(backbones.get("xception"), 71, 4, TINY_HEAD, None)
    names = unfreeze_last(model, count)
    base = base_of(model)
    trainable = [layer for layer in base.layers if layer.trainable and layer.weights]
    assert [layer.name for layer in trainable] == names and len(names) == count
    assert not any(isinstance(layer, keras.layers.BatchNormalization) for layer in trainable)
    assert all(not layer.trainable for layer in base.layers if isinstance(layer, keras.layers.BatchNormalization))
    assert len(model.trainable_weights) == 4 + sum(len(layer.trainable_weights) for layer in trainable)
    if count:
        assert names[-1] == "block14_sepconv2"
    with pytest.raises(BackboneError, match="finetune.unfreeze=1000"):
        unfreeze_last(model, 1000)


def test_a_model_contract_of_format_1_loads_and_a_newer_one_warns():
    """Format 1 (before format_version existed) migrates; fields a newer cxr added are a warning."""
    import warnings

    from cxr.core.spec import FORMAT_VERSION, ModelSpec, SpecError

    version_1 = {
        "backbone": "vgg16",
        "image_size": 32,
        "classes": ["COVID", "NORMAL"],
        "task": "binary",
        "weights": None,
        "views": ["PA"],
        "ages": None,
        "finetuned_from": None,
        "unfrozen_layers": [],
        "unchanged_from_base": False,
    }
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        spec = ModelSpec.from_json(version_1)
    assert spec.image_size == 32 and spec.to_json()["format_version"] == FORMAT_VERSION
    assert spec.to_json()["output"]["names"] == ["COVID", "NORMAL"]
    assert ModelSpec.from_json(spec.to_json()) == spec  # the current format round-trips
    newer = spec.to_json() | {"format_version": FORMAT_VERSION + 1, "calibration": {"temperature": 1.3}}
    with pytest.warns(
        UserWarning, match=r"meta.json: format_version 3 .*ignoring fields it does not know: calibration"
    ):
        assert ModelSpec.from_json(newer) == spec
    with pytest.raises(SpecError, match="meta.json: missing image_size"):
        ModelSpec.from_json({key: value for key, value in version_1.items() if key != "image_size"})


@pytest.mark.parametrize(
    ("installed", "expected"),
    [
        ({"tensorflow-cpu": "2.21.0"}, "tensorflow-cpu==2.21.0"),
        ({"tensorflow": "2.21.0"}, "tensorflow==2.21.0"),
        ({"tensorflow": "2.21.0", "nvidia-cudnn-cu12": "9.3.0"}, "tensorflow[and-cuda]==2.21.0"),
    ],
)
def test_serving_requirements_name_the_tensorflow_installed(installed, expected):
    from cxr.serve.register import serving_requirements

    found = serving_requirements(lambda name: (installed | {"keras": "3.15.0", "mlflow": "3.17.2"}).get(name))
    assert found == [expected, "keras==3.15.0", "mlflow==3.17.2"]


def test_serving_without_tensorflow_is_refused():
    from cxr.core.errors import CxrError
    from cxr.serve.register import serving_requirements

    with pytest.raises(CxrError, match="no TensorFlow distribution is installed"):
        serving_requirements(lambda name: None)


def test_a_mixed_precision_training_step_and_gradcam_are_finite():
    """The GPU path (``train.mixed_precision``: Keras' ``mixed_float16`` policy) on this CPU: float16
    compute, a float32 softmax, a loss-scaled training step that changes the head, and a Grad-CAM map."""
    from cxr.report.audit.gradcam import gradcam

    keras.utils.set_random_seed(0)  # the initial weights, whatever the tests before drew
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        model = build_classifier(backbones.get("vgg16"), 32, 2, Head(units=4, dropout=0.0, normalize=False), None)
        assert model.get_layer("vgg16").compute_dtype == "float16" and model.outputs[0].dtype == "float32"
        images = np.random.default_rng(0).uniform(0, 255, (8, 32, 32, 3)).astype("float32")
        labels = np.array([0, 1] * 4)
        # Before the step: one step at this learning rate may leave the 4-unit head's ReLUs dead, and
        # a dead head has no evidence to map; an empty map here means float16 gradients underflowed.
        maps = gradcam(model, images[:2], np.array([0, 1]), backbones.get("vgg16").gradcam_layers[0])
        assert maps.dtype == np.float32 and np.isfinite(maps).all() and maps.max() > 0
        model.compile(optimizer=keras.optimizers.Adam(1e-2), loss="sparse_categorical_crossentropy")
        assert type(model.optimizer).__name__ == "LossScaleOptimizer"
        before = [weight.numpy().copy() for weight in model.layers[-1].weights]
        loss = model.train_on_batch(images, labels)
        after = [weight.numpy() for weight in model.layers[-1].weights]
        assert np.isfinite(loss) and loss > 0
        assert any(not np.array_equal(old, new) for old, new in zip(before, after))

    finally:
        keras.mixed_precision.set_global_policy("float32")
