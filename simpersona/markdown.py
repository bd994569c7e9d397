"""Small Markdown renderers for previews in Dagster metadata and reports."""

from __future__ import annotations

from collections.abc import Mapping

import polars as pl


def _cell(v: object, width: int = 60) -> str:
    s = "" if v is None else (f"{v:.4g}" if isinstance(v, float) else str(v))
    s = s.replace("|", "\\|").replace("\n", " ")
    return s if len(s) <= width else s[: width - 1] + "…"


def frame_to_markdown(df: pl.DataFrame, max_rows: int = 20) -> str:
    """A Markdown table of the first `max_rows` rows of `df`."""
    if df.width == 0:
        return "_empty_"
    head = df.head(max_rows)
    lines = ["| " + " | ".join(df.columns) + " |", "|" + "---|" * df.width]
    lines += ["| " + " | ".join(_cell(v) for v in row) + " |" for row in head.iter_rows()]
    if df.height > max_rows:
        lines.append(f"\n_{df.height - max_rows:,} more rows_")
    if df.height == 0:
        lines.append("\n_no rows_")
    return "\n".join(lines)


def counts_to_markdown(counts: Mapping[str, int | float], key: str, value: str = "rows") -> str:
    """A two-column Markdown table of `counts`, largest first."""
    if not counts:
        return "_none_"
    lines = [f"| {key} | {value} |", "|---|---:|"]
    for k, v in sorted(counts.items(), key=lambda kv: -kv[1]):
        lines.append(f"| {_cell(k)} | {v:,} |")
    return "\n".join(lines)
