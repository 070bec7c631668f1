"""DVC stages `download@<source>`, `download_external@<source>` and `download_masks`: fetch, verify, extract.

One image source or annotation set (lung_masks). `--root` is data/raw for training sources,
data/external for external test sources and data/annotations for annotation sets (outside data/raw,
which merge reads whole); the download lands in <root>/<name>.
"""

from cxr.core.config import load
from cxr.core.stage import arguments, run
from cxr.data.sources import ANNOTATIONS, MODULES, download_source


def main() -> None:
    args = arguments(__doc__, "root", names=("source",))
    if args.source not in MODULES and args.source not in ANNOTATIONS:
        known = sorted(MODULES) + sorted(ANNOTATIONS)
        raise SystemExit(f"error: unknown source or annotation set {args.source!r}; known: {known}")
    folder = download_source(args.source, load(), args.root)
    print(f"{args.source}: extracted to {folder} (manifest: {folder / 'MANIFEST.sha256'})")


if __name__ == "__main__":
    run(main)
