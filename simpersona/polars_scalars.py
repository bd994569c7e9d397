"""Python numbers from polars' scalar results.

Polars types a reduction such as `Series.mean()` or `Series.min()` as any Python literal
(numbers, dates, strings, lists) or None, whatever the column's dtype. Callers reduce numeric
columns, so the value is a number at run time; `as_float` says so to the type checker and
converts it exactly as `float(value)` would.
"""

from __future__ import annotations

from typing import SupportsFloat, cast


def as_float(value: object) -> float:
    """`float(value)` for a polars scalar; a TypeError that names the cause when it is None
    (the mean, median or extreme of an empty or all-null column)."""
    if value is None:
        raise TypeError("expected a number, got None (an empty or all-null column)")
    # the same conversion as before: float() on whatever polars returned
    return float(cast(SupportsFloat, value))
