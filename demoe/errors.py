class DemoeError(Exception):
    """A user-facing failure: the CLI prints its one-line message and exits non-zero, no traceback."""
