"""The `simpersona` program: the library's commands (`simpersona.cli`) plus the pipeline
commands, which run the Dagster assets in-process (runs are recorded in the Dagster instance
under <data-dir>/dagster_home): ingest, backfill, run and demo."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from simpersona.cli import DataDir, _rejects, _set_data_dir, console
from simpersona.cli import app as library_app
from simpersona.cli import main as _main

app = typer.Typer(
    name="simpersona",
    help=library_app.info.help,
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,
)
# The library's commands first, then the pipeline's; the library's app stays as it is.
app.registered_commands.extend(library_app.registered_commands)

# options of every command that ingests
MaxRejectShare = Annotated[
    float, typer.Option(help="Fail a partition above this share of rejected rows.")
]
FailFast = Annotated[bool, typer.Option("--fail-fast", help="Stop at the first failing partition.")]


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
    store_walks: Annotated[
        int,
        typer.Option(
            help="Personas of each training shop that also walk its storefront to a goal for "
            "the persona model's training data (docs/llm.md, 'Traces on your store'); "
            "each walk's examples add training time."
        ),
    ] = 0,
) -> None:
    """Run every stage that exists end-to-end on generated data and write
    <data-dir>/reports/latest/summary.json."""
    _set_data_dir(data_dir)
    from dagster_project.run import run_demo

    summary, report_dir = run_demo(
        data_dir, n_shops=shops, n_buyers=buyers, seed=seed, console=console,
        base_model=base_model, store_walks_per_shop=store_walks,
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


def main(argv: list[str] | None = None) -> None:
    """The `simpersona` entry point (one-line errors, exit 1: `simpersona.cli.main`)."""
    _main(argv, app)


if __name__ == "__main__":
    main()
