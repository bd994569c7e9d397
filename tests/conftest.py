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


def resources_for(root: Path, max_reject_share: float = 0.05) -> dict:
    """The pipeline's resources under `root` (an isolated data dir), with a fixed buyer-hash
    key and 3 pretraining steps of the tiny base: the path runs, the CI minutes stay few."""
    from dagster_project.resources import resources_under

    return resources_under(root, "test-key", max_reject_share, tiny_pretrain_steps=3)


def write_small_shop(lake: Path, shop: str, date: str, n: int = 3) -> None:
    """A shop with one product and `n` product views on `date`, as raw lake files."""
    (lake / "products" / f"shop={shop}").mkdir(parents=True, exist_ok=True)
    (lake / "products" / f"shop={shop}" / "p.csv").write_text(
        f"shop_id,product_id,title,description,price,collection_ids\n{shop},p1,Shoe,,10,\n"
    )
    d = lake / "events" / f"shop={shop}" / f"date={date}"
    d.mkdir(parents=True, exist_ok=True)
    rows = [f"{shop}-{date}-{i},{shop},u{i},,{date}T10:0{i}:00Z,product_view,p1" for i in range(n)]
    (d / "e.csv").write_text(
        "event_id,shop_id,buyer_id,session_id,ts,event_type,product_id\n" + "\n".join(rows) + "\n"
    )
