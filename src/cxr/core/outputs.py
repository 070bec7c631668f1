"""Writing stage outputs so that a failure never leaves a file that looks valid, and the same
content always gives the same bytes.

Each writer goes to a temporary sibling and renames it into place, which is atomic on one
file system: readers (and DVC) see the old file or the complete new one, never a partial one.
Nothing written embeds a time or a random id: DVC hashes outputs, and a new hash for the same
content would rerun every stage downstream.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import zipfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

import pandas as pd


def write_text(path: Path, text: str) -> Path:
    """Write ``text`` to ``path`` atomically.

    An operating-system error (a full disk) is raised as an OSError naming ``path``, with nothing
    left behind.

    Parameters
    ----------
    path : Path
        The file to write.
    text : str
        Its content.

    Returns
    -------
    Path
        ``path``.

    Raises
    ------
    OSError
        When the file cannot be written; ``path`` is left as it was.
    """
    with replacing(path, "w") as stream:
        stream.write(text)
    return Path(path)


@contextmanager
def replacing(path: Path, mode: str = "wb") -> Iterator[IO]:
    """A stream (opened with ``mode``, ``"w"`` or ``"wb"``) to a temporary sibling of ``path`` that
    replaces ``path`` when the block ends without error; on any error the temporary file is
    removed and ``path`` keeps what it held. An OSError (a full disk) is raised naming ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(handle, mode, **({} if "b" in mode else {"encoding": "utf-8"})) as stream:
            yield stream
        os.replace(temporary, path)
    except OSError as exc:
        Path(temporary).unlink(missing_ok=True)
        raise OSError(exc.errno, exc.strerror, str(path)) from None
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def write_json(path: Path, data: Any) -> Path:
    """Write ``data`` to ``path`` as indented JSON atomically, keys in their order.

    NumPy scalars are written as their values, other values JSON does not know (paths) as text.

    Parameters
    ----------
    path : Path
        The file to write.
    data : Any
        The JSON-able data.

    Returns
    -------
    Path
        ``path``.

    Raises
    ------
    OSError
        An operating-system error (a full disk), naming ``path`` (:func:`write_text`).
    """
    return write_text(path, json.dumps(data, indent=2, sort_keys=False, default=_plain) + "\n")


def write_csv(path: Path, frame: pd.DataFrame) -> Path:
    """Write ``frame`` to ``path`` as CSV atomically, without its index, with LF line ends.

    Parameters
    ----------
    path : Path
        The file to write.
    frame : pandas.DataFrame
        The table.

    Returns
    -------
    Path
        ``path``.

    Raises
    ------
    OSError
        An operating-system error (a full disk), naming ``path`` (:func:`write_text`).
    """
    return write_text(path, frame.to_csv(index=False, lineterminator="\n"))


def _plain(value: Any) -> Any:
    """numpy scalars and paths as JSON values."""
    if hasattr(value, "item"):
        return value.item()
    return str(value)


# Staging folders are named after the process that writes them, so a later run can tell the debris
# of a killed one (SIGKILL, power loss) from a stage writing now, and remove it.
STAGING_PREFIX = ".staging-"


@contextmanager
def staged_directory(final: Path) -> Iterator[Path]:
    """Yield an empty sibling directory that replaces ``final`` only if the block succeeds.

    A failure removes the staging directory and leaves any earlier ``final`` untouched, so a
    failed stage never leaves a half-extracted tree that looks like data.

    Parameters
    ----------
    final : Path
        The directory to create or replace.

    Yields
    ------
    Path
        The staging directory, next to ``final``.
    """
    with _staging(final.parent, final.name) as staging:
        yield staging
        if final.exists():
            shutil.rmtree(final)
        os.replace(staging, final)


@contextmanager
def output_set(folder: Path) -> Iterator[Path]:
    """Yield an empty staging folder for outputs that belong together (a stage's reports).

    Write each output under its name relative to ``folder``. Only if the block succeeds does every
    top-level entry replace its namesake in ``folder`` (renames only, so nothing can fail half-way for
    lack of space); on any failure (an error, a full disk, a signal) ``folder`` is as it was. Entries
    of ``folder`` the block does not write (another stage's outputs) are left alone.

    Parameters
    ----------
    folder : Path
        The folder the outputs belong in.

    Yields
    ------
    Path
        The staging folder.
    """
    with _staging(folder, folder.name) as staging:
        yield staging
        for entry in sorted(staging.iterdir()):
            target = folder / entry.name
            if target.is_dir() and not target.is_symlink():
                shutil.rmtree(target)
            os.replace(entry, target)


@contextmanager
def _staging(parent: Path, name: str) -> Iterator[Path]:
    parent.mkdir(parents=True, exist_ok=True)
    remove_stale_staging(parent)
    staging = Path(tempfile.mkdtemp(prefix=f"{STAGING_PREFIX}{os.getpid()}-{name}.", dir=parent))
    try:
        yield staging
    finally:
        if staging.exists():
            shutil.rmtree(staging)


def remove_stale_staging(parent: Path) -> list[Path]:
    """Remove the staging folders under ``parent`` whose writing process no longer exists; return them."""
    removed = []
    for entry in sorted(parent.glob(f"{STAGING_PREFIX}*")):
        pid = entry.name[len(STAGING_PREFIX) :].split("-", 1)[0]
        if pid.isdigit() and not process_exists(int(pid)):
            shutil.rmtree(entry, ignore_errors=True)
            removed.append(entry)
    return removed


def process_exists(pid: int) -> bool:
    """Whether a process with this id exists on this machine."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


FIXED_ZIP_TIME = (1980, 1, 1, 0, 0, 0)


def make_zip_reproducible(path: Path, *, rewrite_json: dict[str, Callable[[Any], Any]] | None = None) -> Path:
    """Rewrite the zip at ``path`` in place with fixed member times, keeping the members' order
    and compression; JSON members named in ``rewrite_json`` go through their function first
    (to drop a save date, or renumber ids taken from memory addresses)."""
    rewrite_json = rewrite_json or {}
    with zipfile.ZipFile(path) as archive:
        members = [(info, archive.read(info)) for info in archive.infolist()]
    temporary = path.with_name(f".{path.name}.reproducible")
    try:
        with zipfile.ZipFile(temporary, "w") as archive:
            for info, data in members:
                if info.filename in rewrite_json:
                    data = json.dumps(rewrite_json[info.filename](json.loads(data))).encode()
                fixed = zipfile.ZipInfo(info.filename, date_time=FIXED_ZIP_TIME)
                fixed.compress_type = info.compress_type
                fixed.external_attr = 0o644 << 16
                archive.writestr(fixed, data)
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)
    return path
