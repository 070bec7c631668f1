"""What every source module is (:class:`SourceModule`) and hands to the catalog: rows in one
schema, plus what it left out; what the GitHub collections share."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, Literal, Protocol, runtime_checkable

import pandas as pd

from cxr.core.errors import CxrError
from cxr.core.sections import Download, Synthetic
from cxr.data.sources.fetch import fetch_archive

# Columns a source module must fill; merge adds sha256, width, height, mode and label.


class SourceLayoutError(CxrError, ValueError):
    """Upstream data is not laid out as expected; the message names the file, row or column."""


@runtime_checkable
class SourceModule(Protocol):
    """The interface of a source module (``cxr.data.sources.<name>``), written once; every entry of
    ``MODULES`` satisfies it (``tests/test_sources.py`` checks names and parameters)."""

    NAME: str
    Params: type  # the dataclass of its ``sources.<name>`` section

    def select_member(self, name: PurePosixPath) -> PurePosixPath | None:
        """The path an archive member is extracted to, or None to leave it out."""

    def check_layout(self, root: Path) -> None:
        """Raise :class:`SourceLayoutError` naming what an extracted copy lacks."""

    def upstream_archive(self, params: Any, scratch: Path, settings: Download) -> tuple[Path, str, str | None]:
        """The pinned original fetched into ``scratch``: (archive, where it came from, its pinned sha256)."""

    def read(self, root: Path, params: Any) -> SourceTable:
        """The source's rows (``SOURCE_COLUMNS`` and its extras), its raw metadata, what it dropped."""

    def synthetic_archive(self, folder: Path, params: Synthetic, source: Any) -> Path:
        """The offline stand-in, laid out like the original with its quirks, written into ``folder``."""


@dataclass
class SourceTable:
    """One source's images (``cxr.core.schema.SOURCE_COLUMNS`` plus its own extras) and its raw metadata."""

    images: pd.DataFrame
    metadata: pd.DataFrame | None = None
    dropped: list[dict[str, str]] = field(default_factory=list)


def is_macos_junk(name: PurePosixPath) -> bool:
    """``__MACOSX/`` resource forks, ``._*`` AppleDouble files and ``.DS_Store`` are not data."""
    return "__MACOSX" in name.parts or name.name.startswith("._") or name.name == ".DS_Store"


def read_metadata(path: Path, required: list[str]) -> pd.DataFrame:
    """A source's metadata table as text (empty cells NaN); a missing required column is named.

    Tolerates what the published tables contain: header names with stray spaces (`` url``), a
    trailing empty column, rows one field short, bytes that are not UTF-8; the required columns'
    values are stripped (a ``filename`` cell with a trailing space names a file without one).
    """
    metadata = pd.read_csv(path, dtype=str, keep_default_na=True, encoding_errors="replace")
    metadata.columns = [str(column).strip() for column in metadata.columns]
    unnamed = [column for column in metadata.columns if column.startswith("Unnamed:") and metadata[column].isna().all()]
    metadata = metadata.drop(columns=unnamed)
    missing_columns = [column for column in required if column not in metadata.columns]
    if missing_columns:
        raise SourceLayoutError(f"{path}: missing column(s) {missing_columns}; found {list(metadata.columns)}")
    for column in required:
        metadata[column] = metadata[column].str.strip().replace("", None)
    return metadata


def check_has_file(root: Path, name: str) -> None:
    """The extracted archive must hold ``name`` below its top folder."""
    if not (root / name).is_file():
        raise SourceLayoutError(f"{root}: no {name} in the archive's top folder")


def select_below_top(name: PurePosixPath, files: tuple[str, ...], folders: tuple[str, ...]) -> PurePosixPath | None:
    """For GitHub commit zips (``<repo>-<commit>/...``): keep ``files`` and everything in ``folders``
    below the top folder, with that folder stripped; skip the rest and macOS junk."""
    if is_macos_junk(name) or len(name.parts) < 2:
        return None
    inner = PurePosixPath(*name.parts[1:])
    if inner.as_posix() in files or (len(inner.parts) > 1 and inner.parts[0] in folders):
        return inner
    return None


METADATA = "metadata.csv"


def select_metadata_and_images(name: PurePosixPath) -> PurePosixPath | None:
    """For a GitHub collection laid out as ``metadata.csv`` + ``images/``: keep those two below
    the commit zip's top folder, without that folder."""
    return select_below_top(name, (METADATA,), ("images",))


def check_metadata_file(root: Path) -> None:
    check_has_file(root, METADATA)


ABSENT_SHOWN = 10


def settle_absent_files(
    metadata_path: Path, absent: list[dict[str, str]], policy: str, source: str
) -> list[dict[str, str]]:
    """Metadata rows whose image is not in the archive: with ``policy`` ``error``, one error that
    counts and lists them; with ``drop``, the rows for the data report's ``dropped_rows``."""
    if absent and policy == "error":
        listed = ", ".join(f"line {item['line']}: {item['file']}" for item in absent[:ABSENT_SHOWN])
        raise SourceLayoutError(
            f"{metadata_path}: {len(absent)} row(s) name images absent from the archive ({listed}"
            f"{', ...' if len(absent) > ABSENT_SHOWN else ''}); set sources.{source}.missing_files=drop "
            "to drop them (they are listed in the data report)"
        )
    return absent


def absent_row(source: str, line: int, relative: PurePosixPath, metadata_name: str) -> dict[str, str]:
    return {
        "source": source,
        "line": str(line),
        "file": str(relative),
        "reason": f"listed in {metadata_name} but absent from the archive",
    }


@dataclass(frozen=True)
class GitHubParams:
    """``sources.<name>`` of a source published as a GitHub repository, fetched as one pinned commit's zip.

    ``url`` points at a mirror of that zip (http(s):// or file://: an internal copy, a proxy, a
    local file); unset, GitHub's own archive of ``commit`` is fetched. Either way the extracted
    files are checked against ``manifest_sha256`` when it is pinned.
    """

    repo: str
    commit: str
    url: str | None
    sha256: str | None
    manifest_sha256: str | None
    # Metadata rows whose image is absent from the archive: error | drop (listed in the report).
    missing_files: Literal["error", "drop"]

    @property
    def archive_url(self) -> str:
        return self.url or f"https://github.com/{self.repo}/archive/{self.commit}.zip"


def fetch_github_archive(params: GitHubParams, scratch: Path, settings: Download) -> tuple[Path, str, str | None]:
    """The commit's zip (archive, where it came from, its pinned sha256), from GitHub or the mirror."""
    url = params.archive_url
    return fetch_archive(url, scratch, params.sha256, settings), url, params.sha256
