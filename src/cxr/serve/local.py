"""A local server for a while: `mlflow models serve`, `mlflow ui`, or a team's tracking server.

Used by the serving and team tests, the benches and the screenshot script: each starts the server
in its own process group on 127.0.0.1 and a free port, waits until a URL answers, and stops the
group (led by the server's own pid) when done, so no worker outlives it. ``postgresql`` runs a
private PostgreSQL cluster in a scratch folder, the back end of ``tracking_server`` (README,
"Working as a team").
"""

from __future__ import annotations

import glob
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
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


def postgres_bin(tool: str) -> str:
    """A PostgreSQL server program (Debian keeps them off PATH, under /usr/lib/postgresql/<v>/bin)."""
    found = shutil.which(tool) or next(iter(sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{tool}"), reverse=True)), None)
    if found is None:
        raise CxrError(f"PostgreSQL's {tool} is not installed (Debian: apt-get install postgresql)")
    return found


@contextmanager
def postgresql(database: str = "mlflow") -> Iterator[str]:
    """A throwaway PostgreSQL cluster on 127.0.0.1 and a free port with ``database`` in it; yield
    its SQLAlchemy URI. Run as root, the cluster belongs to the ``postgres`` user (initdb refuses
    root); it is stopped and its folder removed when the block ends."""
    as_owner = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    folder = Path(tempfile.mkdtemp(prefix="cxr-postgres-"))
    if as_owner:
        shutil.chown(folder, "postgres")
    data, port = folder / "data", free_port()
    try:
        subprocess.run([*as_owner, postgres_bin("initdb"), "-D", str(data), "-U", "postgres", "-A", "trust"],
                       check=True, capture_output=True, text=True)
        subprocess.run([*as_owner, postgres_bin("pg_ctl"), "-D", str(data), "-l", str(folder / "log"), "-w",
                        "-o", f"-h 127.0.0.1 -p {port} -k {folder}", "start"], check=True, capture_output=True, text=True)
        try:
            subprocess.run([*as_owner, postgres_bin("createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", "postgres",
                            database], check=True, capture_output=True, text=True)
            yield f"postgresql://postgres@127.0.0.1:{port}/{database}"
        finally:
            subprocess.run([*as_owner, postgres_bin("pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop"],
                           capture_output=True)
    except subprocess.CalledProcessError as exc:
        raise CxrError(f"PostgreSQL: {' '.join(exc.cmd[len(as_owner):][:2])} failed: {exc.stderr[-2000:]}") from None
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@contextmanager
def tracking_server(backend_store_uri: str, artifacts: Path, *, workers: int = 2) -> Iterator[str]:
    """``mlflow server`` on ``backend_store_uri`` that stores and proxies artifacts (``--serve-artifacts``,
    under ``artifacts``), as README's "Working as a team" starts it; yield its URL."""
    port = free_port()
    command = mlflow_command("server", "--backend-store-uri", backend_store_uri, "--artifacts-destination",
                             str(artifacts), "--serve-artifacts", "--host", "127.0.0.1", "--port", str(port),
                             "--workers", str(workers))
    with running(command, f"http://127.0.0.1:{port}/health"):
        yield f"http://127.0.0.1:{port}"
