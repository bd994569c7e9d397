"""The one registry of import formats: each name, how to read it, and what it needs.

Formats import only the common modules (errors, sources, csv_rows, rejects, result,
plausible, urls), never this registry or each other. `rees46` is no module of its own: it is
the generic importer with the mapping bundled as `mappings/rees46.yaml`, which
`examples/mappings/rees46.yaml` repeats for `--format generic`.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from simpersona.ingest.errors import ImporterError
from simpersona.ingest.generic import read_generic
from simpersona.ingest.lake_write import TitleCheck, any_title
from simpersona.ingest.mapping import bundled_mapping
from simpersona.ingest.result import ImportResult, ProgressFn
from simpersona.ingest.shopify_pixels import is_real_title, read_shopify_pixels

# read(files, shop_id, mapping, progress): shop_id None = the format's default shop.
Reader = Callable[
    [Sequence[Path], str | None, str | os.PathLike[str] | None, ProgressFn | None], ImportResult
]


@dataclass(frozen=True)
class Format:
    """An import format: `read` reads source files, `help` says what they are (for
    `simpersona import --help`), `takes_mapping` whether it needs `--mapping`, and
    `is_real_title` tells its real product titles from made-up ones (the catalog merge
    keeps a real one)."""

    name: str
    help: str
    read: Reader
    takes_mapping: bool = False
    is_real_title: TitleCheck = any_title


def _shopify_pixels(files, shop_id, _mapping, progress) -> ImportResult:
    return read_shopify_pixels(files, shop_id or "puffy", progress=progress)


def _rees46(files, shop_id, _mapping, progress) -> ImportResult:
    mapping = bundled_mapping("rees46")
    return read_generic(files, mapping, shop_id, progress=progress, format_name="rees46")


def _generic(files, shop_id, mapping, progress) -> ImportResult:
    return read_generic(files, mapping, shop_id, progress=progress)


FORMATS: dict[str, Format] = {
    f.name: f
    for f in (
        Format(
            "shopify-pixels",
            "Shopify web-pixel CSV, e.g. Puffy; default shop puffy",
            _shopify_pixels,
            is_real_title=is_real_title,
        ),
        Format(
            "rees46",
            "REES46 / Open CDP CSV, the generic importer with its bundled mapping; "
            "default shop rees46",
            _rees46,
        ),
        Format(
            "generic",
            "any CSV/Parquet through --mapping; shop from the mapping",
            _generic,
            takes_mapping=True,
        ),
    )
}


def get_format(name: str) -> Format:
    """The registered format `name`; ImporterError naming the known ones otherwise."""
    try:
        return FORMATS[name]
    except KeyError:
        raise ImporterError(
            f"unknown format {name!r}; choose one of {', '.join(FORMATS)}"
        ) from None
