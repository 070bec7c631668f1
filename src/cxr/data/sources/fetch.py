"""Getting an upstream archive onto disk safely: stream, retry, verify, extract, manifest.

Every source goes through these functions, real or synthetic, so the code that guards
against truncated downloads, zip-slip and silent upstream changes is the code the tests run.
"""

from __future__ import annotations

import hashlib
import stat
import time
import urllib.parse
import zipfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import requests
from tqdm import tqdm

from cxr.core.errors import CxrError
from cxr.core.sections import Download

CHUNK = 1 << 20
MANIFEST = "MANIFEST.sha256"


class FetchError(CxrError, RuntimeError):
    """A download, checksum or archive problem; the message names the URL, file or member."""


@dataclass(frozen=True)
class Limits:
    """Bounds that stop a hostile or broken archive from filling the disk."""

    max_archive_bytes: int
    max_member_bytes: int
    max_total_bytes: int


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def download(
    url: str,
    dest: Path,
    *,
    sha256: str | None,
    retries: int,
    timeout_s: float,
    max_bytes: int,
) -> Path:
    """Fetch ``url`` (http, https or file) to ``dest`` and check its sha256 when one is pinned.

    The bytes land in a temporary file next to ``dest`` and are renamed only once complete and
    verified, so an interrupted or mismatched download never looks like a good archive.
    """
    dest.parent.mkdir(parents=True, exist_ok=True)
    partial = dest.with_name(dest.name + ".part")
    scheme = urllib.parse.urlparse(url).scheme
    try:
        if scheme == "file":
            _copy_local(url, partial, max_bytes)
        elif scheme in ("http", "https"):
            _download_http(url, partial, retries=retries, timeout_s=timeout_s, max_bytes=max_bytes)
        else:
            raise FetchError(f"{url}: unsupported URL scheme {scheme!r}; use http(s):// or file://")
        if sha256 is not None:
            actual = sha256_file(partial)
            if actual != sha256.lower():
                raise FetchError(
                    f"{url}: checksum mismatch: expected sha256 {sha256}, got {actual}. "
                    "The upstream archive changed or the download is corrupt; nothing was kept."
                )
        partial.replace(dest)
    finally:
        partial.unlink(missing_ok=True)
    return dest


def fetch_archive(url: str, scratch: Path, sha256: str | None, settings: Download) -> Path:
    """Download ``url`` into ``scratch`` under the name its path ends with, checked as :func:`download` does."""
    archive = scratch / Path(urllib.parse.urlparse(url).path).name
    download(
        url,
        archive,
        sha256=sha256,
        retries=settings.retries,
        timeout_s=settings.timeout_s,
        max_bytes=settings.max_archive_bytes,
    )
    return archive


def _copy_local(url: str, partial: Path, max_bytes: int) -> None:
    source = Path(urllib.parse.unquote(urllib.parse.urlparse(url).path))
    if not source.is_file():
        raise FetchError(f"{url}: no such file {source}")
    size = source.stat().st_size
    if size > max_bytes:
        raise FetchError(f"{url}: {size} bytes exceeds download.max_archive_bytes={max_bytes}")
    with open(source, "rb") as reader, open(partial, "wb") as writer, _progress(size, source.name) as bar:
        for chunk in iter(lambda: reader.read(CHUNK), b""):
            writer.write(chunk)
            bar.update(len(chunk))


def _download_http(url: str, partial: Path, *, retries: int, timeout_s: float, max_bytes: int) -> None:
    """Stream with retries; a body shorter than Content-Length counts as a failed attempt."""
    last_error: Exception | None = None
    for attempt in range(retries + 1):
        if attempt:
            time.sleep(min(2 ** (attempt - 1), 30) * 0.5)
        try:
            with requests.get(url, stream=True, timeout=timeout_s) as response:
                if response.status_code >= 500 or response.status_code == 429:
                    raise FetchError(f"{url}: HTTP {response.status_code}")
                if response.status_code >= 400:
                    raise _Fatal(f"{url}: HTTP {response.status_code} {response.reason}")
                expected = int(response.headers.get("Content-Length", 0)) or None
                if expected and expected > max_bytes:
                    raise _Fatal(f"{url}: {expected} bytes exceeds download.max_archive_bytes={max_bytes}")
                received = 0
                with open(partial, "wb") as writer, _progress(expected, Path(url).name) as bar:
                    for chunk in response.iter_content(CHUNK):
                        received += len(chunk)
                        if received > max_bytes:
                            raise _Fatal(f"{url}: more than download.max_archive_bytes={max_bytes} bytes")
                        writer.write(chunk)
                        bar.update(len(chunk))
                if expected is not None and received != expected:
                    raise FetchError(f"{url}: truncated download, {received} of {expected} bytes")
                return
        except _Fatal as exc:
            raise FetchError(str(exc)) from None
        except (requests.RequestException, FetchError) as exc:
            last_error = exc
    raise FetchError(f"{url}: download failed after {retries + 1} attempts: {last_error}")


