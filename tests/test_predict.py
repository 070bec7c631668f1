"""`cxr-predict` on generated PNG, JPEG and DICOM files with a small real model."""

import io
from pathlib import Path

import mlflow.pyfunc
import numpy as np
import pandas as pd
import pytest
import tensorflow as tf
from conftest import CLASSES, SIZE, write_dicom
from PIL import Image

from cxr.data import dicom
from cxr.data.dicom import DicomError
from cxr.data.image_files import DEFAULT_LIMITS
from cxr.data.sources.synthetic import encode
from cxr.learn import images
from cxr.learn.model_files import load_model
from cxr.serve import predict
from cxr.serve.pyfunc import XrayClassifier, signature


def read_dicom(path: Path):
    return dicom.read_dicom(
        path.read_bytes(),
        str(path),
        max_pixels=DEFAULT_LIMITS.max_pixels,
        max_decoded_bytes=DEFAULT_LIMITS.max_decoded_bytes,
    )


def probabilities(table: pd.DataFrame, name: str) -> np.ndarray:
    row = table[table["path"].str.endswith(name)].iloc[0]
    assert row["error"] == "", row["error"]
    return row[[f"p_{cls}" for cls in CLASSES]].to_numpy(float)


def test_every_format_gives_the_keras_models_probabilities_on_the_same_pixels(tmp_path, model_folder, chest):
    """cxr-predict's reader and the registered pyfunc (raw bytes in a DataFrame, as MLflow's scoring
    server passes them) both give what the Keras model gives on the decoded PNG."""
    model, spec = load_model(model_folder)
    wide = chest.astype(np.uint16) * 257
    files = {
        "chest.png": encode(chest, "png"),
        "chest16.png": encode(chest, "png-16bit"),
        "chest.jpg": encode(chest, "jpeg"),
        "rotated.jpg": encode(chest, "jpeg-exif-rotated"),
    }
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    write_dicom(tmp_path / "mono2.dcm", wide)
    write_dicom(tmp_path / "mono1.dcm", 65535 - wide, photometric="MONOCHROME1")
    write_dicom(tmp_path / "windowed.dcm", wide, window=(32767.5, 65535))
    paths = predict.input_files([str(tmp_path)])
    table = predict.predict_sources(model, spec, paths, batch_size=4)
    mlflow.pyfunc.save_model(
        tmp_path / "pyfunc",
        python_model=XrayClassifier(),
        artifacts={"model": str(model_folder)},
        signature=signature(CLASSES),
    )
    served = mlflow.pyfunc.load_model(str(tmp_path / "pyfunc")).predict(
        pd.DataFrame({"image": [path.read_bytes() for path in paths] + [b"not an image"]})
    )
    # A bad row fails alone, named by its position, not the request.
    assert served.iloc[-1]["error"] == f"row {len(paths)}: not a PNG, JPEG or DICOM file (it starts with b'not an i')"
    served = served.iloc[:-1].assign(path=[str(path) for path in paths])
    expected = model.predict(images.decode_resize(tf.constant(str(tmp_path / "chest.png")), SIZE)[None], verbose=0)[0]
    for result in (table, served):
        for name in ("chest.png", "chest16.png", "mono2.dcm", "mono1.dcm", "windowed.dcm"):
            assert probabilities(result, name) == pytest.approx(expected, abs=1e-4), name
        # JPEG is lossy: close, not equal; the rotated one is read upright like the other.
        assert probabilities(result, "rotated.jpg") == pytest.approx(probabilities(result, "chest.jpg"), abs=1e-3)
        assert set(result["predicted"]) <= set(CLASSES)


def test_dicom_window_clips_and_monochrome1_inverts(tmp_path):
    ramp = np.tile(np.linspace(0, 4000, 80), (70, 1))
    windowed = read_dicom(write_dicom(tmp_path / "w.dcm", ramp, window=(2000, 1000))).pixels
    assert windowed[:, :30].max() == 0 and windowed[:, -30:].min() == 255  # outside the window: black / white
    inverted = read_dicom(write_dicom(tmp_path / "m1.dcm", ramp, photometric="MONOCHROME1")).pixels
    assert inverted[:, 0].min() == 255 and inverted[:, -1].max() == 0


def test_multiframe_dicom_is_refused_with_a_reason(tmp_path):
    path = write_dicom(tmp_path / "cine.dcm", np.zeros((70, 70)) + np.arange(70), frames=3)
    with pytest.raises(DicomError, match=r"cine.dcm: multi-frame DICOM \(3 frames\) is not supported"):
        read_dicom(path)


