"""Every input gets its own answer: the files real archives hold, and hostile ones, through the one
decoder (merge's check, cxr-predict, the served model). Inputs are generated to reproduce what
public test files and bug reports show: pydicom's own test files (shipped in its wheel), DICOMs
encoded with GDCM and pydicom, PNG headers that claim 65535 x 65535 px, WebP and TIFF files under
PNG and JPEG names (as the COVID collection once shipped), suffixless DICOMs as PACS exports
name them.
"""

from __future__ import annotations

import base64
import io
import json
import os
import struct
import zlib
from pathlib import Path

import gdcm
import numpy as np
import pandas as pd
import pydicom
import pytest
from conftest import CLASSES, make_config, write_dicom
from PIL import Image
from pydicom.data import get_testdata_file
from pydicom.pixels import apply_color_lut
from pydicom.uid import DeflatedExplicitVRLittleEndian, RLELossless

from cxr.core.errors import one_line
from cxr.data import catalog
from cxr.data.catalog import describe_image
from cxr.data.dicom import DicomError
from cxr.data.image_files import ImageFileError, Limits, decode
from cxr.data.sources.synthetic import encode
from cxr.learn.model_files import load_model
from cxr.serve import predict
from cxr.serve.classify import Decision, predict_sources


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def bomb_header_png(width: int = 65535, height: int = 65535) -> bytes:
    """A valid PNG signature and IHDR claiming ``width`` x ``height`` grey pixels, a few bytes of data."""
    header = png_chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
    return b"\x89PNG\r\n\x1a\n" + header + png_chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + png_chunk(b"IEND", b"")


def pil_bytes(pixels: np.ndarray, format: str) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format=format)
    return buffer.getvalue()


def jpeg_lossless(source: Path, target: Path) -> Path:
    """``source`` re-encoded by GDCM as JPEG Lossless, Non-Hierarchical, First-Order Prediction (process
    14, selection value 1): the syntax CR and DX modalities usually export."""
    reader = gdcm.ImageReader()
    reader.SetFileName(str(source))
    assert reader.Read()
    change = gdcm.ImageChangeTransferSyntax()
    change.SetTransferSyntax(gdcm.TransferSyntax(gdcm.TransferSyntax.JPEGLosslessProcess14_1))
    change.SetInput(reader.GetImage())
    assert change.Change()
    writer = gdcm.ImageWriter()
    writer.SetFileName(str(target))
    writer.SetFile(reader.GetFile())
    writer.SetImage(change.GetOutput())
    assert writer.Write()
    return target


def deflated(source: Path, target: Path) -> Path:
    dataset = pydicom.dcmread(source)
    dataset.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    dataset.save_as(target, enforce_file_format=True)
    return target


# --- the decoder ---------------------------------------------------------------------------------


def test_a_bomb_header_is_refused_before_any_pixel_is_decoded():
    data = bomb_header_png()
    assert len(data) < 120
    with pytest.raises(ImageFileError) as error:
        decode(data, "scans/bomb.png")
    assert str(error.value) == (
        "scans/bomb.png: 4,294,836,225 pixels, over the limit of 67,108,864 pixels per "
        "image (max_pixels); downscale it first"
    )
    # Below PIL's own guard, cxr's limit speaks first.
    with pytest.raises(ImageFileError, match=r"^b.png: 10000 x 10000 px \(100,000,000 pixels\), over the limit"):
        decode(bomb_header_png(10000, 10000), "b.png")


def test_the_pixel_limit_and_the_file_limit_name_the_limit(chest):
    data = encode(chest, "png")
    with pytest.raises(
        ImageFileError,
        match=r"^a.png: 96 x 112 px \(10,752 pixels\), over the limit of 10,000 "
        r"pixels per image \(max_pixels\)",
    ):
        decode(data, "a.png", Limits(max_pixels=100 * 100))
    with pytest.raises(
        ImageFileError,
        match=rf"^a.png: {len(data):,} bytes, over the limit of 1,000 bytes per file "
        r"\(max_file_bytes\)$",
    ):
        decode(data, "a.png", Limits(max_file_bytes=1000))
    assert decode(data, "a.png").pixels.shape == (112, 96, 3)


