"""The input pipeline: every source format to RGB at the backbone's size, cached after one pass."""

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from cxr import images
from cxr.config import Augment


@pytest.fixture
def mixed_formats(tmp_path):
    """One file per format the sources use, all with a bright left half."""
    pixels = np.zeros((40, 60), np.uint8)
    pixels[:, :30] = 200
    files = {
        "gray.jpeg": Image.fromarray(pixels, "L"),
        "rgb.jpg": Image.fromarray(np.stack([pixels] * 3, -1), "RGB"),
        "rgba.png": Image.fromarray(np.dstack([pixels] * 3 + [np.full_like(pixels, 255)]), "RGBA"),
        "gray16.png": Image.fromarray(pixels.astype(np.uint16) * 257),
        "gray.png": Image.fromarray(pixels, "L"),
    }
    rows = []
    for name, picture in files.items():
        picture.save(tmp_path / name)
        rows.append({"path": str(tmp_path / name), "class": "A", "sha256": name})
    return pd.DataFrame(rows)


def test_every_format_decodes_to_rgb_at_size(mixed_formats):
    dataset = images.image_dataset(mixed_formats, ["A"], 32, cache="memory")
    for image, label in dataset.as_numpy_iterator():
        assert image.shape == (32, 32, 3) and image.dtype == np.float32 and label == 0
        assert image[:, :12].mean() == pytest.approx(200, abs=6)
        assert image[:, -12:].mean() == pytest.approx(0, abs=6)
        assert np.allclose(image[..., 0], image[..., 2], atol=2)


def test_cached_epochs_do_not_read_files_again(mixed_formats, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for cache in ("memory", "disk"):
        dataset = images.image_dataset(mixed_formats, ["A"], 16, cache=cache)
        first = [image for image, _ in dataset.as_numpy_iterator()]
        moved = tmp_path / f"moved-{cache}"
        moved.mkdir()
        for path in mixed_formats["path"]:
            (tmp_path / path).rename(moved / path.split("/")[-1])
        second = [image for image, _ in dataset.as_numpy_iterator()]
        assert all(np.array_equal(a, b) for a, b in zip(first, second))
        for path in mixed_formats["path"]:
            (moved / path.split("/")[-1]).rename(path)
    assert list((tmp_path / "data/cache/images").glob("16px-*"))


def test_disk_cache_key_follows_content_and_size(mixed_formats):
    key = images.cache_key(mixed_formats, 32)
    assert key == images.cache_key(mixed_formats.copy(), 32)
    assert key != images.cache_key(mixed_formats, 64)
    assert key != images.cache_key(mixed_formats.assign(sha256=mixed_formats["sha256"] + "x"), 32)


def test_augmentation_layers_follow_params():
    assert images.augmenter(Augment(enabled=False), seed=0) is None
    layers = images.augmenter(Augment(enabled=True, rotation=0.1, zoom=0, shift=0.1, contrast=0,
                                      horizontal_flip=False), seed=0).layers
    assert [type(layer).__name__ for layer in layers] == ["RandomRotation", "RandomTranslation"]
    flipping = images.augmenter(Augment(enabled=True, horizontal_flip=True), seed=0).layers
    assert type(flipping[-1]).__name__ == "RandomFlip"
    batch = np.random.default_rng(0).uniform(0, 255, (2, 32, 32, 3)).astype(np.float32)
    augmented = np.asarray(images.augmenter(Augment(enabled=True), seed=0)(batch, training=True))
    assert augmented.shape == batch.shape and not np.allclose(augmented, batch)
