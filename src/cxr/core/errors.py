"""The errors a user can cause and fix; stages print them as one readable line, no traceback."""

from __future__ import annotations

import re
import signal

# An object's repr with its memory address (<_io.BytesIO object at 0x7f...>): noise in a message.
_ADDRESS = re.compile(r"<([\w.]+) object at 0x[0-9a-fA-F]+>")


class CxrError(Exception):
    """Base for problems in parameters or data; the message names the file, row or key."""


class StageInterrupted(BaseException):
    """A stage stopped by a signal (SIGTERM, SIGINT, SIGHUP, or its DVC parent's death). A
    BaseException, like KeyboardInterrupt, so that no ``except Exception`` swallows it: every
    ``finally`` and staging clean-up runs as it unwinds, and the MLflow run ends as KILLED."""

    def __init__(self, signum: int):
        self.signum = signum
        super().__init__(f"stopped by {signal.Signals(signum).name}")


def one_line(error: BaseException | str) -> str:
    """An error's message as one line.

    Whitespace (newlines included) is collapsed, object reprs with memory addresses are reduced to
    their type (``<_io.BytesIO object at 0x7f..>`` -> ``BytesIO``), and the exception's type is given
    when it has no message.

    Parameters
    ----------
    error : BaseException or str
        The exception, or a message.

    Returns
    -------
    str
        The message on one line.
    """
    text = " ".join(str(error).split())
    if not text and isinstance(error, BaseException):
        text = type(error).__name__
    return _ADDRESS.sub(lambda match: match[1].rsplit(".", 1)[-1], text)
