"""Running a stage script: user errors become one readable message and exit status 1."""

from __future__ import annotations

import sys
from collections.abc import Callable

from cxr.errors import CxrError


def run(main: Callable[[], None]) -> None:
    try:
        main()
    except CxrError as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(1) from None
