"""The importers' errors: a source file or mapping that cannot be used at all.

A bad *row* is never an error (it goes to the importer quarantine, `rejects`); these stop
the import, and their message names the file, and the row and field where they are known.
"""

from __future__ import annotations

import os


class ImporterError(Exception):
    """A source file or mapping the importer cannot use at all (not a bad row: those are
    quarantined). The message names the file, and the row and field where they are known."""

    def __init__(
        self,
        message: str,
        *,
        file: str | os.PathLike[str] | None = None,
        row: int | None = None,
        field: str | None = None,
    ) -> None:
        self.message = message
        self.file = str(file) if file is not None else None
        self.row = row
        self.field = field
        super().__init__(str(self))

    def __str__(self) -> str:
        where = []
        if self.file is not None:
            where.append(self.file)
        if self.row is not None:
            where.append(f"row {self.row}")
        if self.field is not None:
            where.append(f"field {self.field!r}")
        return f"{': '.join(where)}: {self.message}" if where else self.message


class MappingError(ImporterError):
    """A generic-importer mapping file that is missing, unreadable or invalid."""
