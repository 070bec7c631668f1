"""Running a stage script: its paths from the command line, user errors as one line and exit 1.

dvc.yaml is the one place that names pipeline paths: each stage's ``cmd`` passes the paths it
reads and writes (as DVC's example-get-started does), next to the same paths in ``deps`` and
``outs``; the library only ever receives them as arguments.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

from cxr.core.errors import CxrError


def arguments(doc: str | None, *paths: str, names: tuple[str, ...] = ()) -> argparse.Namespace:
    """Parse the stage's command line: ``names`` as positional words, then each of ``paths`` as a
    required ``--<path>`` option (``-`` in the option, ``_`` in the attribute), read as a Path."""
    parser = argparse.ArgumentParser(description=(doc or "").strip().splitlines()[0] if doc else None)
    for name in names:
        parser.add_argument(name)
    for path in paths:
        parser.add_argument(f"--{path}", type=Path, required=True)
    return parser.parse_args()


def run(main: Callable[[], None]) -> None:
    try:
        main()
    except CxrError as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(1) from None