def test_folder_with_bad_files_writes_every_row_and_fails(tmp_path, model_folder, chest, capsys):
    scans = tmp_path / "scans"
    (scans / "deeper").mkdir(parents=True)
    (scans / "good.png").write_bytes(encode(chest, "png"))
    (scans / "deeper" / "good.jpeg").write_bytes(encode(chest, "jpeg"))
    write_dicom(scans / "lateral.dcm", chest.astype(np.uint16) * 257, view="LL")
    write_dicom(scans / "child.dcm", chest.astype(np.uint16) * 257, view="PA", age="004Y")
    (scans / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0 not a jpeg")
    (scans / "empty.png").write_bytes(b"")
    small = io.BytesIO()
    Image.fromarray(chest[:40, :40]).save(small, format="PNG")
    (scans / "tiny.png").write_bytes(small.getvalue())
    (scans / "notes.txt").write_text("not an image")  # not an image suffix: not read
    output = tmp_path / "out.csv"
    with pytest.raises(SystemExit) as exit_:
        predict.main(
            [
                str(scans),
                "--model",
                str(model_folder),
                "--output",
                str(output),
                "--views",
                "PA",
                "--explain",
                str(tmp_path / "gradcam"),
            ]
        )
    assert exit_.value.code == 1
    table = pd.read_csv(output, keep_default_na=False)
    assert len(table) == 7 and set(table["model"]) == {"tiny"} and table["model_version"].str.startswith("md5:").all()
    errors = dict(zip(table["path"].map(lambda path: Path(path).name), table["error"]))
    assert "cannot be decoded as an image" in errors["corrupt.jpg"]
    assert errors["empty.png"].endswith("empty.png: empty file")
    assert "40 px on its shorter side; at least 64 px" in errors["tiny.png"]
    assert errors["good.png"] == errors["good.jpeg"] == errors["lateral.dcm"] == errors["child.dcm"] == ""
    lateral = table[table["path"].str.endswith("lateral.dcm")].iloc[0]
    assert "ViewPosition LL is not among the views the model was trained on (PA)" in lateral["warning"]
    child = table[table["path"].str.endswith("child.dcm")].iloc[0]
    assert child["warning"] == (
        "PatientAge 4.0 years is outside the ages of the training images that record one "
        "(18-90 years; 40 of 60 images record an age)"
    )
    overlays = sorted(
        path.relative_to(tmp_path / "gradcam").as_posix() for path in (tmp_path / "gradcam").rglob("*.png")
    )
    assert overlays == [
        "child.dcm.gradcam.png",
        "deeper/good.jpeg.gradcam.png",
        "good.png.gradcam.png",
        "lateral.dcm.gradcam.png",
    ]
    # Each row names its overlay; failed rows have none.
    assert table.set_index(table["path"].map(lambda path: Path(path).name))["overlay"].to_dict() == {
        "child.dcm": str(tmp_path / "gradcam" / "child.dcm.gradcam.png"),
        "good.jpeg": str(tmp_path / "gradcam" / "deeper" / "good.jpeg.gradcam.png"),
        "good.png": str(tmp_path / "gradcam" / "good.png.gradcam.png"),
        "lateral.dcm": str(tmp_path / "gradcam" / "lateral.dcm.gradcam.png"),
        "corrupt.jpg": "",
        "empty.png": "",
        "tiny.png": "",
    }
    # The overlay: the image at its own aspect, 512 px on its long side (not the model's 48 px square),
    # the map in colour over it, and a caption strip (class, probability, colour scale) below.
    height, width = chest.shape[:2]
    factor = 512 / max(height, width)
    overlay = np.asarray(Image.open(tmp_path / "gradcam" / "good.png.gradcam.png").convert("RGB")).astype(int)
    shown = round(height * factor)
    assert overlay.shape[1] == round(width * factor) and overlay.shape[0] > shown + 40
    picture, caption = overlay[:shown], overlay[shown:]
    assert (np.ptp(picture, axis=-1) > 30).mean() > 0.05  # coloured where the map is, not a gray image
    assert (caption.max(axis=-1) < 80).sum() > 200  # the caption's text
    assert (np.ptp(caption, axis=-1) > 60).sum() > 300  # the colour scale
    assert (caption[:, -3:].max(axis=-1) < 200).sum() == 0  # wrapped: no text runs off the right edge
    printed = capsys.readouterr().out
    assert "7 file(s), 4 predicted" in printed and "3 failed, 2 with a warning" in printed
    assert "not diagnostic devices" in printed


def test_a_missing_model_is_named(tmp_path):
    with pytest.raises(SystemExit, match=r"error: .*nowhere/model.keras: not found"):
        predict.main([str(tmp_path), "--model", str(tmp_path / "nowhere"), "--views"])


def test_files_read_in_parallel_across_chunks_keep_their_rows_and_errors(model_folder, chest):
    """More files than one chunk (classify.CHUNK), read by several threads while the model runs:
    every row in input order, each bad file its own error, each good file the one-file answer."""
    from cxr.serve.classify import CHUNK, predict_sources

    model, spec = load_model(model_folder)
    bad = {0, CHUNK - 1, CHUNK, 2 * CHUNK + 5}
    sources = [
        (f"f{index}.png", b"not an image" if index in bad else encode(np.roll(chest, index, axis=1), "png"))
        for index in range(2 * CHUNK + 10)
    ]
    table = predict_sources(model, spec, sources, batch_size=16)
    assert table["path"].tolist() == [name for name, _ in sources]
    assert [index for index, error in enumerate(table["error"]) if error] == sorted(bad)
    assert table.loc[CHUNK, "error"] == f"f{CHUNK}.png: not a PNG, JPEG or DICOM file (it starts with b'not an i')"
    for index in (1, CHUNK + 1, 2 * CHUNK + 9):
        alone = predict_sources(model, spec, [sources[index]], batch_size=16)
        assert probabilities(table, f"f{index}.png") == pytest.approx(probabilities(alone, f"f{index}.png"), abs=1e-5)
