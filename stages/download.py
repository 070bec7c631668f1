"""DVC stage `download@<source>`: fetch, verify and extract one source into data/raw/<source>."""

import sys
from pathlib import Path

from cxr.config import load
from cxr.sources import MODULES, download_source
from cxr.stage import run

RAW = Path("data/raw")


def main() -> None:
    name = sys.argv[1]
    if name not in MODULES:
        raise SystemExit(f"error: unknown source {name!r}; known: {sorted(MODULES)}")
    folder = download_source(name, load(), RAW)
    print(f"{name}: extracted to {folder} (manifest: {folder / 'MANIFEST.sha256'})")


if __name__ == "__main__":
    run(main)
