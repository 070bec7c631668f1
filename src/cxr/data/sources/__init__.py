"""Upstream sources: one module per source, registered in :data:`MODULES`, and the download stage.

A source module owns everything about its source: ``NAME``; ``Params``, the dataclass of its
``sources.<name>`` section in params.yaml; ``select_member`` and ``check_layout`` for its archive;
``upstream_archive`` (how the pinned original is fetched); ``read`` (its rows in the catalog's
schema); and ``synthetic_archive``, the offline stand-in laid out like the original, quirks
included. ``download_source`` is the whole download stage for one source: obtain the archive
(generated offline, the pinned upstream otherwise), verify it, extract the members the source
keeps, write a per-file manifest, and only then move the result into ``data/raw/<source>``.

Annotation sets (:data:`ANNOTATIONS`: ``lung_masks``, outlines of another source's images) are
fetched, verified and extracted the same way, by modules of the same shape without ``read``; they
are never in ``sources.use`` or ``sources.external``.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

from cxr.core.config import Config, ConfigError, source_params, unrestricted
from cxr.core.outputs import staged_directory
from cxr.data.sources import actualmed, covid_chestxray, kermany, lung_masks
from cxr.data.sources.fetch import (
    MANIFEST,
    FetchError,
    Limits,
    fetch_archive,
    safe_extract,
    sha256_file,
    write_manifest,
)
from cxr.data.sources.layout import SourceLayoutError, SourceTable

MODULES = {module.NAME: module for module in (covid_chestxray, kermany, actualmed)}
# Not image sources: sets of annotations of a source's images, downloaded as the sources are.
ANNOTATIONS = {lung_masks.NAME: lung_masks}
PROVENANCE = "SOURCE.json"

__all__ = [
    "ANNOTATIONS",
    "MODULES",
    "FetchError",
    "SourceLayoutError",
    "SourceTable",
    "check_sources",
    "download_source",
    "read_source",
    "params_of",
]


def params_of(name: str, config: Config):
    """The typed ``sources.<name>`` section, checked by the source's (or annotation set's) own ``Params``.

    Parameters
    ----------
    name : str
        A key of :data:`MODULES` or :data:`ANNOTATIONS`.
    config : Config
        The configuration (a stage's view restricts what may be read).

    Returns
    -------
    Any
        The module's ``Params`` built from ``sources.<name>``.

    Raises
    ------
    ConfigError
        When ``name`` is neither a source nor an annotation set, or its section does not fit.
    """
    return source_params(config, name, _module(name).Params)


def _module(name: str):
    """The module of source or annotation set ``name``."""
    if name in MODULES:
        return MODULES[name]
    if name in ANNOTATIONS:
        return ANNOTATIONS[name]
    raise ConfigError(
        f"params.yaml: sources.{name}: no source module of that name; known: {sorted(MODULES)}, "
        f"annotation sets: {sorted(ANNOTATIONS)}"
    )


def check_sources(config: Config) -> None:
    """Every source section of params.yaml against its module (for checks made outside a data stage).

    Parameters
    ----------
    config : Config
        The configuration; every section under ``sources`` is checked, not only ``sources.use``.

    Raises
    ------
    ConfigError
        When a section names no source or annotation module or does not fit its parameters, or when
        an annotation set annotates no image source (``sources.use`` naming an annotation set is
        refused when the configuration is read).
    """
    full = unrestricted(config)
    for name in full.sources.sections:
        params_of(name, config)
    for name in sorted(ANNOTATIONS.keys() & full.sources.sections.keys()):
        annotates = params_of(name, config).annotates
        if annotates not in MODULES:
            raise ConfigError(
                f"params.yaml: sources.{name}.annotates: {annotates!r} is not an image source; known: {sorted(MODULES)}"
            )


def download_source(name: str, config: Config, raw_root: Path) -> Path:
    """Fetch, verify and extract source (or annotation set) ``name`` into ``raw_root/name``; return that folder.

    The archive is extracted within ``download``'s size limits into a staging folder that replaces
    ``raw_root/name`` only when every check passes; the folder gets a manifest of its files and a
    provenance record (URL, archive and manifest sha256, commit where the source has one).

    Parameters
    ----------
    name : str
        The source, a key of :data:`MODULES` or :data:`ANNOTATIONS`.
    config : Config
        The configuration (``sources.<name>``, ``sources.origin``, ``download``; with a synthetic origin,
        ``synthetic``, and for an annotation set the section of the source it annotates).
    raw_root : Path
        The folder of the extracted sources.

    Returns
    -------
    Path
        ``raw_root/name``.

    Raises
    ------
    ConfigError
        When ``sources.<name>`` names no source module or its section is wrong.
    FetchError
        When the extracted files differ from the pinned ``manifest_sha256``.
    """
    module, params = _module(name), params_of(name, config)
    limits = Limits(
        config.download.max_archive_bytes, config.download.max_member_bytes, config.download.max_total_bytes
    )
    with tempfile.TemporaryDirectory(prefix=f"cxr-{name}-") as scratch:
        archive, url, pinned_sha256 = _obtain_archive(name, module, params, config, Path(scratch))
        with staged_directory(raw_root / name) as staging:
            safe_extract(archive, staging, select=module.select_member, limits=limits, origin=url)
            module.check_layout(staging)
            manifest_sha256 = write_manifest(staging)
            expected = params.manifest_sha256
            if expected is not None and expected.lower() != manifest_sha256:
                raise FetchError(
                    f"{url}: extracted files differ from the pinned content: {MANIFEST} sha256 is "
                    f"{manifest_sha256}, sources.{name}.manifest_sha256 expects {expected}"
                )
            provenance = {
                "source": name,
                "origin": config.sources.origin,
                "url": url,
                "archive_sha256": sha256_file(archive),
                "archive_sha256_pinned": pinned_sha256 is not None,
                "manifest_sha256": manifest_sha256,
                **({"commit": params.commit} if hasattr(params, "commit") else {}),
            }
            (staging / PROVENANCE).write_text(json.dumps(provenance, indent=2) + "\n")
    return raw_root / name


def read_source(name: str, root: Path, config: Config) -> SourceTable:
    return MODULES[name].read(root, params_of(name, config))


def _obtain_archive(name: str, module, params, config: Config, scratch: Path) -> tuple[Path, str, str | None]:
    """Return (archive path, where it came from, the pinned sha256 it was checked against).

    Synthetic archives are generated, then fetched through the same ``file://`` download path
    as a mirror would be; their provenance names no temporary folder, so outputs are stable. An
    annotation set's stand-in outlines the stand-in of the source it annotates, so it gets that
    source's section too.
    """
    if config.sources.origin == "upstream":
        return module.upstream_archive(params, scratch, config.download)
    extra = {"annotated": params_of(params.annotates, config)} if name in ANNOTATIONS else {}
    generated = module.synthetic_archive(scratch / "generated", config.synthetic, params, **extra)
    return (
        fetch_archive(generated.resolve().as_uri(), scratch, None, config.download),
        f"synthetic:{generated.name}",
        None,
    )
