"""The population-recovery figures as a table (paper App. B): the held-out figures of
`simpersona.personas.distribution` / `heldout_recovery` beside the paper's numbers, in
Markdown. Computing stays in distribution.py; this module only renders."""

from __future__ import annotations

import math
from typing import Any

from simpersona.personas.distribution import HEADLINE_FEATURES, PAPER_APPENDIX_B


def appendix_b_table(figures: dict[str, Any], prefix: str = "") -> str:
    """Markdown table: the held-out figures (`<key>_heldout`, with their 95 % intervals)
    next to the paper's App. B numbers, and the in-sample reading (`<key>_insample`: every
    store, profiles from every buyer) as a labelled extra."""
    rows = [
        ("js_mean", "mean JS divergence (base 2)", "{:.3f}"),
        ("js_median", "median JS divergence", "{:.3f}"),
        ("js_under_0_10", "stores with JS < 0.10", "{:d}"),
        ("n_stores", "stores", "{:d}"),
        *[(f"r2_{f}", f"R² {f}", "{:.3f}") for f in HEADLINE_FEATURES],
    ]

    def cell(key: str, fmt: str) -> str:
        v = figures.get(key)
        if v is None or (isinstance(v, float) and math.isnan(v)):
            return "–"
        return fmt.format(int(v)) if "d" in fmt else fmt.format(v)

    lines = [
        "| metric | ours: held-out stores, A–D | 95 % CI | paper | in-sample (all stores, A–E) |",
        "|---|---:|---:|---:|---:|",
    ]
    for key, label, fmt in rows:
        held = f"{prefix}{key}_heldout"
        lo, hi = cell(f"{held}_ci_low", fmt), cell(f"{held}_ci_high", fmt)
        ci = f"{lo} – {hi}" if lo != "–" else "–"
        ref = PAPER_APPENDIX_B.get(key)
        paper = "" if ref is None else (f"{int(ref)}" if "d" in fmt else f"{ref:.3f}")
        insample = cell(f"{prefix}{key}_insample", fmt)
        lines.append(f"| {label} | {cell(held, fmt)} | {ci} | {paper} | {insample} |")
    note = figures.get(f"{prefix}recovery_note")
    return "\n".join(lines) + "\n" + (f"\n{note}\n" if note else "")
