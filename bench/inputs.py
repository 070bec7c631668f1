"""Memory and latency at the input limits: what the largest accepted file and hostile ones cost.

    python bench/inputs.py [--backbone xception] [--size 96] [--requests 120]

1. Peak memory (max RSS) of ``cxr-predict`` on one ordinary X-ray (1500 px), on the largest file the
   limits accept (an 8192 x 8192 PNG and an 8192 x 8192 16-bit DICOM), and on refused ones (a PNG
   header claiming 65535 x 65535 px, a deflated DICOM inflating past the limit).
2. The served model (`mlflow models serve`, the pyfunc as the pipeline logs it, default limits
   except ``max_file_bytes`` lowered to 64 MiB so that a file over it can be sent repeatedly): the
   server's peak memory (sum of VmHWM over its process group) after 4 clients each send the
   8192 x 8192 PNG at once, and the p50/p95 latency of 4 clients sending one ordinary X-ray per
   request, alone and while a fifth client keeps sending oversized files (a 12000 x 12000 PNG over
   the pixel limit, a PNG header claiming 65535 x 65535 px, a 70 MiB file over the size limit) and
   the largest accepted PNG, in turn.
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import os
import struct
import subprocess
import sys
import tempfile
import threading
import urllib.request
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import mlflow.pyfunc  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pydicom  # noqa: E402
from common import Timer, save  # noqa: E402
from PIL import Image  # noqa: E402
from pydicom.dataset import Dataset, FileMetaDataset  # noqa: E402
from pydicom.uid import DeflatedExplicitVRLittleEndian, ExplicitVRLittleEndian, SecondaryCaptureImageStorage  # noqa: E402

from cxr.core import backbones  # noqa: E402
from cxr.core.sections import Head  # noqa: E402
from cxr.core.spec import ModelSpec  # noqa: E402
from cxr.data.image_files import DEFAULT_LIMITS  # noqa: E402
from cxr.learn.model import build_classifier  # noqa: E402
from cxr.learn.model_files import save_model  # noqa: E402
from cxr.serve import pyfunc  # noqa: E402
from cxr.serve.local import free_port, mlflow_command, running  # noqa: E402

CLASSES = ["BACTERIA", "COVID", "NORMAL", "VIRAL"]
SIDE = int(DEFAULT_LIMITS.max_pixels**0.5)  # 8192: the largest square image the limits accept
SERVED_MAX_FILE_BYTES = 64 * 2**20


def grey(side: int, seed: int = 0) -> np.ndarray:
    """A smooth grey image with a little noise (compresses like a radiograph, not like zeros)."""
    rng = np.random.default_rng(seed)
    ramp = np.add.outer(np.linspace(0, 150, side), np.linspace(0, 90, side))
    return (ramp + rng.integers(0, 12, (side, side))).astype(np.uint8)


def png_bytes(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


def dicom_file(path: Path, values: np.ndarray, syntax=ExplicitVRLittleEndian) -> Path:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = SecondaryCaptureImageStorage, "1.2.3.4"
    meta.TransferSyntaxUID = syntax
    dataset = Dataset()
    dataset.file_meta = meta
    dataset.Modality, dataset.ViewPosition = "DX", "PA"
    dataset.Rows, dataset.Columns = values.shape
    dataset.SamplesPerPixel, dataset.PhotometricInterpretation = 1, "MONOCHROME2"
    dataset.BitsAllocated, dataset.BitsStored, dataset.HighBit, dataset.PixelRepresentation = 16, 16, 15, 0
    dataset.PixelData = values.astype(np.uint16).tobytes()
    dataset.save_as(path, enforce_file_format=True)
    return path


def bomb_header() -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", struct.pack(">IIBBBBB", 65535, 65535, 8, 0, 0, 0, 0))
        + chunk(b"IDAT", zlib.compress(b"\x00" * 64))
        + chunk(b"IEND", b"")
    )


def predict_peak(model: Path, file: Path, work: Path) -> dict:
    """Max RSS (MiB) and seconds of one `cxr-predict` process on ``file``."""
    cxr_predict = Path(sys.executable).with_name("cxr-predict")
    with Timer() as timer:
        done = subprocess.run(
            [
                "/usr/bin/time",
                "-f",
                "%M",
                str(cxr_predict),
                str(file),
                "--model",
                str(model),
                "--output",
                str(work / "out.csv"),
            ],
            capture_output=True,
            text=True,
        )
    row = pd.read_csv(work / "out.csv", keep_default_na=False).iloc[0]
    return {
        "file": file.name,
        "bytes": file.stat().st_size,
        "peak_mib": int(done.stderr.strip().splitlines()[-1]) / 1024,
        "seconds": timer.seconds,
        "error": row["error"],
    }


def group_peak_mib(leader: int) -> float:
    """Sum of the peak resident sizes (VmHWM) of every process in ``leader``'s process group."""
    total = 0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if os.getpgid(int(entry.name)) != leader:
                continue
            status = (entry / "status").read_text()
        except (OSError, ProcessLookupError):
            continue
        total += int(status.split("VmHWM:")[1].split()[0])
    return total / 1024