@pytest.mark.parametrize(
    "name, format, label",
    [
        ("covid.png", "WEBP", "WebP"),
        ("IM-0001.jpeg", "TIFF", "TIFF"),
        ("x.png", "PPM", "Netpbm (PBM/PGM/PPM)"),
        ("y.jpg", "GIF", "GIF"),
        ("z.dcm", "WEBP", "WebP"),
        ("w.png", "BMP", "BMP"),
    ],
)
def test_formats_tensorflow_does_not_train_on_are_refused_by_their_bytes_not_their_name(chest, name, format, label):
    data = pil_bytes(chest, format)
    with pytest.raises(ImageFileError) as error:
        decode(data, name)
    message = str(error.value)
    assert "\n" not in message and message.startswith(f"{name}: ")
    assert message == (
        f"{name}: a {label} file (whatever its name says); cxr reads PNG, JPEG and DICOM: convert it to PNG"
    )


def test_one_line_drops_newlines_and_object_addresses():
    assert one_line(ValueError("bad\n  thing <_io.BytesIO object at 0x7f3a2c>")) == "bad thing BytesIO"
    assert one_line(MemoryError()) == "MemoryError"


def test_dicom_window_width_0_and_an_empty_rescale_slope_are_read_with_a_note(tmp_path, chest):
    values = chest.astype(np.uint16) * 257
    zero = write_dicom(tmp_path / "w0.dcm", values, window=(2000, 0))
    empty = write_dicom(tmp_path / "slope.dcm", values, RescaleSlope="", RescaleIntercept=" 0 ")
    plain = decode(write_dicom(tmp_path / "plain.dcm", values).read_bytes(), "plain.dcm").pixels.numpy()
    for path, note in (
        (zero, "window (WindowCenter 2000, WindowWidth 0) is not valid (width at least 1)"),
        (empty, "RescaleSlope '' is not a number; 1 is used"),
    ):
        read = decode(path.read_bytes(), path.name)
        assert np.array_equal(read.pixels.numpy(), plain)
        assert any(found.startswith(note) for found in read.dicom.notes), read.dicom.notes


def test_dicom_sizes_are_checked_on_the_header_and_deflated_data_is_inflated_only_to_the_limit(tmp_path):
    ramp = np.tile(np.arange(300, dtype=np.uint16), (300, 1)) * 200
    big = write_dicom(tmp_path / "big.dcm", ramp)
    with pytest.raises(DicomError, match=r"^big.dcm: 300 x 300 px, over the limit of 10,000 pixels per image"):
        decode(big.read_bytes(), "big.dcm", Limits(max_pixels=100 * 100))
    bomb = deflated(write_dicom(tmp_path / "zeros.dcm", np.zeros((2000, 2000))), tmp_path / "deflated.dcm")
    assert bomb.stat().st_size < 40_000
    with pytest.raises(DicomError, match=r"^deflated.dcm: deflated data expands beyond 4,000,000 bytes"):
        decode(bomb.read_bytes(), "deflated.dcm", Limits(max_pixels=1000 * 1000))
    small = deflated(big, tmp_path / "small_deflated.dcm")
    assert decode(small.read_bytes(), "small_deflated.dcm").pixels.shape == (300, 300, 3)


def test_compressed_dicoms_decode_to_the_uncompressed_pixels(tmp_path, chest):
    values = chest.astype(np.uint16) * 257
    source = write_dicom(tmp_path / "plain.dcm", values)
    expected = decode(source.read_bytes(), "plain.dcm").pixels.numpy()
    rle = pydicom.dcmread(source)
    rle.compress(RLELossless)  # pydicom's own RLE encoder
    rle.save_as(tmp_path / "rle.dcm")
    lossless = jpeg_lossless(source, tmp_path / "jpegll.dcm")
    for path in (tmp_path / "rle.dcm", lossless):
        syntax = pydicom.dcmread(path, stop_before_pixels=True).file_meta.TransferSyntaxUID
        assert syntax.is_compressed
        assert np.array_equal(decode(path.read_bytes(), path.name).pixels.numpy(), expected), syntax.name
    # pydicom's own test files: one MR slice stored uncompressed, as JPEG-LS lossless, JPEG 2000 lossless
    # and RLE decodes to the same pixels every way; JPEG Lossless RGB, JPEG 2000 and YBR files are read.
    same = [
        decode(Path(get_testdata_file(name)).read_bytes(), name).dicom.pixels
        for name in ("MR_small.dcm", "MR_small_jpeg_ls_lossless.dcm", "MR_small_jp2klossless.dcm", "MR_small_RLE.dcm")
    ]
    assert all(np.array_equal(same[0], other) for other in same[1:])
    for name in ("JPEG2000.dcm", "SC_rgb_jpeg_gdcm.dcm", "SC_ybr_full_422_uncompressed.dcm"):
        path = Path(get_testdata_file(name))
        assert decode(path.read_bytes(), name).pixels.shape[-1] == 3


