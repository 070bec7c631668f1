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
def running(
    command: list[str],
    ready_url: str,
    *,
    cwd: Path | None = None,
    env: dict[str, str] | None = None,
    timeout: float = 180,
) -> Iterator[subprocess.Popen]:
    """Run ``command`` until the block ends; enter once ``ready_url`` answers 200. A server that
    exits or stays silent for ``timeout`` seconds raises :class:`CxrError` with its last output."""
    env = dict(os.environ if env is None else env)
    # `mlflow models serve` execs `uvicorn` by name: find the tools installed beside this Python.
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    server = subprocess.Popen(
        command, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True
    )
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
                    raise CxrError(
                        f"{' '.join(command[:3])} did not answer on {ready_url} in {timeout:.0f} s"
                    ) from None
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
    found = glob.glob(f"/usr/lib/postgresql/*/bin/{tool}")
    found.sort(key=lambda path: int(Path(path).parts[-3]) if Path(path).parts[-3].isdigit() else 0)
    program = shutil.which(tool) or (found[-1] if found else None)
    if program is None:
        raise CxrError(f"PostgreSQL's {tool} is not installed (Debian: apt-get install postgresql)")
    return program


def _run_postgres(step: str, command: list[str]) -> None:
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        raise CxrError(f"PostgreSQL: {step} failed: {(result.stderr or result.stdout)[-2000:]}")


@contextmanager
def postgresql(database: str = "mlflow") -> Iterator[str]:
    """A throwaway PostgreSQL cluster on 127.0.0.1 and a free port with ``database`` in it; yield
    its SQLAlchemy URI (driver psycopg). Run as root, the cluster belongs to the ``postgres`` user
    (initdb refuses root); it is stopped and its folder removed when the block ends."""
    as_owner = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    folder = Path(tempfile.mkdtemp(prefix="cxr-postgres-"))
    data, port = folder / "data", free_port()
    try:
        if as_owner:
            try:
                shutil.chown(folder, "postgres")
            except LookupError:
                raise CxrError(
                    "PostgreSQL as root needs the 'postgres' user (Debian's postgresql package creates it)"
                ) from None
        _run_postgres("initdb", [*as_owner, postgres_bin("initdb"), "-D", str(data), "-U", "postgres", "-A", "trust"])
        _run_postgres(
            "pg_ctl start",
            [
                *as_owner,
                postgres_bin("pg_ctl"),
                "-D",
                str(data),
                "-l",
                str(folder / "log"),
                "-w",
                "-o",
                f"-h 127.0.0.1 -p {port} -k {folder}",
                "start",
            ],
        )
        try:
            _run_postgres(
                "createdb",
                [*as_owner, postgres_bin("createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", "postgres", database],
            )
            yield f"postgresql+psycopg://postgres@127.0.0.1:{port}/{database}"
        finally:
            subprocess.run(
                [*as_owner, postgres_bin("pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop"], capture_output=True
            )
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@contextmanager
def tracking_server(backend_store_uri: str, artifacts: Path, *, workers: int = 2) -> Iterator[str]:
    """``mlflow server`` on ``backend_store_uri`` that stores and proxies artifacts (``--serve-artifacts``,
    under ``artifacts``), as README's "Working as a team" starts it; yield its URL."""
    port = free_port()
    command = mlflow_command(
        "server",
        "--backend-store-uri",
        backend_store_uri,
        "--artifacts-destination",
        str(artifacts),
        "--serve-artifacts",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        str(workers),
    )
    with running(command, f"http://127.0.0.1:{port}/health"):
        yield f"http://127.0.0.1:{port}"
