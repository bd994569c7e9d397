"""Importers for real logs, validation, sessionization and quarantine.

Importing (`simpersona import`; `importers` is the public API in one import):

* the common parts every format builds on: `errors` (ImporterError, MappingError),
  `sources` (which files, their lake part), `csv_rows` (reading CSV text as strings, never
  failing on a bad row), `rejects` (the importer quarantine and its reasons), `result`
  (ImportResult, canonical frames, event ids, counts), `plausible` (catalogue prices,
  implausible times), `urls` (storefront URLs, readable names);
* the formats, each importing only the common parts: `shopify_pixels`, and `generic` (any
  table through a YAML `mapping`, with its `generic_catalog`);
* `registry`: the one list of formats (`rees46` = `generic` + the bundled
  `mappings/rees46.yaml`); `run` (read, screen, write), `lake_write` (into the lake, the
  catalog merged), `command` (the typer command).

Ingesting the lake into the warehouse: `validate`, `sessionize`, `ingest`.
"""