def test_a_dicom_without_preamble_or_file_meta_is_read_by_its_content(tmp_path, chest):
    """Older exports write the bare dataset: no 128-byte preamble, no DICM marker, no transfer syntax."""
    values = chest.astype(np.uint16) * 257
    full = write_dicom(tmp_path / "full.dcm", values)
    bare = pydicom.dcmread(full)
    del bare.file_meta
    bare.preamble = None
    buffer = io.BytesIO()
    bare.save_as(buffer, implicit_vr=True, little_endian=True, enforce_file_format=False)
    assert buffer.getvalue()[128:132] != b"DICM"
    expected = decode(full.read_bytes(), "full.dcm").pixels.numpy()
    assert np.array_equal(decode(buffer.getvalue(), "bare.dcm").pixels.numpy(), expected)


def test_palette_dicoms_are_read_through_their_lookup_table_and_other_modalities_are_named():
    path = Path(get_testdata_file("examples_palette.dcm"))  # an ultrasound, PALETTE COLOR
    read = decode(path.read_bytes(), "palette.dcm")
    dataset = pydicom.dcmread(path)
    luminance = apply_color_lut(dataset.pixel_array, dataset)[..., :3] @ np.array([0.299, 0.587, 0.114])
    expected = np.round((luminance - luminance.min()) / (luminance.max() - luminance.min()) * 255)
    assert np.abs(read.dicom.pixels.astype(float) - expected).max() <= 1
    assert not np.array_equal(read.dicom.pixels, dataset.pixel_array)  # not the raw palette indices
    assert "Modality US is not a projection radiograph (CR, DX, DR)" in read.dicom.notes
    mr = decode(Path(get_testdata_file("MR_small.dcm")).read_bytes(), "mr.dcm")
    assert "Modality MR is not a projection radiograph (CR, DX, DR)" in mr.dicom.notes


# --- merge: a file merge accepts is a file training can read ---------------------------------------


@pytest.mark.parametrize("kind", ["webp", "tiff", "bomb"])
def test_merge_stops_on_a_file_training_could_not_read_naming_it(tmp_path, raw_root, chest, kind):
    import shutil

    root = tmp_path / "raw"
    shutil.copytree(raw_root, root)
    victim = sorted((root / "kermany" / "chest_xray").rglob("*.jpeg"))[3]
    victim.write_bytes(
        {"webp": pil_bytes(chest, "WEBP"), "tiff": pil_bytes(chest, "TIFF"), "bomb": bomb_header_png()}[kind]
    )
    with pytest.raises(ImageFileError) as error:
        catalog.build(make_config(), root)
    message = str(error.value)
    assert message.startswith(f"{victim}: ") and "\n" not in message
    assert {"webp": "a WebP file", "tiff": "a TIFF file", "bomb": "over the limit of"}[kind] in message


def test_merge_refuses_a_dicom_among_training_images(tmp_path, chest):
    path = write_dicom(tmp_path / "x.jpeg", chest.astype(np.uint16) * 257)
    with pytest.raises(ImageFileError, match=r"x.jpeg: a DICOM file; here only PNG, JPEG are read"):
        describe_image(str(path))


# --- cxr-predict ------------------------------------------------------------------------------------


