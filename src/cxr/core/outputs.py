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
from typing import Any

import pandas as pd


def write_text(path: Path, text: str) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as stream:
            stream.write(text)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return path


def write_json(path: Path, data: Any) -> Path:
    return write_text(path, json.dumps(data, indent=2, sort_keys=False, default=_plain) + "\n")


def write_csv(path: Path, frame: pd.DataFrame) -> Path:
    return write_text(path, frame.to_csv(index=False, lineterminator="\n"))


def _plain(value: Any) -> Any:
    """numpy scalars and paths as JSON values."""
    if hasattr(value, "item"):
        return value.item()
    return str(value)


@contextmanager
def staged_directory(final: Path) -> Iterator[Path]:
    """Yield an empty sibling directory that replaces ``final`` only if the block succeeds.

    A failure removes the staging directory and leaves any earlier ``final`` untouched, so a
    failed stage never leaves a half-extracted tree that looks like data.
    """
    final.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{final.name}.", dir=final.parent))
    try:
        yield staging
        if final.exists():
            shutil.rmtree(final)
        os.replace(staging, final)
    finally:
        if staging.exists():
            shutil.rmtree(staging)


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