def post(port: int, body: bytes) -> tuple[float, dict]:
    request = urllib.request.Request(f"http://127.0.0.1:{port}/invocations", body, {"Content-Type": "application/json"})
    with Timer() as timer, urllib.request.urlopen(request, timeout=600) as answer:
        answer_json = json.loads(answer.read())
    return timer.seconds, answer_json


def body(*files: bytes) -> bytes:
    return json.dumps(
        {"dataframe_split": {"columns": ["image"], "data": [[base64.b64encode(data).decode()] for data in files]}}
    ).encode()


def served(model: Path, work: Path, ordinary: bytes, largest: bytes, requests: int, clients: int) -> dict:
    logged = work / "pyfunc"
    mlflow.pyfunc.save_model(
        logged,
        python_model=str(Path(pyfunc.__file__).with_name("model_code.py")),
        artifacts={"model": str(model)},
        signature=pyfunc.signature(CLASSES),
        model_config=pyfunc.SERVING_LIMITS,
    )
    port = free_port()
    command = mlflow_command(
        "models", "serve", "-m", str(logged), "--env-manager", "local", "--host", "127.0.0.1", "--port", str(port)
    )
    small, large = body(ordinary), body(largest)
    hostile = [
        body(png_bytes(np.zeros((12000, 12000), np.uint8))),
        body(bomb_header()),
        body(np.random.default_rng(0).bytes(SERVED_MAX_FILE_BYTES + 6 * 2**20)),
        large,
    ]
    result = {}
    env = {**os.environ, "MLFLOW_PYFUNC_INFERENCE_CONFIG": json.dumps({"max_file_bytes": SERVED_MAX_FILE_BYTES})}
    with running(command, f"http://127.0.0.1:{port}/ping", env=env) as server:
        post(port, small)
        result["idle_peak_mib"] = group_peak_mib(server.pid)
        with ThreadPoolExecutor(4) as pool:
            answers = list(pool.map(lambda _: post(port, large), range(4)))
        result["four_largest_at_once"] = {
            "peak_mib": group_peak_mib(server.pid),
            "seconds": max(seconds for seconds, _ in answers),
            "errors": [answer["predictions"][0]["error"] for _, answer in answers],
        }

        def latencies() -> list[float]:
            with ThreadPoolExecutor(clients) as pool:
                return [seconds for seconds, _ in pool.map(lambda _: post(port, small), range(requests))]

        alone = latencies()
        stop, sent = threading.Event(), []

        def attacker() -> None:
            while not stop.is_set():
                seconds, answer = post(port, hostile[len(sent) % len(hostile)])
                sent.append((seconds, answer["predictions"][0]["error"]))

        thread = threading.Thread(target=attacker)
        thread.start()
        try:
            attacked = latencies()
        finally:
            stop.set()
            thread.join()
        result["peak_mib_after_all"] = group_peak_mib(server.pid)
    for name, seconds in (("alone", alone), ("with_oversized_client", attacked)):
        result[name] = {"p50_s": float(np.percentile(seconds, 50)), "p95_s": float(np.percentile(seconds, 95))}
    result["oversized_requests_sent"] = len(sent)
    result["oversized_answers"] = sorted({error[:90] for _, error in sent})
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", default="xception", choices=list(backbones.BACKBONES))
    parser.add_argument("--size", type=int, default=96)
    parser.add_argument("--requests", type=int, default=120)
    parser.add_argument("--clients", type=int, default=4)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="cxr-bench-inputs-") as work:
        work = Path(work)
        model = work / "model"
        spec = ModelSpec(
            backbone=args.backbone,
            image_size=args.size,
            classes=CLASSES,
            task="multiclass",
            weights=None,
            views=["PA"],
            ages=None,
        )
        save_model(
            build_classifier(
                backbones.get(args.backbone),
                args.size,
                len(CLASSES),
                Head(units=256, dropout=0.5, normalize=False),
                None,
            ),
            model,
            spec,
            pd.DataFrame({"epoch": [0]}),
        )
        files = {
            "ordinary.png": png_bytes(grey(1500)),
            "largest.png": png_bytes(grey(SIDE)),
            "bomb_header.png": bomb_header(),
        }
        for name, data in files.items():
            (work / name).write_bytes(data)
        dicom_file(work / "largest.dcm", grey(SIDE).astype(np.uint16) * 257)
        dicom_file(work / "inflates.dcm", np.zeros((SIDE + 2048, SIDE + 2048)), DeflatedExplicitVRLittleEndian)
        assert pydicom.dcmread(work / "inflates.dcm", stop_before_pixels=True).Rows == SIDE + 2048
        results = {
            "limits": {"max_file_bytes": DEFAULT_LIMITS.max_file_bytes, "max_pixels": DEFAULT_LIMITS.max_pixels},
            "cxr_predict": [],
        }
        for name in ("ordinary.png", "largest.png", "largest.dcm", "bomb_header.png", "inflates.dcm"):
            row = predict_peak(model, work / name, work)
            results["cxr_predict"].append(row)
            print(
                f"cxr-predict {name} ({row['bytes'] / 2**20:.1f} MiB): peak {row['peak_mib']:.0f} MiB, "
                f"{row['seconds']:.1f} s, error: {row['error'] or '-'}"
            )
        results["served"] = served(
            model, work, files["ordinary.png"], files["largest.png"], args.requests, args.clients
        )
    server = results["served"]
    print(
        f"served: idle peak {server['idle_peak_mib']:.0f} MiB; 4 clients x one {SIDE} x {SIDE} PNG at once: "
        f"peak {server['four_largest_at_once']['peak_mib']:.0f} MiB, "
        f"{server['four_largest_at_once']['seconds']:.1f} s, "
        f"errors {server['four_largest_at_once']['errors']}"
    )
    print(
        f"served: {args.clients} clients, one 1500 px PNG per request: p50 {server['alone']['p50_s'] * 1000:.0f} ms, "
        f"p95 {server['alone']['p95_s'] * 1000:.0f} ms alone; p50 "
        f"{server['with_oversized_client']['p50_s'] * 1000:.0f} ms, p95 "
        f"{server['with_oversized_client']['p95_s'] * 1000:.0f} ms while a fifth client sent "
        f"{server['oversized_requests_sent']} oversized requests; peak {server['peak_mib_after_all']:.0f} MiB"
    )
    save(f"inputs_{args.backbone}_{args.size}", "python " + " ".join(sys.argv), vars(args), results)


if __name__ == "__main__":
    main()
