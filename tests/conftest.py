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


def require_chromium() -> None:
    """Fail (never skip) when Debian chromium is missing: `make test` installs it, so a
    machine without it is a broken set-up, not a reason to pass without the browser tests."""
    from simpersona.agent.browser import CHROMIUM_PATH

    if not Path(CHROMIUM_PATH).exists():
        pytest.fail(f"Debian chromium not found at {CHROMIUM_PATH}: run `make chromium`")


def require_public_data(path: Path | None = None) -> Path:
    """Fail (never skip) when the real public data is missing: it sits beside the repo in
    ../shared on every machine the suite runs on, so its absence is a broken set-up."""
    path = path or PUBLIC_DATA
    if not path.exists():
        pytest.fail(f"real public data not found at {path} (the tests read ../shared in place)")
    return path


@pytest.fixture
def public_data() -> Path:
    return require_public_data()


@pytest.fixture(autouse=True)
def _no_dagster_state_storage_from_earlier_tests():
    """Each test starts with no Dagster defs-state storage in the context. Dagster keeps the
    storage of the instance entered last in a context variable and reads it whenever
    definitions load; one left by an earlier test, whose instance is gone, fails the next
    load with "Attempted to resolve undefined DagsterInstance weakref" (seen in the full
    suite only, depending on garbage collection)."""
    from dagster._core.storage.defs_state.base import set_defs_state_storage

    with set_defs_state_storage(None):
        yield


@pytest.fixture(scope="module")
def pg():
    """A real PostgreSQL server (Debian's binaries) for one test module, stopped after it."""
    from tests.postgres_server import start_postgres

    server = start_postgres()
    yield server
    server.stop()


def read_lake_table(root: Path, table: str):
    """Every Parquet file of a lake table (all partitions) as one Polars frame."""
    import polars as pl

    return pl.read_parquet(str(root / table / "**" / "*.parquet"), hive_partitioning=False)
