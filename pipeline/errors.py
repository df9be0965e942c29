"""The one exception type a user sees for bad input: it names the file, and the row or key."""
from __future__ import annotations


class PipelineError(Exception):
    """Bad input or state that the user must fix; the CLI prints it without a traceback."""

    def __init__(self, message: str, path: object | None = None, row: int | None = None):
        where = ""
        if path is not None:
            where = f"{path}"
            if row is not None:
                where += f", row {row}"
            where += ": "
        super().__init__(where + message)
        self.message = message  # without the file and row, for a list that names them itself
        self.path = path
        self.row = row
