"""The errors a user can cause and fix; stages print them as one readable line, no traceback."""


class CxrError(Exception):
    """Base for problems in parameters or data; the message names the file, row or key."""
