"""The codebook quality reports side by side (`simpersona.personas.quality.codebook_report`),
with the paper's Table 1 beside them: a Markdown table and a rich console table; and the
strata-pure ceilings (`simpersona.personas.quality.purity_ceilings`) as one sentence."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

# Paper Table 1 (k-means, VQ-VAE), keyed like `codebook_report`.
PAPER_TABLE1: dict[str, tuple[float, float]] = {
    "stratum_purity_pct": (78.9, 84.5),
    "incompatible_mixing_codes": (6, 0),
    "incoherent_engagement_pct": (66.7, 0.5),
    "incoherent_exploration_pct": (4.6, 0.0),
    "incoherent_purchase_pct": (5.4, 0.0),
    "pairwise_cosine": (0.722, 0.774),
    "calinski_harabasz": (173.8, 206.5),
}

# Rows of the side-by-side table: (key, label, format).
REPORT_ROWS: tuple[tuple[str, str, str], ...] = (
    ("n_buyers", "buyers", "int"),
    ("k", "codebook size K", "int"),
    ("used_codes", "used codes", "int"),
    ("dead_codes", "dead codes", "int"),
    ("singleton_codes", "codes with one buyer", "int"),
    ("perplexity", "usage perplexity exp(H)", "f1"),
    ("stratum_purity_pct", "mean stratum purity (over codes)", "pct"),
    ("stratum_purity_weighted_pct", "stratum purity (over buyers)", "pct"),
    ("incompatible_mixing_codes", "incompatible-mixing codes", "int"),
    ("incoherent_engagement_pct", "incoherent buyers: engagement", "pct"),
    ("incoherent_exploration_pct", "incoherent buyers: exploration", "pct"),
    ("incoherent_purchase_pct", "incoherent buyers: purchase", "pct"),
    ("incoherent_any_engagement_pct", "… any Low+High: engagement", "pct"),
    ("incoherent_any_exploration_pct", "… any Low+High: exploration", "pct"),
    ("incoherent_any_purchase_pct", "… any Low+High: purchase", "pct"),
    ("pairwise_cosine", "mean within-code pairwise cosine", "f3"),
    ("pairwise_cosine_buyer_weighted", "… weighted by code size", "f3"),
    ("calinski_harabasz", "Calinski–Harabasz (403-d vectors)", "f1"),
    ("calinski_harabasz_behaviour", "Calinski–Harabasz (16 behavioural scalars)", "f1"),
    ("planted_ari", "ARI vs planted types", "f3"),
    ("planted_nmi", "NMI vs planted types", "f3"),
    ("planted_majority_ari", "ARI, codes mapped to types by majority", "f3"),
    ("planted_majority_accuracy_pct", "buyers in their code's majority type", "pct"),
)


def _fmt(value: Any, kind: str) -> str:
    if value is None:
        return "–"
    if isinstance(value, float) and math.isnan(value):
        return "n/a"
    if kind == "int":
        return f"{int(value):,}"
    if kind == "pct":
        return f"{float(value):.1f} %"
    if kind == "f1":
        return f"{float(value):.1f}"
    return f"{float(value):.3f}"


def _rows(reports: Mapping[str, Mapping[str, Any]], paper: bool) -> tuple[list[str], list]:
    names = list(reports)
    header = ["metric", *names]
    if paper:
        header += ["paper k-means", "paper VQ-VAE"]
    rows = []
    for key, label, kind in REPORT_ROWS:
        if not any(key in r for r in reports.values()):
            continue
        cells = [label, *(_fmt(reports[nm].get(key), kind) for nm in names)]
        if paper:
            ref = PAPER_TABLE1.get(key)
            cells += [_fmt(v, kind) for v in ref] if ref else ["", ""]
        rows.append(cells)
    return header, rows


def side_by_side(reports: Mapping[str, Mapping[str, Any]], paper: bool = True) -> str:
    """A Markdown table: one row per metric, one column per report (in the given order), and
    the paper's Table 1 figures as two extra columns where the paper has the metric."""
    header, rows = _rows(reports, paper)
    lines = [
        "| " + " | ".join(header) + " |",
        "|" + "|".join(["---"] + ["---:"] * (len(header) - 1)) + "|",
    ]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    thresholds = {
        (r.get("mixing_threshold"), r.get("incoherence_threshold")) for r in reports.values()
    }
    if len(thresholds) == 1:
        mix, inc = next(iter(thresholds))
        if mix is not None and inc is not None:
            lines.append("")
            lines.append(
                f"Incompatible mixing: A–C and D each ≥ {100 * mix:.0f} % of a code; "
                f"incoherent: Low and High each ≥ {100 * inc:.0f} % of a code "
                "('any' rows: at least one of each)."
            )
    return "\n".join(lines) + "\n"


def print_reports(
    reports: Mapping[str, Mapping[str, Any]], paper: bool = True, console: Any = None
) -> None:
    """Print the side-by-side comparison as a rich table."""
    from rich.console import Console
    from rich.table import Table

    header, rows = _rows(reports, paper)
    table = Table(title="Codebook quality (paper Table 1)")
    for i, h in enumerate(header):
        style = "dim" if paper and i >= len(header) - 2 else None
        table.add_column(h, justify="left" if i == 0 else "right", style=style)
    for r in rows:
        table.add_row(*r)
    (console or Console()).print(table)


def purity_ceilings_line(ceilings: Mapping[str, float]) -> str:
    """`quality.purity_ceilings`' figures as one sentence, for tables and console output."""
    parts = [
        f"{label}: {ceilings[key]:.1f}"
        for key, label in (
            ("ch_pure_strata", "keep strata apart"),
            ("ch_pure_strata_bins", "keep strata and all three bins apart"),
        )
        if key in ceilings
    ]
    if not parts:
        return "No strata-pure ceiling: the codebook has fewer codes than behaviour groups"
    return "Calinski–Harabasz (403-d) of the tightest codebooks that " + "; that ".join(parts)