@pytest.fixture
def hostile_folder(tmp_path, chest) -> Path:
    """Good files beside every kind of bad one, nested as archives nest them."""
    scans = tmp_path / "scans"
    (scans / "a" / "b").mkdir(parents=True)
    (scans / "p1").mkdir()
    (scans / "p2").mkdir()
    values = chest.astype(np.uint16) * 257
    (scans / "good.png").write_bytes(encode(chest, "png"))
    (scans / "p1" / "view1_frontal.jpg").write_bytes(encode(chest, "jpeg"))
    (scans / "p2" / "view1_frontal.jpg").write_bytes(encode(chest[:, ::-1].copy(), "jpeg"))
    write_dicom(scans / "a" / "b" / "IM000000", values, age="62")  # no suffix, bare age
    write_dicom(scans / "w0.dcm", values, window=(2000, 0))
    write_dicom(scans / "slope.dcm", values, RescaleSlope="")
    write_dicom(scans / "hand.dcm", values, BodyPartExamined="HAND")
    write_dicom(scans / "lateral.dcm", values, view="LL")
    write_dicom(scans / "mr.dcm", values, modality="MR", RescaleIntercept=" 0 ")
    (scans / "bomb.png").write_bytes(bomb_header_png())
    (scans / "webp.png").write_bytes(pil_bytes(chest, "WEBP"))
    (scans / "scan.tiff.jpg").write_bytes(pil_bytes(chest, "TIFF"))
    (scans / "loop.png").symlink_to(scans / "loop.png")
    (scans / "a" / "up").symlink_to(scans, target_is_directory=True)
    (scans / "notes.txt").write_text("not an image")
    return scans


def test_predict_answers_every_file_of_a_hostile_folder_in_its_own_row(tmp_path, hostile_folder, model_folder, capsys):
    output = tmp_path / "out.csv"
    with pytest.raises(SystemExit) as exit_:
        predict.main(
            [
                str(hostile_folder),
                "--model",
                str(model_folder),
                "--output",
                str(output),
                "--explain",
                str(tmp_path / "gradcam"),
            ]
        )
    assert exit_.value.code == 1
    table = pd.read_csv(output, keep_default_na=False)
    rows = {
        Path(path).relative_to(hostile_folder).as_posix(): row
        for path, row in zip(table["path"], table.to_dict("records"))
    }
    good = [
        "good.png",
        "p1/view1_frontal.jpg",
        "p2/view1_frontal.jpg",
        "a/b/IM000000",
        "w0.dcm",
        "slope.dcm",
        "hand.dcm",
        "lateral.dcm",
        "mr.dcm",
    ]
    bad = {
        "bomb.png": "over the limit of 67,108,864 pixels per image (max_pixels)",
        "webp.png": "a WebP file (whatever its name says)",
        "scan.tiff.jpg": "a TIFF file",
        "loop.png": "cannot be read (Too many levels of symbolic links)",
        "a/up": "a symbolic link back to",
    }
    assert sorted(rows) == sorted(good + list(bad))
    for name in good:
        assert rows[name]["error"] == "" and rows[name]["predicted"] in CLASSES, name
    for name, expected in bad.items():
        error = rows[name]["error"]
        assert error.startswith(str(hostile_folder / name)) and expected in error and "\n" not in error, error
        assert rows[name]["predicted"] == "" and rows[name]["p_COVID"] == "" and rows[name]["overlay"] == ""
    # Bare ages are years; header values the standard forbids are read and said; body parts named.
    assert "PatientAge 62.0 years is outside" not in rows["a/b/IM000000"]["warning"]
    assert (
        "WindowWidth 0) is not valid" in rows["w0.dcm"]["warning"] and "RescaleSlope ''" in rows["slope.dcm"]["warning"]
    )
    assert rows["hand.dcm"]["warning"] == "BodyPartExamined HAND is not CHEST"
    assert "ViewPosition LL is not a frontal view (PA or AP)" in rows["lateral.dcm"]["warning"]
    assert "Modality MR" in rows["mr.dcm"]["warning"] and "RescaleIntercept" not in rows["mr.dcm"]["warning"]
    # A folder model was not judged by the release gate and has no operating point: its rows say so.
    assert {rows[name]["release"] for name in good} == {Decision().release}
    assert {rows[name]["decision"] for name in good} == {""}
    # Two equal base names, two overlays, each named in its row.
    overlays = {rows[name]["overlay"] for name in good}
    assert len(overlays) == len(good) and all(Path(overlay).is_file() for overlay in overlays)
    assert rows["p2/view1_frontal.jpg"]["overlay"] == str(tmp_path / "gradcam" / "p2" / "view1_frontal.jpg.gradcam.png")
    printed = capsys.readouterr().out
    assert f"{len(good) + len(bad)} file(s), {len(good)} predicted" in printed and f"{len(bad)} failed" in printed


