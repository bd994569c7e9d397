"""Typer-ready command: `simpersona simulate` (register with
`app.command("simulate")(simulate_command)`)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated

import typer

from simpersona.datadir import DataDirOption, lake_or_default


def load_shop_events(shop: str, lake: Path, warehouse: Path | None):
    """The shop's events to fit on: the warehouse's validated `raw_events` when a warehouse
    is given, else the lake's raw files (sessionized when they carry no session ids)."""
    import polars as pl

    from simpersona.ingest.sessionize import sessionize
    from simpersona.lake import Lake
    from simpersona.schema import conform

    if warehouse is not None:
        files = sorted((Path(warehouse) / "raw_events" / f"shop={shop}").glob("date=*/*.parquet"))
        if not files:
            raise FileNotFoundError(f"no raw_events for shop {shop!r} in {warehouse}")
        return pl.concat([pl.read_parquet(f) for f in files], how="diagonal_relaxed")
    lk = Lake.at(lake)
    files = [f for d in lk.dates(shop) for f in lk.raw_files(lk.events_dir(shop, d))]
    if not files:
        raise FileNotFoundError(f"no events for shop {shop!r} in {lake}")
    frames = []
    for f in files:
        df = pl.read_parquet(f) if f.suffix == ".parquet" else pl.read_csv(f, infer_schema=False)
        frames.append(conform(df, "events", keep_provenance=False))
    events = pl.concat(frames).drop_nulls(["buyer_id", "ts", "event_type"])
    return sessionize(events) if events["session_id"].null_count() else events


