"""Running a stage script: its paths from the command line, user errors as one line and exit 1.

dvc.yaml is the one place that names pipeline paths: each stage's ``cmd`` passes the paths it
reads and writes (as DVC's example-get-started does), next to the same paths in ``deps`` and
``outs``; the library only ever receives them as arguments.
"""

from __future__ import annotations

import argparse
import ctypes
import errno
import os
import signal
import sys
from collections.abc import Callable
from pathlib import Path

from cxr.core.errors import CxrError, StageInterrupted, one_line


def arguments(doc: str | None, *paths: str, names: tuple[str, ...] = ()) -> argparse.Namespace:
    """Parse the stage's command line.

    ``names`` are positional words, then each of ``paths`` is a required ``--<path>`` option (``-`` in
    the option, ``_`` in the attribute), read as a Path.

    Parameters
    ----------
    doc : str or None
        The stage script's docstring; its first line is the help's description.
    *paths : str
        Names of the required path options.
    names : tuple of str, optional
        Names of the positional arguments.

    Returns
    -------
    argparse.Namespace
        The parsed arguments.

    Raises
    ------
    SystemExit
        When the command line is wrong or help was asked for (argparse).
    """
    parser = argparse.ArgumentParser(description=(doc or "").strip().splitlines()[0] if doc else None)
    for name in names:
        parser.add_argument(name)
    for path in paths:
        parser.add_argument(f"--{path}", type=Path, required=True)
    return parser.parse_args()


def run(main: Callable[[], None], *, restorable: bool = True) -> None:
    """Run a stage's ``main``, ending it with one line and an exit status on known failures.

    A :class:`CxrError` or an operating-system error (disk full, permission) ends it with one line on
    stderr and exit status 1; a stop signal (:class:`StageInterrupted`) with status 128 + the signal
    number. Under DVC, which removes a stage's outputs before running it, the line ends with the
    command that restores them (unless ``restorable`` is false: outputs not worth restoring).

    Parameters
    ----------
    main : callable
        The stage's body, called without arguments.
    restorable : bool, optional
        Whether the failure line names the command that restores the stage's outputs (default True).

    Raises
    ------
    SystemExit
        When ``main`` raises a :class:`CxrError` or OSError or is stopped by a signal.
    """
    previous = {signum: signal.signal(signum, _interrupt) for signum in STOP_SIGNALS}
    _stop_with_parent()
    try:
        main()
    except StageInterrupted as exc:
        fail(
            f"{exc}; nothing half-written was left, and its MLflow run ended as KILLED",
            restorable,
            status=128 + exc.signum,
        )
    except CxrError as exc:
        fail(one_line(exc), restorable)
    except OSError as exc:
        where = f"{exc.filename}: " if exc.filename else ""
        fail(
            f"{where}{exc.strerror or one_line(exc)}"
            + (" (free some space, then rerun)" if exc.errno == errno.ENOSPC else ""),
            restorable,
        )
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def fail(message: str, restorable: bool = True, status: int = 1) -> None:
    """Print ``error: <message>`` (with the restore command under DVC) and exit with ``status``."""
    stage = os.environ.get("DVC_STAGE")
    if stage and restorable:
        message += (
            f"; DVC removed this stage's earlier outputs before running it: restore them with `dvc checkout {stage}`"
        )
    print(f"error: {message}", file=sys.stderr)
    raise SystemExit(status)


# Signals that stop a stage cleanly (SIGKILL cannot be caught: the next run of the stage closes its
# MLflow run, see cxr.core.runs.close_orphaned_runs).
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
PR_SET_PDEATHSIG = 1  # prctl(2): the signal a process gets when its parent dies


def _interrupt(signum: int, frame) -> None:
    for other in STOP_SIGNALS:  # a second signal must not interrupt the clean-up of the first
        signal.signal(other, signal.SIG_IGN)
    raise StageInterrupted(signum)


def _stop_with_parent() -> None:
    """Under DVC, get SIGTERM when the parent process dies (Linux), so a killed ``dvc repro`` leaves no
    orphan stage that finishes later and registers a model the workspace no longer matches."""
    if not os.environ.get("DVC_STAGE") or not sys.platform.startswith("linux"):
        return
    parent = os.getppid()
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != parent:  # the parent died before prctl took effect
        os.kill(os.getpid(), signal.SIGTERM)
