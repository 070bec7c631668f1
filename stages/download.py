"""DVC stages `download@<source>`, `download_external@<source>`: fetch, verify and extract one source.

Training sources go to data/raw/<source>, external test sources to data/external/<source>.
"""

import sys
from pathlib import Path

from cxr.config import load
from cxr.sources import MODULES, download_source
from cxr.stage import run

RAW = Path("data/raw")
EXTERNAL = Path("data/external")


def main() -> None:
    name = sys.argv[1]
    if name not in MODULES:
        raise SystemExit(f"error: unknown source {name!r}; known: {sorted(MODULES)}")
    config = load()
    folder = download_source(name, config, EXTERNAL if name in config.sources.external else RAW)
    print(f"{name}: extracted to {folder} (manifest: {folder / 'MANIFEST.sha256'})")


if __name__ == "__main__":
    run(main)