def test_a_bare_patient_age_is_checked_like_a_coded_one(tmp_path, chest, model_folder):
    model, spec = load_model(model_folder)
    values = chest.astype(np.uint16) * 257
    sources = [write_dicom(tmp_path / f"{age}.dcm", values, age=age) for age in ("062Y", "62", "4", "004Y", "abc")]
    table = predict_sources(model, spec, sources, batch_size=8)
    warnings = dict(zip(table["path"].map(lambda path: Path(path).stem), table["warning"]))
    assert warnings["062Y"] == warnings["62"] == ""
    assert warnings["4"] == warnings["004Y"] != "" and "PatientAge 4.0 years is outside" in warnings["4"]
    assert warnings["abc"] == "PatientAge 'abc' cannot be read (expected e.g. 062Y); its age is not checked"


def test_a_model_or_grad_cam_failure_stays_in_the_rows_of_its_batch(tmp_path, chest, model_folder):
    """A model that cannot take the batch (here: a spec saying 48 px for a 32 px model) fails its rows,
    one line each; a Grad-CAM that fails (a layer the model lacks) leaves the predictions standing."""
    from dataclasses import replace

    model, spec = load_model(model_folder)
    paths = [tmp_path / "a.png", tmp_path / "b.png"]
    for path in paths:
        path.write_bytes(encode(chest, "png"))
    broken = predict_sources(model, replace(spec, image_size=48), paths, batch_size=8)
    assert broken["predicted"].isna().all()
    assert all(
        error.startswith(f"{path}: the model failed on the batch of this file (") and "\n" not in error
        for path, error in zip(paths, broken["error"])
    )
    explainer = predict.Explainer(
        tmp_path / "gradcam", "vgg16", 8, [str(path) for path in paths], CLASSES, "no_such_layer"
    )
    explained = predict_sources(model, spec, paths, batch_size=8, explain=explainer)
    assert (explained["error"] == "").all() and set(explained["predicted"]) <= set(CLASSES)
    assert all(warning.startswith("Grad-CAM overlay not written (") for warning in explained["warning"])
    assert (explained["overlay"] == "").all()


def test_an_unexpected_error_is_a_row_not_a_crash(tmp_path, chest, model_folder, monkeypatch, caplog):
    """Whatever a decoder raises (here a MemoryError and a bare RuntimeError from deep inside pydicom)
    stays in its row, as one line; the traceback goes to the log."""
    from cxr.data import dicom

    model, spec = load_model(model_folder)
    real = dicom.read_dicom

    def failing(data, name, **limits):
        if name.endswith("memory.dcm"):
            raise MemoryError()
        if name.endswith("plugin.dcm"):
            raise RuntimeError("decoder failed\n  at <_io.BytesIO object at 0x7f00aa>")
        return real(data, name, **limits)

    monkeypatch.setattr(dicom, "read_dicom", failing)
    values = chest.astype(np.uint16) * 257
    sources = [write_dicom(tmp_path / name, values) for name in ("memory.dcm", "plugin.dcm", "fine.dcm")]
    table = predict_sources(model, spec, sources, batch_size=8)
    assert list(table["error"]) == [
        f"{sources[0]}: out of memory while decoding it; lower the limits or free memory",
        f"{sources[1]}: cannot be read (RuntimeError: decoder failed at BytesIO)",
        "",
    ]
    assert "Traceback" in caplog.text and "plugin.dcm" in caplog.text


# --- the served model ---------------------------------------------------------------------------------


def strict_json(text: str):
    """Parse as browsers, Node and most Java/Go parsers do: NaN and Infinity are not JSON."""

    def refuse(constant):
        raise ValueError(f"not JSON: {constant}")

    return json.loads(text, parse_constant=refuse)


@pytest.fixture(scope="module")
def served(tmp_path_factory, model_folder):
    """`mlflow models serve` of the pyfunc as the pipeline logs it (models from code), at most 5 rows per
    request and 1 MB per file through MLflow's model config."""
    import mlflow.pyfunc
    from conftest import serve_model, stage_env

    from cxr.serve import pyfunc

    folder = tmp_path_factory.mktemp("served")
    mlflow.pyfunc.save_model(
        folder / "pyfunc",
        python_model=str(Path(pyfunc.__file__).with_name("model_code.py")),
        artifacts={"model": str(model_folder)},
        signature=pyfunc.signature(CLASSES),
        model_config=pyfunc.SERVING_LIMITS,
    )
    env = stage_env(
        MLFLOW_PYFUNC_INFERENCE_CONFIG=json.dumps({"max_rows": 5, "max_file_bytes": 1_000_000}),
        PATH=f"{Path(os.sys.executable).parent}:{os.environ['PATH']}",
    )
    with serve_model(str(folder / "pyfunc"), folder, env) as url:
        yield url


