"""The Dagster code location: definitions, in-process materialization, sensor, schedule,
MLflow tagging."""

from __future__ import annotations

import datetime as dt
import subprocess
import sys
import time
from pathlib import Path

import dagster as dg
import polars as pl
import pytest

from dagster_project.definitions import defs
from dagster_project.defs.ingest.schedules import nightly_ingest_schedule
from dagster_project.defs.ingest.sensors import lake_sensor
from dagster_project.partitions import day_partitions, shop_partitions
from dagster_project.resources import LakeResource
from dagster_project.run import run_ingestion
from simpersona.tracking import Tracker
from simpersona.warehouse import Warehouse
from tests.conftest import resources_for, write_small_shop

REPO = Path(__file__).resolve().parents[1]


def test_definitions_validate_cli() -> None:
    out = subprocess.run(
        [
            str(Path(sys.executable).parent / "dagster"),
            "definitions",
            "validate",
            "-w",
            "workspace.yaml",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert "Validation successful" in out.stdout + out.stderr


def test_definitions_contents() -> None:
    graph = defs.resolve_asset_graph()
    keys = {k.to_user_string() for k in graph.get_all_asset_keys()}
    assert {"catalog", "raw_events", "quarantine"} <= keys
    assert defs.resolve_sensor_def("lake_sensor") is not None
    assert defs.resolve_schedule_def("nightly_ingest_schedule") is not None


def test_two_generated_shops_in_process(tmp_path: Path) -> None:
    from simpersona.synth import GeneratorConfig, generate_lake

    gen = generate_lake(
        tmp_path / "lake",
        GeneratorConfig(n_shops=2, n_buyers=3_000, seed=7, n_days=3),
        ground_truth_path=tmp_path / "gt.parquet",
        progress=False,
    )
    with dg.instance_for_test() as instance:
        _check_two_shops(tmp_path, gen, instance)


def _check_two_shops(tmp_path: Path, gen, instance: dg.DagsterInstance) -> None:
    res = run_ingestion(tmp_path / "lake", instance=instance, resources=resources_for(tmp_path))
    assert res.catalogs == 2
    wh = Warehouse.at(tmp_path / "warehouse", tmp_path / "warehouse.duckdb")
    for shop in gen.shops:
        events = wh.read_events(shop.shop_id)
        # every generated event arrives; the generator makes no bad rows
        assert events.height == shop.events, shop.shop_id
        assert events["buyer_id"].n_unique() == shop.buyers
        assert events["session_id"].null_count() == 0
        counts = dict(events.group_by("event_type").len().iter_rows())
        assert counts == {k: v for k, v in shop.events_by_type.items() if v}
    assert res.rows_rejected == 0
    assert res.rows_valid == sum(s.events for s in gen.shops)
    # partitions registered, materializations recorded with metadata
    assert sorted(instance.get_dynamic_partitions("shops")) == sorted(s.shop_id for s in gen.shops)
    mats = instance.fetch_materializations(dg.AssetKey("raw_events"), limit=1000).records
    assert len(mats) == res.partitions
    md = mats[0].asset_materialization.metadata
    assert {"rows_read", "rows_valid", "rows_rejected", "preview", "mlflow_run_id"} <= set(md)
    # every materialization is an MLflow run tagged with run id, asset key and partition
    tracker = Tracker(f"sqlite:///{tmp_path / 'mlflow.db'}", str(tmp_path / "mlartifacts"))
    runs = tracker.find_runs("tags.`dagster.asset_key` = 'raw_events'")
    assert len(runs) == res.partitions
    run_ids = {m.run_id for m in mats}
    assert {r.data.tags["dagster.run_id"] for r in runs} == run_ids
    assert all("|" in r.data.tags["dagster.partition"] for r in runs)
    assert all(r.data.metrics["rows_valid"] > 0 for r in runs)
    # the DuckDB views answer
    n = wh.query("select count(*) n from raw_events")["n"].item()
    assert n == res.rows_valid


def test_lake_sensor_registers_new_shops_and_requests_changed_partitions(tmp_path: Path) -> None:
    lake = tmp_path / "lake"
    write_small_shop(lake, "alpha", "2025-03-01")
    with dg.instance_for_test() as instance:
        _check_sensor(lake, instance)


def _check_sensor(lake: Path, instance: dg.DagsterInstance) -> None:
    res = {"lake": LakeResource(root=str(lake))}
    ctx = dg.build_sensor_context(instance=instance, resources=res)
    result = lake_sensor(ctx)
    adds = {
        r.partitions_def_name: set(r.partition_keys) for r in result.dynamic_partitions_requests
    }
    assert adds == {"shops": {"alpha"}, "days": {"2025-03-01"}}
    keys = sorted(str(r.partition_key) for r in result.run_requests)
    assert keys == ["2025-03-01|alpha", "alpha"]
    instance.add_dynamic_partitions("shops", ["alpha"])
    instance.add_dynamic_partitions("days", ["2025-03-01"])
    # nothing changed: no runs, no new partitions
    time.sleep(0.01)
    quiet = lake_sensor(
        dg.build_sensor_context(instance=instance, resources=res, cursor=result.cursor)
    )
    assert quiet.run_requests == [] and quiet.dynamic_partitions_requests == []
    # a new shop folder appears: it is registered and ingested
    write_small_shop(lake, "beta", "2025-03-02")
    new = lake_sensor(
        dg.build_sensor_context(instance=instance, resources=res, cursor=quiet.cursor)
    )
    adds = {r.partitions_def_name: set(r.partition_keys) for r in new.dynamic_partitions_requests}
    assert adds == {"shops": {"beta"}, "days": {"2025-03-02"}}
    assert sorted(str(r.partition_key) for r in new.run_requests) == ["2025-03-02|beta", "beta"]


def test_nightly_schedule_requests_yesterday_for_every_shop(tmp_path: Path) -> None:
    lake = tmp_path / "lake"
    write_small_shop(lake, "alpha", "2025-03-01")
    write_small_shop(lake, "beta", "2025-03-01")
    write_small_shop(lake, "gamma", "2025-02-27")
    with dg.instance_for_test() as instance:
        ctx = dg.build_schedule_context(
            instance=instance,
            resources={"lake": LakeResource(root=str(lake))},
            scheduled_execution_time=dt.datetime(2025, 3, 2, 2, tzinfo=dt.UTC),
        )
        reqs = nightly_ingest_schedule(ctx)
        keys = sorted(str(r.partition_key) for r in reqs)
        assert keys == ["2025-03-01|alpha", "2025-03-01|beta"]
        assert set(instance.get_dynamic_partitions(shop_partitions.name)) == {"alpha", "beta"}
        assert instance.get_dynamic_partitions(day_partitions.name) == ["2025-03-01"]


def test_failed_partition_reports_file_and_reason(tmp_path: Path) -> None:
    lake = tmp_path / "lake"
    write_small_shop(lake, "alpha", "2025-03-01")
    bad = lake / "events" / "shop=alpha" / "date=2025-03-01" / "bad.csv"
    bad.write_text(
        "event_id,shop_id,buyer_id,session_id,ts,event_type,product_id\nx,alpha,,,2025-03-01T00:00:00Z,product_view,p1\n"
    )
    with (
        dg.instance_for_test() as instance,
        pytest.raises(Exception, match=r"bad\.csv: missing_field"),
    ):
        run_ingestion(lake, instance=instance, resources=resources_for(tmp_path))
    assert pl.read_parquet(
        tmp_path / "warehouse/quarantine/events/shop=alpha/date=2025-03-01/data.parquet"
    )["reason"].to_list() == ["missing_field"]


def test_hyperparameter_overrides_are_typed_config():
    """The VQ-VAE's and the persona model's hyper-parameters are nested, typed run config: a
    known field is taken as given, a misspelt or mistyped one fails the launch naming it."""
    from dagster_project.defs.grounding.assets import PersonaModelConfig
    from dagster_project.defs.personas.assets import PersonaCodebookConfig, _vqvae_config

    cfg = PersonaCodebookConfig(vqvae={"lambda_con": 0.3, "hidden_dims": [64, 32]})
    vq = _vqvae_config(cfg, {}, codebook_size=16)
    assert (vq.lambda_con, list(vq.hidden_dims), vq.codebook_size) == (0.3, [64, 32], 16)
    assert _vqvae_config(PersonaCodebookConfig(), {}).lambda_con == 0.15  # the preset's
    assert PersonaModelConfig(train={"epochs": 2}).train.model_dump(exclude_none=True) == {
        "epochs": 2
    }
    job = defs.get_job_def("personas_fit_job")
    bad = {"ops": {"persona_codebook": {"config": {"vqvae": {"lambda_conn": 0.3}}}}}
    with pytest.raises(dg.DagsterInvalidConfigError, match="lambda_conn"):
        dg.validate_run_config(job, bad)
    bad = {"ops": {"persona_codebook": {"config": {"vqvae": {"lambda_con": "high"}}}}}
    with pytest.raises(dg.DagsterInvalidConfigError, match="lambda_con"):
        dg.validate_run_config(job, bad)
