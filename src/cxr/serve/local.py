"""A local server for a while: `mlflow models serve` or `mlflow ui` on 127.0.0.1, a free port.

Used by the serving test, the latency bench and the screenshot script: each starts the server in
its own process group, waits until a URL answers, and stops the group (led by the server's own
pid) when done, so no worker outlives it.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from cxr.core.errors import CxrError


def free_port() -> int:
    """A port free on 127.0.0.1 now (the OS picks it)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextmanager
def running(command: list[str], ready_url: str, *, cwd: Path | None = None, env: dict[str, str] | None = None,
            timeout: float = 180) -> Iterator[subprocess.Popen]:
    """Run ``command`` until the block ends; enter once ``ready_url`` answers 200. A server that
    exits or stays silent for ``timeout`` seconds raises :class:`CxrError` with its last output."""
    env = dict(os.environ if env is None else env)
    # `mlflow models serve` execs `uvicorn` by name: find the tools installed beside this Python.
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    server = subprocess.Popen(command, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                              text=True, start_new_session=True)
    try:
        deadline = time.monotonic() + timeout
        while True:
            if server.poll() is not None:
                raise CxrError(f"{command[0]} {command[1]} exited: {server.stderr.read()[-3000:]}")
            try:
                with urllib.request.urlopen(ready_url, timeout=5) as answer:
                    if answer.status == 200:
                        break
            except OSError:
                if time.monotonic() > deadline:
                    raise CxrError(f"{' '.join(command[:3])} did not answer on {ready_url} "
                                   f"in {timeout:.0f} s") from None
                time.sleep(1)
        yield server
    finally:
        if server.poll() is None:
            os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)


def mlflow_command(*arguments: str) -> list[str]:
    """The ``mlflow`` executable next to this Python, with ``arguments``."""
    return [str(Path(sys.executable).parent / "mlflow"), *arguments]
