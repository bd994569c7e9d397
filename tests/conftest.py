"""Shared fixtures. Real public data is read in place from ../shared (never copied)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
PUBLIC_DATA = SHARED / "data" / "public"

os.environ.setdefault("SIMPERSONA_BUYER_HASH_KEY", "test-key")
os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture
def public_data() -> Path:
    if not PUBLIC_DATA.is_dir():
        pytest.skip(f"real public data not found at {PUBLIC_DATA}")
    return PUBLIC_DATA
