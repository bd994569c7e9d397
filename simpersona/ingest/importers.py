"""Importers: turn real logs into the canonical raw tables and write them into the lake.

    simpersona import --format shopify-pixels|rees46|generic PATHS... [--lake data/lake]
                      [--shop SHOP] [--mapping mapping.yaml]

Every source row ends up in exactly one place:

* as a canonical event in the lake (`<lake>/events/shop=<s>/date=<d>/<part>.parquet`, the part
  being the source stem and a hash of the source's absolute path, `lake_part`),
  carrying `source_file` and `source_row` so that ingestion can name the source row when it
  rejects it (null buyer, duplicate event id, ... are passed through for ingestion to catch);
* or in the importer quarantine `<lake>/_quarantine/import/<format>/<part>.parquet`
  (QUARANTINE_SCHEMA) with file, row and reason (`rejects`).

The catalog the events reference is written as `<lake>/{products,collections}/shop=<s>/
<format>.parquet`, merged with what an earlier import of the same format wrote, so importing
files one at a time still leaves every referenced product in the catalog.

This module is the importers' public API in one import; the code lives in the modules the
package docstring (`simpersona/ingest/__init__.py`) lists. docs/importers.md documents the
field mappings, the fault handling and measured counts.
"""

from __future__ import annotations

from simpersona.ingest.command import import_command, print_summary
from simpersona.ingest.errors import ImporterError, MappingError
from simpersona.ingest.lake_write import write_import
from simpersona.ingest.plausible import screen_timestamps
from simpersona.ingest.registry import FORMATS, Format, get_format
from simpersona.ingest.result import ImportResult
from simpersona.ingest.run import DEFAULT_LAKE, read_import, run_import
from simpersona.ingest.sources import SOURCE_SUFFIXES, lake_part, resolve_paths, source_stem

__all__ = [
    "DEFAULT_LAKE",
    "FORMATS",
    "SOURCE_SUFFIXES",
    "Format",
    "ImportResult",
    "ImporterError",
    "MappingError",
    "get_format",
    "import_command",
    "lake_part",
    "print_summary",
    "read_import",
    "resolve_paths",
    "run_import",
    "screen_timestamps",
    "source_stem",
    "write_import",
]
