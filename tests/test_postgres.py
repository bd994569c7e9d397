"""Dagster on a real PostgreSQL (the deployment's storage), started from Debian's package on
loopback: the instance is loaded from docker/dagster.yaml itself, real project assets are
materialized on a small generated lake (sequentially, then two shops in two processes at once,
as a deployment runs partitions), and the runs, events and partitions are read back through
the instance and straight from PostgreSQL with psycopg2."""

from __future__ import annotations

import hashlib
import multiprocessing as mp
import shutil
from pathlib import Path

import dagster as dg
import pytest

from tests.conftest import resources_for
from tests.postgres_server import PostgresServer

REPO = Path(__file__).resolve().parents[1]


def deployment_instance(
    home: Path, pg: PostgresServer, db: str, monkeypatch: pytest.MonkeyPatch
) -> dg.DagsterInstance:
    """A DAGSTER_HOME holding docker/dagster.yaml unchanged, its variables pointing at `pg`."""
    home.mkdir(parents=True, exist_ok=True)
    shutil.copy(REPO / "docker" / "dagster.yaml", home / "dagster.yaml")
    env = pg.env(db) | {
        "DAGSTER_HOME": str(home),
        "DAGSTER_MAX_CONCURRENT_RUNS": "4",
        "DAGSTER_COMPUTE_LOGS_DIR": str(home / "compute_logs"),
    }
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    return dg.DagsterInstance.from_config(str(home))


def _materialize_shop(args: tuple[str, str, str]) -> tuple[str, str]:
    """In a separate process, as a run container would: load the instance from DAGSTER_HOME
    (docker/dagster.yaml, PostgreSQL) and materialize one shop's enriched sessions."""
    home, root, shop = args
    from dagster_project.definitions import all_assets

    instance = dg.DagsterInstance.from_config(home)
    res = dg.materialize(
        all_assets,
        selection=["enriched_sessions"],
        partition_key=shop,
        instance=instance,
        resources=resources_for(Path(root)),
        raise_on_error=True,
    )
    return shop, res.run_id


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.slow
def test_dagster_runs_on_postgres(
    tmp_path: Path,
    pg: PostgresServer,
    monkeypatch: pytest.MonkeyPatch,
    request: pytest.FixtureRequest,
) -> None:
    from dagster_postgres import (
        PostgresEventLogStorage,
        PostgresRunStorage,
        PostgresScheduleStorage,
    )

    from dagster_project.run import run_ingestion
    from simpersona.synth import GeneratorConfig, generate_lake
    from simpersona.warehouse import Warehouse

    db = pg.create_database("dagster_assets")
    home = tmp_path / "dagster_home"
    instance = deployment_instance(home, pg, db, monkeypatch)
    # Entered, as `dagster` itself does: definitions loaded in this process then read this
    # instance's defs-state storage, not one left in the context by an earlier test's
    # instance (in the full suite that one is garbage: "undefined DagsterInstance weakref").
    instance.__enter__()
    request.addfinalizer(lambda: instance.__exit__(None, None, None))
    assert isinstance(instance.run_storage, PostgresRunStorage)
    assert isinstance(instance.event_log_storage, PostgresEventLogStorage)
    assert isinstance(instance.schedule_storage, PostgresScheduleStorage)
    assert type(instance.run_launcher).__name__ == "DockerRunLauncher"
    assert type(instance.run_coordinator).__name__ == "QueuedRunCoordinator"

    gen = generate_lake(
        tmp_path / "lake",
        GeneratorConfig(n_shops=2, n_buyers=1_000, seed=11, n_days=2),
        ground_truth_path=tmp_path / "gt.parquet",
        progress=False,
    )
    shops = sorted(s.shop_id for s in gen.shops)

    # 1. ingestion, run by run (catalog per shop, raw_events per shop-day, quarantine)
    ing = run_ingestion(tmp_path / "lake", instance=instance, resources=resources_for(tmp_path))
    assert ing.catalogs == 2 and ing.partitions >= 2
    assert ing.rows_valid == sum(s.events for s in gen.shops)

    # 2. two shops' enriched sessions in two processes at once, both on the same PostgreSQL
    ctx = mp.get_context("spawn")
    with ctx.Pool(2) as pool:
        parallel = dict(pool.map(_materialize_shop, [(str(home), str(tmp_path), s) for s in shops]))
    assert sorted(parallel) == shops

    # --- read back through the instance
    expected_runs = ing.catalogs + ing.partitions + 1 + len(shops)
    runs = instance.get_runs()
    assert len(runs) == expected_runs
    assert {r.status for r in runs} == {dg.DagsterRunStatus.SUCCESS}
    assert set(parallel.values()) <= {r.run_id for r in runs}
    assert sorted(instance.get_dynamic_partitions("shops")) == shops
    mats = instance.fetch_materializations(dg.AssetKey("raw_events"), limit=1000).records
    assert len(mats) == ing.partitions
    enriched = instance.fetch_materializations(dg.AssetKey("enriched_sessions"), limit=10).records
    assert sorted(m.partition_key for m in enriched) == shops
    assert {m.run_id for m in enriched} == set(parallel.values())
    wh = Warehouse.at(tmp_path / "warehouse", tmp_path / "warehouse.duckdb")
    for shop in shops:
        assert wh.read_partition("enriched_sessions", shop).height > 0

    # --- and straight from PostgreSQL
    con = pg.connect(db)
    try:
        with con.cursor() as cur:
            cur.execute("select status, count(*) from runs group by status")
            assert dict(cur.fetchall()) == {"SUCCESS": expected_runs}
            cur.execute(
                "select asset_key, partition, run_id from event_logs "
                "where dagster_event_type = 'ASSET_MATERIALIZATION'"
            )
            rows = cur.fetchall()
            by_asset: dict[str, int] = {}
            for key, _, _ in rows:
                by_asset[key] = by_asset.get(key, 0) + 1
            assert by_asset['["raw_events"]'] == ing.partitions
            assert by_asset['["catalog"]'] == 2
            assert by_asset['["quarantine"]'] == 1
            assert by_asset['["enriched_sessions"]'] == 2
            assert {(p, r) for k, p, r in rows if k == '["enriched_sessions"]'} == {
                (s, parallel[s]) for s in shops
            }
            cur.execute(
                "select partition from dynamic_partitions where partitions_def_name = 'shops'"
            )
            assert sorted(r[0] for r in cur.fetchall()) == shops
    finally:
        con.close()

    # 3. re-running a shop-day partition adds a run and an event, and leaves its output as it was
    from dagster_project.partitions import shop_day_partitions

    key = shop_day_partitions.get_partition_key_from_str(str(mats[0].partition_key))
    shop, date = key.keys_by_dimension["shop"], key.keys_by_dimension["date"]
    out = wh.partition_path("raw_events", shop, date)
    before = _sha(out)
    from dagster_project.definitions import all_assets

    dg.materialize(
        all_assets,
        selection=["raw_events"],
        partition_key=key,
        instance=instance,
        resources=resources_for(tmp_path),
    )
    assert _sha(out) == before
    again = instance.fetch_materializations(dg.AssetKey("raw_events"), limit=1000).records
    assert len(again) == ing.partitions + 1
    assert len(instance.get_runs()) == expected_runs + 1