class _Fatal(Exception):
    """An HTTP failure that retrying cannot fix (4xx, size limit)."""


def _progress(total: int | None, name: str) -> tqdm:
    return tqdm(total=total, unit="B", unit_scale=True, desc=f"download {name}", leave=False, disable=None)


def safe_extract(
    archive: Path,
    target: Path,
    *,
    select: Callable[[PurePosixPath], PurePosixPath | None],
    limits: Limits,
    origin: str | None = None,
) -> list[PurePosixPath]:
    """Extract the members ``select`` maps to a path (None skips one) into ``target``.

    Refuses, naming the member, entries that are absolute or climb out with ``..``, symlinks,
    and members or totals above ``limits``. Every member's CRC is checked while reading, so a
    truncated or corrupt archive is an error, not a short data set. Errors name ``origin`` (the URL
    the archive came from) when given, not the scratch file it was saved to.
    """
    label = origin or str(archive)
    try:
        zip_file = zipfile.ZipFile(archive)
    except (zipfile.BadZipFile, OSError) as exc:
        raise FetchError(f"{label}: not a readable zip archive (truncated or corrupt?): {exc}") from None
    written: list[PurePosixPath] = []
    total = 0
    root = target.resolve()
    with zip_file:
        for info in zip_file.infolist():
            name = PurePosixPath(info.filename)
            _check_member(label, info, name)
            if info.is_dir():
                continue
            relative = select(name)
            if relative is None:
                continue
            destination = (root / relative).resolve()
            if not destination.is_relative_to(root):
                raise FetchError(f"{label}: member {info.filename!r} would extract outside {target}")
            if info.file_size > limits.max_member_bytes:
                raise FetchError(
                    f"{label}: member {info.filename!r} is {info.file_size} bytes, above "
                    f"download.max_member_bytes={limits.max_member_bytes}"
                )
            total += info.file_size
            if total > limits.max_total_bytes:
                raise FetchError(f"{label}: extracted size exceeds download.max_total_bytes={limits.max_total_bytes}")
            destination.parent.mkdir(parents=True, exist_ok=True)
            try:
                with zip_file.open(info) as reader, open(destination, "wb") as writer:
                    copied = _copy_bounded(reader, writer, info.file_size)
            except (zipfile.BadZipFile, EOFError, OSError, zlib.error) as exc:
                raise FetchError(f"{label}: member {info.filename!r} is corrupt or truncated: {exc}") from None
            if copied != info.file_size:
                raise FetchError(f"{label}: member {info.filename!r} is truncated")
            written.append(relative)
    return written


def _check_member(label: str, info: zipfile.ZipInfo, name: PurePosixPath) -> None:
    if name.is_absolute() or ".." in name.parts or "\\" in info.filename or ":" in name.parts[0]:
        raise FetchError(f"{label}: unsafe member path {info.filename!r} (absolute or '..'); refusing to extract")
    mode = info.external_attr >> 16
    if stat.S_ISLNK(mode):
        raise FetchError(f"{label}: member {info.filename!r} is a symbolic link; refusing to extract")


def _copy_bounded(reader, writer, declared: int) -> int:
    """Copy at most ``declared`` bytes: a member that inflates past its header is refused."""
    copied = 0
    for chunk in iter(lambda: reader.read(CHUNK), b""):
        copied += len(chunk)
        if copied > declared:
            raise OSError(f"inflates past its declared {declared} bytes")
        writer.write(chunk)
    return copied


def write_manifest(directory: Path) -> str:
    """Write ``MANIFEST.sha256`` (``sha256sum -c`` format) for every file; return its own sha256."""
    lines = [
        f"{sha256_file(path)}  {path.relative_to(directory).as_posix()}\n"
        for path in sorted(directory.rglob("*"))
        if path.is_file() and path.name != MANIFEST
    ]
    manifest = directory / MANIFEST
    manifest.write_text("".join(lines))
    return sha256_file(manifest)
