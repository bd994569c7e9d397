"""One timestamp parser for every reader of raw logs: the importers (with a format and a time
zone from the mapping) and the warehouse validation (ISO-8601 variants)."""

from __future__ import annotations

from typing import Literal

import polars as pl

from simpersona.schema import TS_DTYPE

# Tried in order in auto mode, after a trailing "Z"/"UTC" (any case) became "+00:00".
_AWARE = (
    "%Y-%m-%dT%H:%M:%S%.f%:z",
    "%Y-%m-%d %H:%M:%S%.f%:z",
    "%Y-%m-%dT%H:%M:%S%.f%z",
    "%Y-%m-%d %H:%M:%S%.f%z",
)
_NAIVE = (
    "%Y-%m-%dT%H:%M:%S%.f",
    "%Y-%m-%d %H:%M:%S%.f",
    "%Y-%m-%dT%H:%M",
    "%Y-%m-%d %H:%M",
    "%Y-%m-%d",
)
EPOCH_FORMATS: dict[str, Literal["s", "ms", "us"]] = {
    "epoch_s": "s",
    "epoch_ms": "ms",
    "epoch_us": "us",
}


def parse_timestamp(expr: pl.Expr, fmt: str | None = None, timezone: str = "UTC") -> pl.Expr:
    """Parse a column of strings into UTC timestamps (null where it does not parse).

    `fmt`: a strftime/chrono format (`%Y-%m-%d %H:%M:%S UTC`), `epoch_s|epoch_ms|epoch_us`,
    or None for ISO-8601 variants: `T` or space, fractional seconds, minutes only, a date
    only, an offset (`+02:00`, `+0200`) or a trailing `Z`/`UTC` in any case. Times without
    an offset are read in `timezone` (a DST gap gives null, an overlap the earlier time).
    """
    s = expr.cast(pl.String).str.strip_chars()
    if fmt is not None and fmt in EPOCH_FORMATS:
        num = s.cast(pl.Int64, strict=False)
        return pl.from_epoch(num, time_unit=EPOCH_FORMATS[fmt]).dt.replace_time_zone("UTC")

    def naive(text: pl.Expr, f: str, tz: str) -> pl.Expr:
        out = text.str.to_datetime(f, strict=False, time_unit="us")
        if tz == "UTC":
            return out.dt.replace_time_zone("UTC")
        return out.dt.replace_time_zone(
            tz, ambiguous="earliest", non_existent="null"
        ).dt.convert_time_zone("UTC")

    def aware(text: pl.Expr, f: str) -> pl.Expr:
        return text.str.to_datetime(f, strict=False, time_unit="us").dt.convert_time_zone("UTC")

    if fmt:
        if "%z" in fmt or "%:z" in fmt or "%#z" in fmt:
            return aware(s, fmt).cast(TS_DTYPE)
        literal_utc = "Z" in fmt.replace("%Z", "") or "UTC" in fmt
        return naive(s, fmt, "UTC" if literal_utc else timezone).cast(TS_DTYPE)
    utc = s.str.replace(r"(?i)\s*(UTC|Z)$", "+00:00")
    parts = [aware(utc, f) for f in _AWARE] + [naive(s, f, timezone) for f in _NAIVE]
    return pl.coalesce([p.cast(TS_DTYPE) for p in parts])
