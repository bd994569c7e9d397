"""`simpersona import`: the typer command over `run_import`, and its summary tables."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from simpersona.datadir import DataDirOption, lake_or_default
from simpersona.ingest.errors import ImporterError
from simpersona.ingest.registry import FORMATS
from simpersona.ingest.result import ImportResult
from simpersona.ingest.run import run_import

_PathsArg = Annotated[
    list[str],
    typer.Argument(
        help="Source files, folders (their .csv/.csv.gz/.parquet files) or quoted globs.",
        show_default=False,
    ),
]
_FormatOpt = Annotated[
    str,
    typer.Option(
        "--format",
        "-f",
        help="Source format: " + "; ".join(f"{f.name} ({f.help})" for f in FORMATS.values()),
        show_default=False,
    ),
]
_LakeOpt = Annotated[
    Path | None,
    typer.Option(
        "--lake", help="Raw lake folder to write into; default <data-dir>/lake.", file_okay=False
    ),
]
_ShopOpt = Annotated[
    str | None,
    typer.Option(
        "--shop",
        help="Shop id of the imported events (default: puffy for shopify-pixels, rees46 "
        "for rees46, the mapping's shop_id for generic). Made safe with sanitize_shop_id.",
    ),
]
_MappingOpt = Annotated[
    Path | None,
    typer.Option(
        "--mapping",
        "-m",
        help="YAML mapping for --format generic (see examples/mappings/user-item-event.yaml).",
        dir_okay=False,
    ),
]
_QuietOpt = Annotated[
    bool, typer.Option("--quiet", "-q", help="No progress bar and no summary table.")
]


def import_command(
    paths: _PathsArg,
    fmt: _FormatOpt,
    lake: _LakeOpt = None,
    shop: _ShopOpt = None,
    mapping: _MappingOpt = None,
    quiet: _QuietOpt = False,
    data_dir: DataDirOption = Path("data"),
) -> None:
    """Import real event logs into the raw lake (events, catalog, importer quarantine)."""
    lake = lake_or_default(lake, data_dir)
    from rich.console import Console
    from rich.markup import escape

    err = Console(stderr=True)
    try:
        result = run_import(fmt, paths, lake, shop_id=shop, mapping=mapping, progress=not quiet)
    except (ImporterError, ValueError) as e:  # ValueError: e.g. a --shop with no usable characters
        err.print(f"[bold red]import failed:[/] {escape(str(e))}", highlight=False)
        raise typer.Exit(code=1) from e
    if not quiet:
        print_summary(result, lake)


def print_summary(result: ImportResult, lake: str | os.PathLike[str]) -> None:
    """Per-file rows, events and rejects, the counts, and where the catalog and quarantine went."""
    from rich.console import Console
    from rich.table import Table

    console = Console()
    files = Table(title=f"import {result.format} -> {lake}")
    for col in ("file", "rows", "events", "importer rejects"):
        files.add_column(col, justify="left" if col == "file" else "right")
    for name, rows, events, rejected in (
        result.per_file().select("source_file", "rows", "events", "rejected").iter_rows()
    ):
        files.add_row(name, f"{rows:,}", f"{events:,}", f"{rejected:,}")
    t = result.counts["totals"]
    files.add_row("total", f"{t['source_rows']:,}", f"{t['events']:,}", f"{t['rejected']:,}")
    console.print(files)

    kinds = Table(title="counts")
    kinds.add_column("group")
    kinds.add_column("key")
    kinds.add_column("rows", justify="right")
    for group, values in result.counts.items():
        if group == "totals":
            continue
        for key, n in values.items():
            kinds.add_row(group, key, f"{n:,}")
    console.print(kinds)
    n_products = result.products.height
    n_coll = result.collections.height
    console.print(
        f"catalog: {n_products:,} products, {n_coll:,} collections; "
        f"quarantine: {Path(lake) / '_quarantine' / 'import' / result.format}"
    )
