"""DVC stages `download@<source>`, `download_external@<source>`: fetch, verify and extract one source.

`--root` is data/raw for training sources and data/external for external test sources; the
source lands in <root>/<source>.
"""

from cxr.core.config import load
from cxr.core.stage import arguments, run
from cxr.data.sources import MODULES, download_source


def main() -> None:
    args = arguments(__doc__, "root", names=("source",))
    if args.source not in MODULES:
        raise SystemExit(f"error: unknown source {args.source!r}; known: {sorted(MODULES)}")
    folder = download_source(args.source, load(), args.root)
    print(f"{args.source}: extracted to {folder} (manifest: {folder / 'MANIFEST.sha256'})")


if __name__ == "__main__":
    run(main)
