"""Real lung masks in the shortcut audit: what the lungs-hidden classifier blanks, Grad-CAM mass inside
the lungs, and a Grad-CAM layer fine enough to tell the lungs apart."""

import numpy as np
import pandas as pd
import pytest
import tensorflow as tf
from PIL import Image, ImageDraw

from cxr.core import backbones
from cxr.core.sections import Head
from cxr.learn import images, lungs
from cxr.learn.model import build_classifier
from cxr.report.audit import gradcam, measures

SIZE = 32


def lung_file(path, width: int, height: int, shift: int = 0):
    """A mask PNG at an image's upright size: two upright ellipses, 255 inside."""
    picture = Image.new("L", (width, height), 0)
    draw = ImageDraw.Draw(picture)
    draw.ellipse([width * 0.15 + shift, height * 0.2, width * 0.45 + shift, height * 0.85], fill=255)
    draw.ellipse([width * 0.55 + shift, height * 0.2, width * 0.85 + shift, height * 0.85], fill=255)
    picture.save(path)
    return path


def split_table(ids: list[str], parts: list[str]) -> pd.DataFrame:
    return pd.DataFrame({"image_id": ids, "split": parts})


def test_a_mask_is_resized_as_its_image_is(tmp_path):
    mask = lungs.input_mask(lung_file(tmp_path / "m.png", 300, 200), SIZE)
    assert mask.shape == (SIZE, SIZE) and mask.dtype == bool
    # The ellipses span 15-45% and 55-85% of the width whatever the image's aspect.
    assert mask[SIZE // 2, int(0.3 * SIZE)] and mask[SIZE // 2, int(0.7 * SIZE)]
    assert not mask[SIZE // 2, SIZE // 2] and not mask[1, 1]
    assert mask.mean() == pytest.approx(2 * np.pi * 0.15 * 0.325, abs=0.03)


def test_a_mask_lies_over_the_same_pixels_as_its_image_at_the_model_s_input(tmp_path):
    """The same off-centre, asymmetric shape drawn into an image and into its mask: the model input
    (images.decode_resize, the pipeline's path) and the resized mask agree, unflipped."""
    width, height = 90, 60
    picture = Image.new("L", (width, height), 0)
    ImageDraw.Draw(picture).polygon([(5, 5), (50, 8), (12, 45)], fill=255)
    picture.save(tmp_path / "image.png")
    picture.save(tmp_path / "mask.png")
    image = images.decode_resize(tf.constant(str(tmp_path / "image.png")), SIZE).numpy()[..., 0] >= 128
    mask = lungs.input_mask(tmp_path / "mask.png", SIZE)
    rows, columns = np.nonzero(mask)  # the shape's centre (25%, 32% of the side) stays there, unflipped
    assert columns.mean() < 0.3 * SIZE and rows.mean() < 0.4 * SIZE
    assert (image == mask).mean() > 0.97


def test_a_broken_mask_index_is_named_with_its_line(tmp_path):
    (tmp_path / "index.csv").write_text("image_id,mask\na/1.png,masks/00000.png\n")
    with pytest.raises(lungs.LungMaskError, match=r"index.csv: line 2: no mask file 'masks/00000.png' for image"):
        lungs.read_masks(tmp_path)
    (tmp_path / "index.csv").write_text("image_id,file\na/1.png,masks/00000.png\n")
    with pytest.raises(lungs.LungMaskError, match=r"index.csv: no column\(s\) \['mask'\]"):
        lungs.read_masks(tmp_path)
    assert lungs.read_masks(tmp_path / "absent") == {} and lungs.read_masks(None) == {}


def test_dilation_grows_a_pixel_into_a_disc():
    point = np.zeros((9, 9), bool)
    point[4, 4] = True
    assert lungs.dilate(point, 2).sum() == 13 and lungs.dilate(point, 0).sum() == 1


def test_every_image_masked_blanks_each_its_own_grown_mask(tmp_path):
    masks = {f"a/{k}.png": lung_file(tmp_path / f"{k}.png", 64, 48, shift=4 * k) for k in range(3)}
    split = split_table(list(masks), ["train", "val", "test"])
    region = lungs.hidden_region(split, masks, SIZE, 0.6, 0.1)
    assert region.kind == "mask" and region.margin == 3 and region.masks == 3
    blanks = region.blanks(split)
    for k, path in enumerate(masks.values()):
        own = lungs.input_mask(path, SIZE)
        assert (blanks[k] >= own).all() and blanks[k].sum() > own.sum()
    assert not np.array_equal(blanks[0], blanks[2])
    assert region.coverage(split, masks, 0.6)["lungs_blanked_min"] == 1.0


def test_some_images_masked_blanks_one_atlas_in_every_image(tmp_path):
    """A blank whose shape differed by source would tell the sources apart: one region for all."""
    masks = {f"covid/{k}.png": lung_file(tmp_path / f"{k}.png", 64, 64, shift=k) for k in range(4)}
    split = split_table(
        [*masks, "kermany/a.jpeg", "kermany/b.jpeg"], ["train", "train", "train", "test"] + ["train"] * 2
    )
    region = lungs.hidden_region(split, masks, SIZE, 0.6, 0.05)
    assert region.kind == "atlas" and region.masks == 3
    blanks = region.blanks(split)
    assert all(np.array_equal(blanks[0], blank) for blank in blanks)
    coverage = region.coverage(split[split["split"] == "test"], masks, 0.6)
    assert coverage["images"] == 1 and coverage["lungs_blanked"] > 0.97
    # The central box misses the lung bases and edges the atlas covers.
    assert coverage["box_lungs_blanked"] < coverage["lungs_blanked"] - 0.1
    # Masks only outside the training rows (val, test, the external set) make no atlas: the box.
    unseen = lungs.hidden_region(
        split.assign(split=["val", "test", "test", "test", "train", "train"]), masks, SIZE, 0.6, 0.05
    )
    assert unseen.kind == "box"
    none = lungs.hidden_region(split, {}, SIZE, 0.6, 0.05)
    assert region.fingerprint() != unseen.fingerprint() == none.fingerprint()
    assert none.kind == "box" and none.masks == 0
    assert np.array_equal(none.blanks(split)[0], lungs.box_mask(SIZE, 0.6))


def test_the_dataset_blanks_each_image_s_own_region(tmp_path):
    paths = []
    for k in range(2):
        paths.append(tmp_path / f"{k}.png")
        Image.fromarray(np.full((40, 40), 200, np.uint8)).save(paths[-1])
    masks = {f"x/{k}": lung_file(tmp_path / f"m{k}.png", 40, 40, shift=6 * k) for k in range(2)}
    frame = pd.DataFrame(
        {"image_id": list(masks), "path": [str(p) for p in paths], "class": ["A", "B"], "split": ["train", "test"]}
    )
    region = lungs.hidden_region(frame, masks, SIZE, 0.6, 0.0)
    pixels = np.stack([image.numpy() for image, _ in images.image_dataset(frame, ["A", "B"], SIZE, "memory", region)])
    blanks = region.blanks(frame)
    assert (pixels[blanks] == 0).all() and (pixels[~blanks] > 150).all()


def test_gradcam_mass_is_measured_inside_each_image_s_lungs(tmp_path):
    mask = lungs.input_mask(lung_file(tmp_path / "m.png", 64, 64), SIZE)
    inside, outside = mask.astype(np.float32), (~mask).astype(np.float32)
    shares = gradcam.mask_share(np.stack([inside, outside, np.ones((SIZE, SIZE)), np.zeros((SIZE, SIZE))]), mask[None])
    assert shares[:3] == pytest.approx([1.0, 0.0, mask.mean()]) and np.isnan(shares[3])


@pytest.mark.parametrize(
    ("name", "size", "layer", "side"),
    [
        ("vgg16", 96, "block4_conv3", 12),
        ("vgg16", 224, "block5_conv3", 14),
        ("xception", 96, "block4_sepconv2_act", 12),
        ("xception", 299, None, 10),
        ("inceptionresnetv2", 96, "block35_10_ac", 9),
        ("nasnetlarge", 96, "normal_concat_5", 12),
    ],
)
def test_gradcam_reads_an_earlier_layer_where_the_last_map_is_under_7x7(name, size, layer, side):
    model = build_classifier(backbones.get(name), size, 2, Head(units=4, dropout=0.0, normalize=False), None)
    chosen, chosen_side, last_side = gradcam.gradcam_layer(model, backbones.get(name))
    assert (chosen, chosen_side) == (layer, side) and chosen_side >= backbones.GRADCAM_MIN_SIDE
    sides = [gradcam.map_side(model, layer) for layer in backbones.get(name).gradcam_layers]  # every one exists
    assert last_side == sides[0] and sides == sorted(sides)
    maps = gradcam.gradcam(model, np.full((1, size, size, 3), 128, np.float32), np.array([0]), chosen)
    assert maps.shape == (1, size, size) and np.isfinite(maps).all()


def test_grad_cam_shares_leave_out_empty_maps_on_both_sides():
    """An empty map has no share: the lungs' share it is compared with is taken over the same images."""
    table = pd.DataFrame(
        {"lung_share": [0.2, np.nan, 0.4], "lung_area_share": [0.3, 0.9, 0.3], "lung_box_share": [0.5, np.nan, 0.3]}
    )
    assert measures.shares(table) == pytest.approx(
        {"images": 3, "empty_maps": 1, "lung_share": 0.3, "lung_area_share": 0.3, "lung_box_share": 0.4}
    )
