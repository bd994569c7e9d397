"""Typer-ready commands: `simpersona generate` and `simpersona calibrate`.

Register them on the main app with `app.command("generate")(generate_command)` and
`app.command("calibrate")(calibrate_command)`.
"""

from __future__ import annotations

import tempfile
from datetime import date
from pathlib import Path
from typing import Annotated

import polars as pl
import typer

from simpersona.datadir import DataDirOption, lake_or_default
from simpersona.synth.config import GeneratorConfig
from simpersona.synth.generate import DEFAULT_GROUND_TRUTH, generate_lake
from simpersona.synth.types import PROFILES

# The real store the default profile is calibrated to (../shared next to the repository).
DEFAULT_REAL = (
    Path(__file__).resolve().parents[3] / "shared" / "data" / "public" / "puffy-dtc-web-events-2025"
)


def read_lake_events(lake_root: Path) -> pl.DataFrame:
    """Every events Parquet file of a lake as one canonical frame."""
    files = sorted((Path(lake_root) / "events").glob("shop=*/date=*/*.parquet"))
    if not files:
        raise FileNotFoundError(f"no events in the lake at {lake_root}")
    return pl.concat([pl.read_parquet(f) for f in files], how="vertical_relaxed")


def generate_command(
    data_dir: DataDirOption = Path("data"),
    out: Annotated[
        Path | None,
        typer.Option("--out", "-o", help="Lake folder to write into; default <data-dir>/lake."),
    ] = None,
    shops: Annotated[int, typer.Option(help="Number of shops (ids shop-000, shop-001, ...).")] = 4,
    buyers: Annotated[int, typer.Option(help="Buyers in total across all shops.")] = 40_000,
    seed: Annotated[int, typer.Option(help="Random seed; same seed = identical files.")] = 0,
    days: Annotated[int, typer.Option(help="Days in the window.")] = 14,
    start: Annotated[
        str, typer.Option(help="First UTC day of the window, YYYY-MM-DD.")
    ] = "2025-02-23",
    profile: Annotated[
        str,
        typer.Option(
            help="Population preset: 'puffy' (sparse, calibrated to a real store, "
            "~1.4 events/buyer) or 'dense' (~20 events/buyer)."
        ),
    ] = "puffy",
    ground_truth: Annotated[
        Path | None,
        typer.Option(
            help="Parquet file for the planted types (shop_id, buyer_id, planted_type); "
            "must lie outside the lake. Default <data-dir>/ground_truth/planted_types.parquet."
        ),
    ] = None,
    concentration: Annotated[
        float,
        typer.Option(
            help="Dirichlet concentration of per-shop type mixtures (lower = shops differ more)."
        ),
    ] = GeneratorConfig.mixture_concentration,
    null_session_share: Annotated[
        float,
        typer.Option(help="Share of buyers whose events carry no session_id (sessionizer input)."),
    ] = GeneratorConfig.null_session_share,
    progress: Annotated[bool, typer.Option(help="Show a progress bar.")] = True,
) -> None:
    """Generate a synthetic multi-shop clickstream with planted buyer types into the lake."""
    out = lake_or_default(out, data_dir)
    ground_truth = ground_truth or data_dir / DEFAULT_GROUND_TRUTH.relative_to("data")
    from rich.console import Console

    if profile not in PROFILES:
        raise typer.BadParameter(f"profile must be one of {sorted(PROFILES)}")
    config = GeneratorConfig(
        n_shops=shops,
        n_buyers=buyers,
        seed=seed,
        n_days=days,
        start_date=date.fromisoformat(start),
        profile=profile,
        mixture_concentration=concentration,
        null_session_share=null_session_share,
    )
    res = generate_lake(out, config, ground_truth, progress=progress)
    console = Console()
    console.print(res.table())
    console.print(
        f"{res.n_buyers:,} buyers, {res.n_sessions:,} sessions, {res.n_events:,} events "
        f"→ {res.lake_root}; planted types → {res.ground_truth_path} ({res.seconds:.1f} s)"
    )


def _real_files(real: Path) -> list[Path]:
    files = sorted(real.glob("*.csv")) if real.is_dir() else [real]
    if not files or not all(f.is_file() for f in files):
        raise typer.BadParameter(f"no CSV files at {real}")
    return files


def calibrate_command(
    real: Annotated[
        Path,
        typer.Argument(help="Shopify web-pixel CSV export (a file or a folder of CSVs)."),
    ] = DEFAULT_REAL,
    buyers: Annotated[int, typer.Option(help="Buyers to generate for the comparison.")] = 40_000,
    shops: Annotated[int, typer.Option(help="Shops to generate.")] = 4,
    seed: Annotated[int, typer.Option(help="Random seed of the generated data.")] = 0,
    profile: Annotated[str, typer.Option(help="Generator profile to compare.")] = "puffy",
    shop_id: Annotated[str, typer.Option(help="Shop id given to the real events.")] = "puffy",
    tolerance: Annotated[
        float, typer.Option(help="Allowed ratio between generated and real figures.")
    ] = 1.5,
    strict: Annotated[
        bool, typer.Option(help="Exit with status 1 when a figure is outside the tolerance.")
    ] = False,
) -> None:
    """Generate a small default dataset and compare its realism figures with a real store."""
    from rich.console import Console

    from simpersona.ingest.shopify_pixels import read_shopify_pixels
    from simpersona.realism import compare_realism, realism_stats, realism_table

    console = Console()
    real_events = read_shopify_pixels(_real_files(Path(real)), shop_id=shop_id).events
    with tempfile.TemporaryDirectory(prefix="simpersona-calibrate-") as tmp:
        config = GeneratorConfig(n_buyers=buyers, n_shops=shops, seed=seed, profile=profile)
        generate_lake(Path(tmp) / "lake", config, Path(tmp) / "truth.parquet", progress=False)
        gen_events = read_lake_events(Path(tmp) / "lake")
    gen, ref = realism_stats(gen_events), realism_stats(real_events)
    rows = compare_realism(gen, ref, tolerance=tolerance)
    console.print(
        realism_table(
            rows,
            title=f"generated ({profile}, {buyers:,} buyers, seed {seed}) vs {Path(real).name}",
            real_label=shop_id,
        )
    )
    bad = [r.metric for r in rows if not r.within]
    if bad:
        console.print(f"[red]outside ×{tolerance}:[/] {', '.join(bad)}")
        if strict:
            raise typer.Exit(1)
    else:
        console.print(f"[green]all {len(rows)} figures within ×{tolerance}[/]")
