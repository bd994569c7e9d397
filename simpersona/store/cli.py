"""Typer-ready command: `simpersona storefront`.

Register it on the main app with `app.command("storefront")(storefront_command)`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from simpersona.datadir import DataDirOption, lake_or_default
from simpersona.store.state import MAX_BUYERS


def storefront_command(
    shop: Annotated[
        list[str] | None,
        typer.Option(
            "--shop",
            help="Shop to serve (repeatable). One shop is also served at '/'; several are "
            "served under /s/<shop>/. Default: every shop with a catalog.",
        ),
    ] = None,
    data_dir: DataDirOption = Path("data"),
    lake: Annotated[
        Path | None,
        typer.Option(
            help="Lake: events are written here, the catalog read from here unless "
            "--warehouse; default <data-dir>/lake."
        ),
    ] = None,
    warehouse: Annotated[
        Path | None,
        typer.Option(help="Warehouse folder to read the validated catalog from (optional)."),
    ] = None,
    host: Annotated[
        str, typer.Option(help="Interface to bind; loopback by default (not exposed).")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on (0 = any free port).")] = 8000,
    currency: Annotated[
        str | None,
        typer.Option(help="Currency code for prices; default: from the shop's events, else USD."),
    ] = None,
    flush_seconds: Annotated[
        float, typer.Option(help="Write buffered events to the lake at least this often.")
    ] = 10.0,
    debug_routes: Annotated[
        bool,
        typer.Option(help="Enable /__debug/crash, which answers with a forced error (500)."),
    ] = False,
    access_log: Annotated[
        bool,
        typer.Option(
            help="Print a line per request (uvicorn's access log). Off by default: every "
            "visit is in the event log already, and the lines cost ~7 % of the server's CPU."
        ),
    ] = False,
    public_url: Annotated[
        str | None,
        typer.Option(
            help="Origin written into logged event URLs (default: http://<host>:<port>; the "
            "request's Host header is never used)."
        ),
    ] = None,
    max_buyers: Annotated[
        int, typer.Option(help="Buyers whose cart and session each shop keeps in memory.")
    ] = MAX_BUYERS,
    after_add: Annotated[
        str,
        typer.Option(
            help="Where an add to cart leads: cart (the cart page) or product (back to the "
            "product page with a notice, as many themes do)."
        ),
    ] = "cart",
) -> None:
    """Serve the storefront for one or more shops and log every visit into the lake."""
    lake = lake_or_default(lake, data_dir)
    import uvicorn
    from rich.console import Console

    from simpersona.lake import Lake
    from simpersona.store.app import create_app
    from simpersona.store.catalog import StoreCatalog
    from simpersona.store.events import LakeEventSink
    from simpersona.warehouse import Warehouse

    console = Console(stderr=True)
    if after_add not in ("cart", "product"):
        console.print(f"[red]error:[/] --after-add must be cart or product, got {after_add!r}")
        raise typer.Exit(2)
    shops = list(shop or [])
    if not shops:
        if warehouse is not None:
            shops = Warehouse.at(warehouse).shops_with("products")
        else:
            base = Lake.at(lake).root / "products"
            shops = sorted(
                p.name.removeprefix("shop=")
                for p in (base.iterdir() if base.is_dir() else [])
                if p.is_dir() and p.name.startswith("shop=")
            )
    if not shops:
        console.print(f"[red]no shops with a catalog in {warehouse or lake}[/]")
        raise typer.Exit(1)
    catalogs = {}
    for s in shops:
        try:
            catalogs[s] = (
                StoreCatalog.from_warehouse(warehouse, s, currency=currency)
                if warehouse is not None
                else StoreCatalog.from_lake(lake, s, currency=currency)
            )
        except FileNotFoundError as exc:
            console.print(f"[red]{exc}[/]")
            raise typer.Exit(1) from exc
    sink = LakeEventSink(lake, flush_interval_s=flush_seconds)
    app = create_app(
        catalogs[shops[0]] if len(shops) == 1 else catalogs,
        sink,
        debug_routes=debug_routes,
        public_url=public_url,
        max_buyers=max_buyers,
        after_add="product" if after_add == "product" else "cart",
    )
    shown = "localhost" if host in ("127.0.0.1", "::1") else host
    for s, cat in catalogs.items():
        prefix = "" if len(shops) == 1 else f"/s/{s}"
        console.print(
            f"[green]{s}[/]: {len(cat.products)} products, {len(cat.collections)} collections, "
            f"{cat.currency} at http://{shown}:{port}{prefix}/"
        )
    if sink.recovered_events:
        console.print(f"recovered {sink.recovered_events} events a killed storefront had logged")
    console.print(f"events -> {Lake.at(lake).root / 'events'} (every {flush_seconds:g} s)")
    try:
        uvicorn.run(app, host=host, port=port, log_level="info", access_log=access_log)
    finally:
        sink.close()
        console.print(f"wrote {sink.events_written} events in {len(sink.written)} files")
