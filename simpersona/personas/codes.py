"""Persona-code arrays as every metric reads them."""

from __future__ import annotations

from typing import Any

import numpy as np


def as_codes(codes: Any) -> np.ndarray:
    """`codes` as a 1-D int64 array of non-negative codes; ValueError otherwise."""
    c = np.asarray(codes)
    if c.ndim != 1:
        raise ValueError(f"codes must be 1-D, got shape {c.shape}")
    if c.size and (not np.issubdtype(c.dtype, np.integer) or c.min() < 0):
        raise ValueError("codes must be non-negative integers")
    return c.astype(np.int64)