def post(url: str, body: str | dict, content_type: str = "application/json") -> tuple[int, str]:
    import urllib.error
    import urllib.request

    data = (body if isinstance(body, str) else json.dumps(body)).encode()
    request = urllib.request.Request(f"{url}/invocations", data=data, headers={"Content-Type": content_type})
    try:
        with urllib.request.urlopen(request, timeout=120) as answer:
            return answer.status, answer.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def test_every_mlflow_input_format_is_answered_row_by_row(served, chest):
    png = base64.b64encode(encode(chest, "png")).decode()
    wrapped = base64.encodebytes(encode(chest, "jpeg")).decode()  # base64 with line breaks, as many tools write it
    bodies = {
        "dataframe_split": {"dataframe_split": {"columns": ["image"], "data": [[png], [wrapped]]}},
        "dataframe_records": {"dataframe_records": [{"image": png}, {"image": wrapped}]},
        "instances": {"instances": [{"image": png}, {"image": wrapped}]},
        "instances as a list": {"instances": [png, wrapped]},
        "inputs": {"inputs": {"image": [png, wrapped]}},
    }
    answers = {}
    for name, body in bodies.items():
        status, text = post(served, body)
        assert status == 200, (name, text)
        answers[name] = strict_json(text)["predictions"]
        assert [row["error"] for row in answers[name]] == ["", ""], (name, answers[name])
    first = answers["dataframe_split"][0]
    assert all(rows[0]["p_COVID"] == pytest.approx(first["p_COVID"], abs=1e-6) for rows in answers.values())
    status, text = post(served, f"image\n{png}\n", "text/csv")
    assert status == 200 and strict_json(text)["predictions"][0]["p_COVID"] == pytest.approx(first["p_COVID"], abs=1e-6)


def test_a_mixed_batch_answers_200_with_one_error_per_bad_row_in_strict_json(served, chest):
    good = base64.b64encode(encode(chest, "png")).decode()
    cells = [
        good,
        base64.b64encode(pil_bytes(chest, "WEBP")).decode(),
        None,
        base64.b64encode(bomb_header_png()).decode(),
        "not base64 at all!",
        good,
    ]
    status, text = post(served, {"dataframe_split": {"columns": ["image"], "data": [[cell] for cell in cells]}})
    assert status == 200 and "NaN" not in text
    rows = strict_json(text)["predictions"]
    assert [row["error"] for row in rows] == [
        "",
        "row 1: a WebP file (whatever its name says); cxr reads PNG, JPEG and DICOM: convert it to PNG",
        "row 2: no image (null)",
        "row 3: 4,294,836,225 pixels, over the limit of 67,108,864 pixels per image (max_pixels); downscale it first",
        "row 4: text that is not base64; send the file's bytes base64-encoded",
        "row 5: over the limit of 5 rows per request (max_rows); send it in another request",
    ]
    assert rows[0]["predicted"] in CLASSES and all(
        row["p_COVID"] is None and row["predicted"] is None for row in rows[1:]
    )


def test_nulls_and_oversized_cells_are_rows_in_every_format(served, chest):
    good = base64.b64encode(encode(chest, "png")).decode()
    oversized = base64.b64encode(np.random.default_rng(0).bytes(1_500_000)).decode()
    for body in (
        {"inputs": {"image": [good, None, oversized]}},
        {"instances": [{"image": good}, {"image": None}, {"image": oversized}]},
    ):
        status, text = post(served, body)
        assert status == 200, text
        rows = strict_json(text)["predictions"]
        assert [row["error"] for row in rows] == [
            "",
            "row 1: no image (null)",
            "row 2: about 1,500,000 bytes once decoded, over the limit of 1,000,000 bytes per file (max_file_bytes)",
        ]


def test_client_errors_are_4xx_without_a_stack_trace(served):
    missing = {"dataframe_split": {"columns": ["picture"], "data": [["aGVsbG8="]]}}
    for body, content_type in (
        (missing, "application/json"),
        ("{not json", "application/json"),
        ("image\n", "text/plain"),
    ):
        status, text = post(served, body, content_type)
        assert 400 <= status < 500 and "Traceback" not in text and "stack_trace" not in text, (status, text)
    status, text = post(served, missing)
    assert "Model is missing inputs ['image']" in json.loads(text)["message"]