def simulate_command(
    shop: Annotated[
        str | None,
        typer.Option(
            help="Shop to simulate (its catalog is served). With --url: the shop whose persona "
            "token shares (p̂_s, from the warehouse) the agents are drawn in."
        ),
    ] = None,
    sessions: Annotated[int, typer.Option("--sessions", "-n", help="Agent sessions.")] = 20,
    url: Annotated[
        str | None,
        typer.Option(
            help="Run the agents on this store URL (any store: a staging copy of yours) "
            "instead of serving a shop's storefront. See docs/agents.md, 'Your store'."
        ),
    ] = None,
    policy: Annotated[
        str, typer.Option(help="With --url: markov (fitted chains) or llm (the persona model).")
    ] = "markov",
    tokens: Annotated[
        str | None,
        typer.Option(help="With --url: persona tokens to draw from, e.g. '12,40' (equal shares)."),
    ] = None,
    goal: Annotated[str, typer.Option(help="With --url: buy, cart, view or browse.")] = "buy",
    allow_orders: Annotated[
        bool,
        typer.Option(
            help="With --url: let agents place orders, on the hosts named by --order-host only "
            "(a test store). Without it sessions stop before the order submission."
        ),
    ] = False,
    order_host: Annotated[
        list[str] | None,
        typer.Option(help="Host or host:port where --allow-orders applies (repeat for more)."),
    ] = None,
    allow_host: Annotated[
        list[str] | None,
        typer.Option(help="With --url: another host the browser may load (its CDN); repeat."),
    ] = None,
    site_profile: Annotated[
        list[Path] | None,
        typer.Option(help="With --url: a YAML site profile (selectors, URL patterns); repeat."),
    ] = None,
    robots: Annotated[
        str, typer.Option(help="robots.txt: auto (non-loopback hosts), always or never.")
    ] = "auto",
    max_rps: Annotated[
        float, typer.Option(help="With --url: requests a second to one host, at most.")
    ] = 20.0,
    llm_model: Annotated[
        Path | None,
        typer.Option(
            help="With --policy llm: a persona model folder to serve on loopback; default the "
            "data dir's current persona_model."
        ),
    ] = None,
    llm_url: Annotated[
        str | None,
        typer.Option(help="With --policy llm: an OpenAI-compatible endpoint serving the model."),
    ] = None,
    data_dir: DataDirOption = Path("data"),
    lake: Annotated[
        Path | None,
        typer.Option(
            help="Lake: the catalog (and events to fit on) unless --warehouse; default "
            "<data-dir>/lake."
        ),
    ] = None,
    warehouse: Annotated[
        Path | None,
        typer.Option(help="Warehouse folder: read the validated catalog and events from it."),
    ] = None,
    model: Annotated[
        Path | None,
        typer.Option(help="A saved Markov policy (JSON); default: fit on the shop's events."),
    ] = None,
    labels: Annotated[
        Path | None,
        typer.Option(
            help="Parquet/CSV with buyer_id and a label column (persona tokens, buyer types); "
            "default: the buyers' strata."
        ),
    ] = None,
    label_column: Annotated[str, typer.Option(help="Label column in --labels.")] = "label",
    concurrency: Annotated[int, typer.Option(help="Browser sessions at once.")] = 4,
    max_steps: Annotated[int, typer.Option(help="Actions per session at most.")] = 30,
    timeout_s: Annotated[float, typer.Option(help="Wall-clock budget per session.")] = 180.0,
    seed: Annotated[int, typer.Option(help="Seed of labels, personas and choices.")] = 0,
    out: Annotated[
        Path | None,
        typer.Option(help="Output folder; default <data-dir>/simulations/<shop>-<run>."),
    ] = None,
    events_lake: Annotated[
        Path | None,
        typer.Option(
            help="Lake the agents' events go to; default <out>/lake (kept apart from the real "
            "shop's events)."
        ),
    ] = None,
    traces_out: Annotated[
        Path | None,
        typer.Option(
            help="With --url: write the sessions as SFT training traces to this folder "
            "(records.jsonl, stage1.jsonl, stage2.jsonl); goals are paraphrases the "
            'evaluation never uses (docs/llm.md, "Traces on your store").'
        ),
    ] = None,
    trace_steps: Annotated[
        int, typer.Option(help="With --traces-out: steps kept per session (training cost).")
    ] = 16,
) -> None:
    """Serve a shop's storefront on loopback and run Markov persona agents against it in
    headless Chromium, or (--url) run persona agents on any store; writes recordings (JSONL),
    the agents' events (lake) and a summary."""
    if url is not None:
        from simpersona.agent.live_cli import simulate_url

        simulate_url(
            url=url,
            shop=shop,
            sessions=sessions,
            data_dir=data_dir,
            warehouse=warehouse,
            model=model,
            policy=policy,
            tokens=tokens,
            goal=goal,
            allow_orders=allow_orders,
            order_hosts=tuple(order_host or ()),
            allow_hosts=tuple(allow_host or ()),
            site_profiles=tuple(site_profile or ()),
            robots=robots,
            max_rps=max_rps,
            llm_model=llm_model,
            llm_url=llm_url,
            concurrency=concurrency,
            max_steps=max_steps,
            timeout_s=timeout_s,
            seed=seed,
            out=out,
            events_lake=events_lake,
            traces_out=traces_out,
            trace_steps=trace_steps,
        )
        return
    if shop is None:
        raise typer.BadParameter("give --shop (serve its storefront) or --url (any store)")
    lake = lake_or_default(lake, data_dir)
    import polars as pl
    from rich.console import Console
    from rich.table import Table

    from simpersona.agent.browser import BrowserUnavailable
    from simpersona.agent.markov import MarkovModel
    from simpersona.agent.session import RuntimeConfig
    from simpersona.agent.simulate import SimulationConfig, fit_shop_markov, simulate_shop
    from simpersona.progress import progress_bar
    from simpersona.store.catalog import StoreCatalog

    console = Console(stderr=True)
    try:
        catalog = (
            StoreCatalog.from_warehouse(warehouse, shop)
            if warehouse is not None
            else StoreCatalog.from_lake(lake, shop)
        )
    except FileNotFoundError as exc:
        console.print(f"[red]{exc}[/]")
        raise typer.Exit(1) from exc
    run_id = format(int(time.time() * 1000), "x")
    out_dir = out or data_dir / "simulations" / f"{shop}-{run_id}"
    if model is not None:
        policy_model = MarkovModel.load(model)
    else:
        try:
            events = load_shop_events(shop, lake, warehouse)
        except FileNotFoundError as exc:
            console.print(f"[red]{exc}[/] (or pass --model)")
            raise typer.Exit(1) from exc
        label_frame = None
        if labels is not None:
            label_frame = (
                pl.read_parquet(labels) if labels.suffix == ".parquet" else pl.read_csv(labels)
            )
        products = pl.DataFrame(
            {
                "product_id": list(catalog.products),
                "collection_ids": [list(p.collection_ids) for p in catalog.products.values()],
            }
        )
        collections = pl.DataFrame(
            {
                "collection_id": list(catalog.collections),
                "title": [c.title for c in catalog.collections.values()],
            }
        )
        policy_model = fit_shop_markov(
            events, products, collections, label_frame, label_column=label_column
        )
        policy_model.save(out_dir / "markov_policy.json")
        console.print(
            f"fitted a Markov policy on {events.height:,} events, "
            f"{len(policy_model.labels)} labels -> {out_dir / 'markov_policy.json'}"
        )
    cfg = SimulationConfig(
        n_sessions=sessions,
        concurrency=concurrency,
        seed=seed,
        run_id=run_id,
        runtime=RuntimeConfig(max_steps=max_steps, session_timeout_s=timeout_s),
    )
    with progress_bar(sessions, f"{shop}: sessions", console=console) as bar:
        try:
            report = simulate_shop(
                catalog,
                policy_model,
                cfg,
                out_dir,
                events_lake=events_lake,
                on_done=lambda _res: bar.advance(),
            )
        except BrowserUnavailable as exc:
            console.print(f"[red]{exc}[/]")
            raise typer.Exit(1) from exc
    summary = report.summary() | {"shop": shop, "run_id": run_id, "seed": seed}
    summary["events_lake"] = str(events_lake or out_dir / "lake")
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    table = Table("figure", "value", title=f"simulation of {shop}")
    for k, v in summary.items():
        table.add_row(k, json.dumps(v) if isinstance(v, dict) else str(v))
    console.print(table)
