"""The two installs: `make setup` (tensorflow-cpu) and `make setup TF=gpu` (tensorflow with NVIDIA's
CUDA wheels) each resolve to exactly one TensorFlow distribution and the same pinned Keras."""

import json
import subprocess
import sys

import pytest
from conftest import REPO

TENSORFLOWS = {"tensorflow", "tensorflow-cpu", "tf-nightly", "tensorflow-intel", "tensorflow-macos"}


def pins(lock: str) -> dict[str, str]:
    lines = (REPO / lock).read_text().splitlines()
    return dict(line.split("==") for line in lines if "==" in line and not line.startswith((" ", "#")))


def test_the_two_locks_differ_only_in_tensorflow_and_the_cuda_wheels():
    cpu, gpu = pins("requirements.lock"), pins("requirements-gpu.lock")
    assert TENSORFLOWS & set(cpu) == {"tensorflow-cpu"} and TENSORFLOWS & set(gpu) == {"tensorflow"}
    assert cpu["tensorflow-cpu"] == gpu["tensorflow"]
    only_gpu = set(gpu) - set(cpu)
    assert "nvidia-cudnn-cu12" in only_gpu and all(name.startswith("nvidia-") for name in only_gpu - {"tensorflow"})
    assert set(cpu) - set(gpu) == {"tensorflow-cpu"}
    assert {name: version for name, version in cpu.items() if name in gpu} == {
        name: version for name, version in gpu.items() if name in cpu
    }


@pytest.mark.slow
def test_the_gpu_install_resolves_to_one_tensorflow_with_cuda_and_the_pinned_keras(tmp_path):
    """What `make setup TF=gpu` installs, resolved by pip without installing (``--dry-run --report``,
    from the package index: wheel metadata only)."""
    report = tmp_path / "report.json"
    result = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--quiet", "--report", str(report)]
        + ["-c", str(REPO / "requirements-gpu.lock"), f"{REPO}[dev,gpu]"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    installs = json.loads(report.read_text())["install"]
    resolved = {item["metadata"]["name"].lower(): item["metadata"]["version"] for item in installs}
    assert TENSORFLOWS & set(resolved) == {"tensorflow"}, sorted(TENSORFLOWS & set(resolved))
    assert resolved["tensorflow"] == pins("requirements.lock")["tensorflow-cpu"]
    assert {"nvidia-cudnn-cu12", "nvidia-cublas-cu12", "nvidia-cuda-runtime-cu12"} <= set(resolved)
    assert resolved["keras"] == pins("requirements.lock")["keras"]
