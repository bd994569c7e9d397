"""The personas stage on the console: Table 1 side by side, per-store recovery, App. B."""

from dagster_project.run.figures import PersonasRun


def print_personas(run: PersonasRun, console=None) -> None:
    """The Table-1 side-by-side table, the App. B recovery figures and per-store JS."""
    from rich.console import Console
    from rich.table import Table

    from simpersona.personas.quality import purity_ceilings_line
    from simpersona.personas.quality_table import print_reports

    console = console or Console()
    print_reports(run.reports, console=console)
    if "ch_pure_strata" in run.report:
        console.print(purity_ceilings_line(run.report))
    table = Table(title="Stratum recovery per store (JS divergence, base 2)")
    cols = ("store", "split", "buyers", "held-out JS (A–D)", "k-means", "in-sample JS", "k-means")
    for col in cols:
        table.add_column(col, justify="left" if col in ("store", "split") else "right")

    def js(v) -> str:
        return "–" if v is None or v != v else f"{v:.4f}"

    for r in run.stores:
        table.add_row(
            str(r["shop_id"]), r.get("split", ""), f"{r['n_buyers']:,}",
            js(r.get("js_heldout")), js(r.get("kmeans_js_heldout")),
            js(r.get("js_insample")), js(r.get("kmeans_js_insample")),
        )  # fmt: skip
    console.print(table)
    console.print(recovery_line(run.recovery, run.recovery_note))
    console.print(f"persona cards: {run.cards} ({run.cards_html})")


def recovery_line(rec: dict, note: str = "") -> str:
    """App. B in one line: held-out stores first (with the interval), in-sample after."""
    nan = float("nan")
    parts = []
    if rec.get("n_stores_heldout"):
        lo, hi = rec.get("js_mean_heldout_ci_low"), rec.get("js_mean_heldout_ci_high")
        ci = f" (95 % CI {lo:.4f}–{hi:.4f})" if lo is not None else ""
        parts.append(
            f"held-out stores (A–D): JS mean {rec.get('js_mean_heldout', nan):.4f}{ci}, median "
            f"{rec.get('js_median_heldout', nan):.4f}, {rec.get('js_under_0_10_heldout', 0)} of "
            f"{rec['n_stores_heldout']} stores < 0.10"
            + "".join(
                f"; R² {f} {rec[f'r2_{f}_heldout']:.3f}"
                for f in ("intent_strength", "atc_rate", "checkout_rate", "browse_only_rate")
                if f"r2_{f}_heldout" in rec
            )
        )
    parts.append(
        f"in-sample (all stores, A–E, fitted on the stores it scores): JS mean "
        f"{rec.get('js_mean_insample', nan):.4f}"
    )
    return "; ".join(parts) + (f". {note}" if note else "")
