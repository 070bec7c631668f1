"""The input pipeline: every source format to RGB at the backbone's size, cached after one pass."""

import io
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
import tensorflow as tf
from conftest import make_config
from PIL import Image

from cxr.data import image_files
from cxr.learn import images

AUGMENT = make_config().train.augment  # the shipped augmentation settings


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
        "palette.png": Image.fromarray(np.stack([pixels] * 3, -1), "RGB").quantize(colors=4),
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
        dataset = images.image_dataset(mixed_formats, ["A"], 16, cache=cache, cache_dir=tmp_path / "data/cache/images")
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


def test_a_memory_cache_over_its_limit_goes_to_disk(mixed_formats, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    size_mb = images.decoded_megabytes(len(mixed_formats), 16)
    folder = tmp_path / "data/cache/images"
    within = images.image_dataset(
        mixed_formats, ["A"], 16, cache="memory", memory_limit_mb=size_mb * 2, cache_dir=folder
    )
    list(within.as_numpy_iterator())
    assert not (tmp_path / "data/cache/images").exists()
    over = images.image_dataset(mixed_formats, ["A"], 16, cache="memory", memory_limit_mb=size_mb / 2, cache_dir=folder)
    assert len(list(over.as_numpy_iterator())) == len(mixed_formats)
    assert list((tmp_path / "data/cache/images").glob("16px-*"))


def test_disk_cache_key_follows_content_and_size(mixed_formats):
    key = images.cache_key(mixed_formats, 32)
    assert key == images.cache_key(mixed_formats.copy(), 32)
    assert key != images.cache_key(mixed_formats, 64)
    assert key != images.cache_key(mixed_formats.assign(sha256=mixed_formats["sha256"] + "x"), 32)


def test_augmentation_is_seeded_and_follows_params():
    assert images.augmenter(replace(AUGMENT, enabled=False)) is None
    batch = np.random.default_rng(0).uniform(0, 255, (4, 32, 32, 3)).astype(np.float32)
    augment = images.augmenter(replace(AUGMENT, enabled=True))
    first = augment(batch, tf.constant([1, 2])).numpy()
    assert first.shape == batch.shape and not np.allclose(first, batch)
    assert np.array_equal(first, augment(batch, tf.constant([1, 2])).numpy())
    assert not np.allclose(first, augment(batch, tf.constant([3, 4])).numpy())
    assert first.min() >= 0 and first.max() <= 255
    still = images.augmenter(replace(AUGMENT, enabled=True, rotation=0, zoom=0, shift=0, contrast=0))
    assert np.allclose(still(batch, tf.constant([1, 2])).numpy(), batch, atol=1e-3)


def test_a_pure_shift_moves_the_image():
    image = np.zeros((1, 20, 20, 3), np.float32)
    image[0, 8:12, 8:12] = 255.0
    shifted = images.augmenter(replace(AUGMENT, enabled=True, rotation=0, zoom=0, shift=0.25, contrast=0))(
        image, tf.constant([5, 6])
    ).numpy()
    assert shifted.sum() == pytest.approx(image.sum(), rel=0.05)  # moved, not lost (stays inside)
    rows, columns = np.nonzero(shifted[0, :, :, 0] > 127)
    assert (rows.mean(), columns.mean()) != pytest.approx((9.5, 9.5), abs=0.5)


def test_training_batches_depend_on_seed_and_epoch_alone():
    data = tf.data.Dataset.from_tensor_slices(
        (np.random.default_rng(1).uniform(0, 255, (6, 16, 16, 3)).astype(np.float32), np.arange(6))
    )
    batches = images.TrainingBatches(data, 6, 4, seed=3, augment=images.augmenter(replace(AUGMENT, enabled=True)))
    assert batches.steps_per_epoch == 2

    def read(dataset):
        pairs = list(dataset)
        return np.concatenate([x.numpy() for x, _ in pairs]), np.concatenate([y.numpy() for _, y in pairs])

    run = read(batches.epochs(0, 3))
    assert run[0].shape == (18, 16, 16, 3) and sorted(run[1][6:12]) == list(range(6))
    # An epoch reads the same whether it comes first (a resumed fit) or after others.
    resumed = read(batches.epochs(2, 3))
    assert np.array_equal(resumed[0], run[0][12:]) and np.array_equal(resumed[1], run[1][12:])
    assert np.array_equal(read(batches.epoch(1))[0], run[0][6:12])
    # Epochs differ from each other, and another seed gives other batches.
    assert not np.array_equal(run[1][:6], run[1][6:12]) or not np.allclose(run[0][:6], run[0][6:12])
    other = read(images.TrainingBatches(data, 6, 4, seed=4, augment=batches.augment).epochs(0, 1))
    assert not np.allclose(other[0], run[0][:6])


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_is_applied_as_pil_does(tmp_path, orientation):
    from PIL import ExifTags, ImageOps

    pixels = np.zeros((30, 50), np.uint8)
    pixels[:10, :20] = 255  # a bright block in one corner tells every turn and mirror apart
    exif = Image.Exif()
    exif[ExifTags.Base.Orientation] = orientation
    path = tmp_path / f"o{orientation}.png"
    Image.fromarray(pixels, "L").save(path, exif=exif.tobytes())
    expected = np.asarray(ImageOps.exif_transpose(Image.open(path)), np.float32)
    upright = image_files.upright(tf.io.decode_image(tf.io.read_file(str(path)), channels=1), orientation).numpy()
    assert upright.shape[:2] == expected.shape and np.array_equal(upright[..., 0], expected)


def test_exif_rotated_jpeg_reaches_the_model_upright(tmp_path):
    from cxr.data.catalog import describe_image
    from cxr.data.sources.synthetic import encode

    pixels = np.zeros((48, 32), np.uint8)
    pixels[:16] = 220  # bright top third, when upright
    path = tmp_path / "rotated.jpg"
    path.write_bytes(encode(pixels, "jpeg-exif-rotated"))
    described = describe_image(str(path))
    assert (described["orientation"], described["width"], described["height"]) == (6, 32, 48)
    frame = pd.DataFrame([{"path": str(path), "class": "A", "sha256": "x", "orientation": 6}])
    image, _ = next(images.image_dataset(frame, ["A"], 24, cache="memory").as_numpy_iterator())
    assert image[:6].mean() > 180 and image[-6:].mean() < 40


def radiograph_jpeg(height: int = 1300, width: int = 1500) -> bytes:
    """A JPEG as large as the collections' (1000-1600 px): smooth anatomy-like shading, film grain."""
    y, x = np.mgrid[0:height, 0:width] / width
    shading = 128 + 80 * np.sin(6 * x) * np.cos(4 * y) + np.random.default_rng(0).normal(0, 8, (height, width))
    buffer = io.BytesIO()
    Image.fromarray(shading.clip(0, 255).astype(np.uint8)).save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


def test_a_jpeg_is_decoded_at_the_smallest_scale_that_keeps_twice_the_model_side(tmp_path):
    data = radiograph_jpeg()
    # 1300 / 4 = 325 >= 192 > 1300 / 8: libjpeg's 1/4 scale; asked for more than the image has: full size.
    assert image_files.decode_tensor(tf.constant(data), at_least=192).shape == (325, 375, 3)
    assert image_files.decode_tensor(tf.constant(data), at_least=5000).shape == (1300, 1500, 3)
    assert image_files.decode_tensor(tf.constant(data)).shape == (1300, 1500, 3)
    png = io.BytesIO()
    Image.open(io.BytesIO(data)).save(png, "PNG")
    assert image_files.decode_tensor(tf.constant(png.getvalue()), at_least=192).shape == (1300, 1500, 3)
    # The model's input (96 px, decoded at >= 192 px) is within 2 of 255 grey levels of a full decode.
    reduced = images.decode_bytes(tf.constant(data), 96).numpy()
    full = images.model_input(image_files.decode_tensor(tf.constant(data)), 96).numpy()
    assert np.abs(reduced - full).max() <= 2.0 and np.abs(reduced - full).mean() <= 1.0
    # Training's tf.data pipeline (graph mode) decodes the same pixels as the eager reader.
    (tmp_path / "big.jpg").write_bytes(data)
    frame = pd.DataFrame({"path": [str(tmp_path / "big.jpg")], "class": ["A"], "sha256": ["big"]})
    [(batch, _)] = images.image_dataset(frame, ["A"], 96, cache="memory").batch(1)
    assert np.array_equal(batch.numpy()[0], reduced)


def test_a_truncated_jpeg_fails_at_a_reduced_scale_as_at_full_size():
    data = radiograph_jpeg()[:60_000]
    for at_least in (None, 192):
        with pytest.raises(tf.errors.InvalidArgumentError):
            image_files.decode_tensor(tf.constant(data), at_least=at_least)
