"""Operating the pipeline with the real Dagster daemon: the nightly schedule ticks (cron every
minute in the test) and its runs succeed, the shops' downstream assets are refreshed after
them, a new shop folder dropped into the lake becomes partitions, a nightly partition run
twice leaves identical outputs; asset checks; the per-store backfill command."""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import httpx
import polars as pl
import pytest

from dagster_project.partitions import shop_day_key
from dagster_project.resources import (
    ArtifactsResource,
    BuyerHashResource,
    EmbeddingResource,
    IngestSettings,
    LakeResource,
    LLMResource,
    MLflowResource,
    WarehouseResource,
)
from scripts.local_services import free_port
from tests.conftest import write_small_shop

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
LOCATION = "dagster_project.definitions"
REPOSITORY = "__repository__"
# Small and fast fits (the per-shop chain is what the nightly refresh exercises).
FAST_CODEBOOK = {
    "epochs": 3,
    "min_steps": 0,
    "kmeans_k": 32,
    "kmeans_n_init": 1,
    "kmeans_max_iter": 5,
    "device": "cpu",
    "num_threads": 1,
}
SHOP_TABLES = (
    "enriched_sessions",
    "buyer_features",
    "buyer_vectors",
    "persona_assignments",
    "store_token_distribution",
)


# ---- a small data dir, ingested and fitted in-process -----------------------------------
def resources_at(root: Path) -> dict:
    """The resources the code location builds from SIMPERSONA_DATA_DIR=root (same paths)."""
    from dagster_project.resources import default_resources

    return {
        **default_resources(),  # every key the assets require (unused ones keep defaults)
        "lake": LakeResource(root=str(root / "lake")),
        "warehouse": WarehouseResource(
            root=str(root / "warehouse"), duckdb_path=str(root / "warehouse.duckdb")
        ),
        "buyer_hash": BuyerHashResource(key=os.environ["SIMPERSONA_BUYER_HASH_KEY"]),
        "ingest_settings": IngestSettings(),
        "mlflow": MLflowResource(
            tracking_uri=f"sqlite:///{root / 'mlflow.db'}", artifact_root=str(root / "mlartifacts")
        ),
        "artifacts": ArtifactsResource(root=str(root / "artifacts")),
        "embeddings": EmbeddingResource(
            cache_dir=str(root / "artifacts" / "embedding_cache"), num_threads=1
        ),
        "llm": LLMResource(cache_path=str(root / "llm_cache.sqlite")),
    }


def generate(root: Path, n_shops: int, n_buyers: int, last_day: dt.date, n_days: int, seed: int):
    from simpersona.synth import GeneratorConfig, generate_lake

    cfg = GeneratorConfig(
        n_shops=n_shops,
        n_buyers=n_buyers,
        seed=seed,
        n_days=n_days,
        start_date=last_day - dt.timedelta(days=n_days - 1),
        products_per_shop=(30, 50),
    )
    return generate_lake(
        root / "lake",
        cfg,
        ground_truth_path=root / "ground_truth" / "planted.parquet",
        progress=False,
    )


def instance_at(home: Path) -> dg.DagsterInstance:
    home.mkdir(parents=True, exist_ok=True)
    # the queued run coordinator of `dagster dev`, dequeuing every second instead of 5 s
    (home / "dagster.yaml").write_text(
        "telemetry:\n  enabled: false\n"
        "run_coordinator:\n"
        "  module: dagster._core.run_coordinator\n"
        "  class: QueuedRunCoordinator\n"
        "  config:\n    dequeue_interval_seconds: 1\n"
    )
    return dg.DagsterInstance.from_config(str(home))


def prepare_fitted(root: Path, instance: dg.DagsterInstance) -> list[str]:
    """Ingest the lake, compute features, fit the transform and a small codebook, assign
    personas per shop: the state after the first `simpersona demo`-like run."""
    from dagster_project.definitions import all_assets
    from dagster_project.run import QUIET, run_features, run_ingestion

    res = resources_at(root)
    run_ingestion(root / "lake", instance=instance, resources=res)
    run_features(instance, resources=res)
    dg.materialize(
        all_assets,
        selection=["persona_codebook"],
        instance=instance,
        resources=res,
        run_config={**QUIET, "ops": {"persona_codebook": {"config": FAST_CODEBOOK}}},
    )
    shops = sorted(instance.get_dynamic_partitions("shops"))
    for shop in shops:
        dg.materialize(
            all_assets,
            selection=["persona_assignments", "store_token_distribution"],
            partition_key=shop,
            instance=instance,
            resources=res,
            run_config=QUIET,
        )
    return shops


# ---- dagster dev on loopback ---------------------------------------------------------------


@dataclass
class DagsterDev:
    url: str
    proc: subprocess.Popen
    log: Path

    def gql(self, query: str, variables: dict | None = None, timeout: float = 60) -> dict:
        r = httpx.post(
            f"{self.url}/graphql",
            json={"query": query, "variables": variables or {}},
            timeout=timeout,
        )
        r.raise_for_status()
        body = r.json()
        assert "errors" not in body, body["errors"]
        return body["data"]

    def runs(self, tags: dict[str, str] | None = None) -> list[dict]:
        data = self.gql(
            RUNS_QUERY,
            {"filter": {"tags": [{"key": k, "value": v} for k, v in (tags or {}).items()]}},
        )
        return data["runsOrError"]["results"]

    def tail(self, n: int = 4000) -> str:
        return self.log.read_text(errors="replace")[-n:]


RUNS_QUERY = """
query Runs($filter: RunsFilter) {
  runsOrError(filter: $filter) {
    __typename
    ... on Runs {
      results { runId jobName status tags { key value } assetSelection { path } }
    }
    ... on PythonError { message }
  }
}
"""


def dev_env(root: Path, home: Path, **extra: str) -> dict[str, str]:
    env = {
        **os.environ,
        "DAGSTER_HOME": str(home),
        "SIMPERSONA_DATA_DIR": str(root),
        "SIMPERSONA_SENSOR_INTERVAL_S": "3",
        "HF_HUB_OFFLINE": "1",
        "OMP_NUM_THREADS": "1",
        "DAGSTER_DISABLE_TELEMETRY": "1",
        **extra,
    }
    env.pop("PYTEST_CURRENT_TEST", None)
    return env


def start_dagster_dev(root: Path, home: Path, env: dict[str, str], timeout: float = 150):
    """`dagster dev` (webserver + daemon + code server) on 127.0.0.1, yielding once it answers
    /server_info; stopped with SIGTERM (SIGINT restored: background shells ignore it)."""
    port = free_port()
    log = root / "dagster_dev.log"
    cmd = [
        "env",
        "--default-signal=INT",
        str(BIN / "dagster"),
        "dev",
        "-h",
        "127.0.0.1",
        "-p",
        str(port),
        "-w",
        str(REPO / "workspace.yaml"),
    ]
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            cmd, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    dev = DagsterDev(f"http://127.0.0.1:{port}", proc, log)
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"dagster dev exited {proc.returncode}:\n{dev.tail()}")
        try:
            if httpx.get(f"{dev.url}/server_info", timeout=5).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            stop_dagster_dev(dev)
            raise TimeoutError(f"dagster dev did not answer in {timeout} s:\n{dev.tail()}")
        time.sleep(1)
    # the code location loads after the webserver answers
    wait_for(lambda: location_loaded(dev), timeout, "code location loaded", dev)
    return dev


def location_loaded(dev: DagsterDev) -> bool:
    data = dev.gql(
        "{ workspaceOrError { ... on Workspace { locationEntries { name loadStatus "
        "locationOrLoadError { __typename ... on PythonError { message } } } } } }"
    )
    entries = data["workspaceOrError"]["locationEntries"]
    for e in entries:
        if e["locationOrLoadError"] and e["locationOrLoadError"]["__typename"] == "PythonError":
            raise RuntimeError(e["locationOrLoadError"]["message"])
    return any(e["loadStatus"] == "LOADED" and e["locationOrLoadError"] for e in entries)


def stop_dagster_dev(dev: DagsterDev) -> None:
    if dev.proc.poll() is None:
        dev.proc.send_signal(signal.SIGTERM)
        try:
            dev.proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(dev.proc.pid, signal.SIGKILL)  # the group this test started
            dev.proc.wait(10)


def wait_for(predicate, timeout: float, what: str, dev: DagsterDev | None = None, every=2.0):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(
                f"timed out after {timeout} s waiting for {what}"
                + (f"\n{dev.tail()}" if dev else "")
            )
        time.sleep(every)


def finished(runs: list[dict], n: int) -> list[dict] | None:
    """The runs when at least n exist and all are done; fails on a failed run."""
    done = [r for r in runs if r["status"] in ("SUCCESS", "FAILURE", "CANCELED")]
    bad = [r for r in done if r["status"] != "SUCCESS"]
    assert not bad, f"runs failed: {bad}"
    return runs if len(runs) >= n and len(done) == len(runs) else None


def tags_of(run: dict) -> dict[str, str]:
    return {t["key"]: t["value"] for t in run["tags"]}


def read_outputs(root: Path, shops: list[str], day: str) -> dict[str, pl.DataFrame]:
    wh = root / "warehouse"
    out = {}
    for shop in shops:
        out[f"raw_events/{shop}/{day}"] = pl.read_parquet(
            wh / "raw_events" / f"shop={shop}" / f"date={day}" / "data.parquet"
        )
        for t in SHOP_TABLES:
            out[f"{t}/{shop}"] = pl.read_parquet(wh / t / f"shop={shop}" / "data.parquet")
    return out


# ---- the daemon tests ----------------------------------------------------------------------
@dataclass
class Operations:
    root: Path
    home: Path
    dev: DagsterDev
    shops: list[str]
    first_day: str
    day: str  # yesterday: the nightly tick's day
    before: dict[str, pl.DataFrame]
    raw_bytes: dict[str, bytes]
    schedule_state_id: str
    started_at: float
    backfill_output: str


@pytest.fixture(scope="module")
def ops(tmp_path_factory) -> Iterator[Operations]:
    """A fitted 2-shop data dir whose last day is yesterday, served by `dagster dev` (nightly
    cron: every minute). The three operations start at once, so that their waits on the
    daemon overlap; each test then checks one of them:
    1. the nightly schedule is turned on (GraphQL startSchedule);
    2. a new shop folder (events of the first day, not yesterday's) is dropped into the lake;
    3. `simpersona backfill --shop <first shop> --ingest-only` for the first day."""
    from typer.testing import CliRunner

    from dagster_project.cli import app

    root = tmp_path_factory.mktemp("ops")
    home = root / "dagster_home"
    yesterday = dt.datetime.now(dt.UTC).date() - dt.timedelta(days=1)
    day, first_day = yesterday.isoformat(), (yesterday - dt.timedelta(days=1)).isoformat()
    t0 = time.perf_counter()
    generate(root, n_shops=2, n_buyers=1_500, last_day=yesterday, n_days=2, seed=11)
    with instance_at(home) as instance:
        shops = prepare_fitted(root, instance)
    before = read_outputs(root, shops, day)
    raw_bytes = {s: raw_events_path(root, s, day).read_bytes() for s in shops}
    print(f"setup (generate, ingest, fit in-process): {time.perf_counter() - t0:.1f} s")
    dev = start_dagster_dev(root, home, dev_env(root, home, SIMPERSONA_NIGHTLY_CRON="* * * * *"))
    try:
        print(f"setup + dagster dev up: {time.perf_counter() - t0:.1f} s")
        started = dev.gql(START_SCHEDULE, {"sel": schedule_selector()})["startSchedule"]
        assert started["scheduleState"]["status"] == "RUNNING", started
        started_at = time.perf_counter()
        write_small_shop(root / "lake", "newshop", first_day, n=5)
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv("DAGSTER_HOME", str(home))
            mp.setenv("SIMPERSONA_DATA_DIR", str(root))
            args = ["backfill", "--data-dir", str(root), "--shop", shops[0]]
            args += ["--from", first_day, "--to", first_day, "--ingest-only"]
            out = CliRunner().invoke(app, args)
        assert out.exit_code == 0, out.output
        yield Operations(
            root=root,
            home=home,
            dev=dev,
            shops=shops,
            first_day=first_day,
            day=day,
            before=before,
            raw_bytes=raw_bytes,
            schedule_state_id=started["scheduleState"]["id"],
            started_at=started_at,
            backfill_output=out.output,
        )
    finally:
        stop_dagster_dev(dev)


def raw_events_path(root: Path, shop: str, day: str) -> Path:
    return root / "warehouse" / "raw_events" / f"shop={shop}" / f"date={day}" / "data.parquet"


def schedule_selector() -> dict[str, str]:
    return {
        "repositoryLocationName": LOCATION,
        "repositoryName": REPOSITORY,
        "scheduleName": "nightly_ingest_schedule",
    }


def refresh_runs_after(dev: DagsterDev, run_ids: set[str], n: int) -> list[dict] | None:
    runs = dev.runs({"simpersona/trigger": "ingest"})
    return finished([r for r in runs if tags_of(r)["simpersona/after_run"] in run_ids], n)


START_SCHEDULE = """
mutation Start($sel: ScheduleSelector!) {
  startSchedule(scheduleSelector: $sel) {
    __typename
    ... on ScheduleStateResult { scheduleState { id status } }
    ... on PythonError { message }
  }
}
"""


@pytest.mark.slow
def test_nightly_schedule_ticks_with_the_daemon_and_refreshes_shops(ops: Operations) -> None:
    dev, shops, day = ops.dev, ops.shops, ops.day
    # the daemon ticks at the next minute: one events_job run per shop for yesterday
    tick = wait_for(lambda: schedule_tick_runs(dev), 150, "the schedule's first tick", dev)
    stop = dev.gql(STOP_SCHEDULE, {"id": ops.schedule_state_id})["stopRunningSchedule"]
    assert stop["scheduleState"]["status"] == "STOPPED", stop  # (its cron is every minute)
    nightly_runs = wait_for(
        lambda: finished([r for r in dev.runs() if r["runId"] in tick], len(tick)),
        240,
        "the nightly runs",
        dev,
    )
    print(f"schedule on to nightly runs done: {time.perf_counter() - ops.started_at:.1f} s")
    assert sorted(tags_of(r)["dagster/partition"] for r in nightly_runs) == sorted(
        str(shop_day_key(s, day)) for s in shops
    )
    assert all(r["jobName"] == "events_job" for r in nightly_runs)
    # after them, one refresh run per shop through the per-shop chain
    nightly_ids = {r["runId"] for r in nightly_runs}
    refresh = wait_for(
        lambda: refresh_runs_after(dev, nightly_ids, len(shops)), 240, "the refresh runs", dev
    )
    assert sorted(tags_of(r)["dagster/partition"] for r in refresh) == shops
    for r in refresh:
        assert r["jobName"] == "shop_refresh_job"
        # the whole chain but the embeddings: the catalog did not change (re-ingesting it,
        # as the CLI backfill did for the first shop, changes nothing)
        assert {"/".join(a["path"]) for a in r["assetSelection"]} == set(SHOP_TABLES)
    print(f"schedule on to refreshed shops: {time.perf_counter() - ops.started_at:.1f} s")

    # the asset checks ran in those runs and passed: wait for the check's own completion
    # (its execution can still read IN_PROGRESS just after the run reads SUCCESS)
    def check_done():
        data = dev.gql(CHECKS_QUERY, {"key": {"path": ["persona_assignments"]}})
        checks = data["assetNodeOrError"]["assetChecksOrError"]["checks"]
        execs = checks[0]["executionForLatestMaterialization"] if checks else None
        done = execs and execs["status"] not in ("IN_PROGRESS", "PLANNED")
        return (checks, execs) if done else None

    checks, execs = wait_for(check_done, 120, "the row_count check to complete", dev)
    assert [c["name"] for c in checks] == ["row_count"]
    assert execs["status"] == "SUCCEEDED", execs

    # the nightly partition run a second time (the first was the in-process setup): the same
    # events file byte for byte, the same rows downstream, no duplicates
    for shop in shops:
        assert raw_events_path(ops.root, shop, day).read_bytes() == ops.raw_bytes[shop], shop
    after = read_outputs(ops.root, shops, day)
    for name, frame in ops.before.items():
        assert after[name].equals(frame), name
    for shop in shops:
        events = after[f"raw_events/{shop}/{day}"]
        assert events.height > 0 and events["event_id"].is_unique().all()
        assert after[f"persona_assignments/{shop}"]["buyer_id"].is_unique().all()


CHECKS_QUERY = """
query Checks($key: AssetKeyInput!) {
  assetNodeOrError(assetKey: $key) {
    ... on AssetNode {
      assetChecksOrError {
        ... on AssetChecks {
          checks { name executionForLatestMaterialization { status } }
        }
      }
    }
  }
}
"""


@pytest.mark.slow
def test_lake_sensor_registers_a_new_shop_folder(ops: Operations) -> None:
    dev, root, day = ops.dev, ops.root, ops.first_day

    def registered() -> bool:
        data = dev.gql(PARTITIONS_QUERY, {"key": {"path": ["catalog"]}})
        return "newshop" in data["assetNodeOrError"]["partitionKeys"]

    wait_for(registered, 120, "the new shop's partitions", dev)
    print(f"new shop registered after {time.perf_counter() - ops.started_at:.1f} s")
    data = dev.gql(PARTITIONS_QUERY, {"key": {"path": ["raw_events"]}})
    assert str(shop_day_key("newshop", day)) in data["assetNodeOrError"]["partitionKeys"]
    # the sensor requested the new shop's catalog and events only: on its first tick the
    # shops ingested in-process before the server started were not ingested again
    runs = wait_for(
        lambda: finished(dev.runs({"dagster/sensor_name": "lake_sensor"}), 2),
        180,
        "the sensor's runs",
        dev,
    )
    assert sorted(tags_of(r)["dagster/partition"] for r in runs) == sorted(
        ["newshop", str(shop_day_key("newshop", day))]
    )
    assert pl.read_parquet(raw_events_path(root, "newshop", day)).height == 5
    # then the new shop goes through the per-shop chain like the others, unattended
    refresh = wait_for(
        lambda: refresh_runs_after(dev, {r["runId"] for r in runs}, 1),
        420,  # returns as soon as the run is there; 240 s ran out once on a slow CI machine
        "the new shop's refresh run",
        dev,
    )
    assert [tags_of(r)["dagster/partition"] for r in refresh] == ["newshop"]
    assert {"/".join(a["path"]) for a in refresh[0]["assetSelection"]} == set(
        SHOP_TABLES + ("product_embeddings",)
    )
    dist = pl.read_parquet(root / "warehouse/store_token_distribution/shop=newshop/data.parquet")
    assert dist["share"].sum() == pytest.approx(1.0)
    print(f"new shop dropped to refreshed: {time.perf_counter() - ops.started_at:.1f} s")


@pytest.mark.slow
def test_backfill_command_runs_on_the_daemon(ops: Operations) -> None:
    """`simpersona backfill` stored an asset backfill on the served instance; the daemon
    runs it: the shop's catalog, then its events of the day."""
    dev, shop, day = ops.dev, ops.shops[0], ops.first_day
    assert "1 shops, 1 shop-days" in ops.backfill_output
    backfill_id = ops.backfill_output.split()[1].rstrip(":")

    def done():
        b = dev.gql(BACKFILL_QUERY, {"id": backfill_id})["partitionBackfillOrError"]
        assert b["__typename"] == "PartitionBackfill", b
        assert b["status"] not in ("FAILED", "COMPLETED_FAILED", "CANCELED"), b
        return b["status"] in ("COMPLETED", "COMPLETED_SUCCESS")

    wait_for(done, 240, "the CLI backfill", dev, every=3)
    runs = finished(dev.runs({"dagster/backfill": backfill_id}), 2)
    assert sorted(tags_of(r)["dagster/partition"] for r in runs) == sorted(
        [shop, str(shop_day_key(shop, day))]
    )
    print(f"CLI backfill done after {time.perf_counter() - ops.started_at:.1f} s")


BACKFILL_QUERY = """
query Backfill($id: String!) {
  partitionBackfillOrError(backfillId: $id) {
    __typename
    ... on PartitionBackfill { id status error { message } }
    ... on BackfillNotFoundError { message }
    ... on PythonError { message }
  }
}
"""


STOP_SCHEDULE = """
mutation Stop($id: String!) {
  stopRunningSchedule(id: $id) {
    __typename
    ... on ScheduleStateResult { scheduleState { status } }
    ... on PythonError { message }
  }
}
"""
SCHEDULE_TICKS = """
query Ticks($sel: ScheduleSelector!) {
  scheduleOrError(scheduleSelector: $sel) {
    ... on Schedule { scheduleState { ticks(limit: 5) { status runIds error { message } } } }
  }
}
"""


def schedule_tick_runs(dev: DagsterDev) -> set[str] | None:
    """Run ids of the nightly schedule's first successful tick (None before it)."""
    sel = {
        "repositoryLocationName": LOCATION,
        "repositoryName": REPOSITORY,
        "scheduleName": "nightly_ingest_schedule",
    }
    ticks = dev.gql(SCHEDULE_TICKS, {"sel": sel})["scheduleOrError"]["scheduleState"]["ticks"]
    failed = [t for t in ticks if t["status"] == "FAILURE"]
    assert not failed, failed[0]["error"]
    done = [t for t in ticks if t["status"] == "SUCCESS"]
    return set(done[-1]["runIds"]) if done else None


TICKS_QUERY = """
query Ticks($sel: SensorSelector!) {
  sensorOrError(sensorSelector: $sel) {
    ... on Sensor { sensorState { ticks(limit: 20) { status runIds timestamp error { message } } } }
  }
}
"""


def sensor_ticks(dev: DagsterDev, name: str) -> list[dict]:
    """The sensor's finished ticks, oldest first."""
    sel = {"repositoryLocationName": LOCATION, "repositoryName": REPOSITORY, "sensorName": name}
    ticks = dev.gql(TICKS_QUERY, {"sel": sel})["sensorOrError"]["sensorState"]["ticks"]
    done = [t for t in ticks if t["status"] != "STARTED"]
    failed = [t for t in done if t["status"] == "FAILURE"]
    assert not failed, failed[0]["error"]
    return sorted(done, key=lambda t: t["timestamp"])


PARTITIONS_QUERY = """
query Partitions($key: AssetKeyInput!) {
  assetNodeOrError(assetKey: $key) { ... on AssetNode { partitionKeys } }
}
"""


# ---- without the daemon: checks and the backfill command -------------------------------------
def test_checks_fail_visibly_on_rejects_and_a_collapsed_codebook(tmp_path: Path) -> None:
    from dagster_project.definitions import all_checks
    from dagster_project.defs.ingest.assets import raw_events
    from dagster_project.defs.personas.checks import CodebookUsageConfig, codebook_usage
    from tests.conftest import resources_for

    lake = tmp_path / "lake"
    write_small_shop(lake, "alpha", "2025-03-01", n=3)
    (lake / "events/shop=alpha/date=2025-03-01/bad.csv").write_text(
        "event_id,shop_id,buyer_id,session_id,ts,event_type,product_id\n"
        "x,alpha,,,2025-03-01T00:00:00Z,product_view,p1\n"
    )
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions("shops", ["alpha"])
        instance.add_dynamic_partitions("days", ["2025-03-01"])
        res = dg.materialize(
            [raw_events, *all_checks],
            selection=["raw_events"],
            partition_key=shop_day_key("alpha", "2025-03-01"),
            instance=instance,
            # ingestion tolerates up to 50 %; the check warns above 2 %
            resources=resources_for(tmp_path, max_reject_share=0.5),
        )
    assert res.success  # the reject-share check does not block
    evals = {e.check_name: e for e in res.get_asset_check_evaluations()}
    assert set(evals) == {"row_count", "reject_share"}
    assert evals["row_count"].passed and evals["row_count"].metadata["rows"].value == 3
    bad = evals["reject_share"]
    assert not bad.passed and bad.severity == dg.AssetCheckSeverity.ERROR
    assert bad.metadata["reject_share"].value == pytest.approx(0.25)
    assert "1 of 4 rows of shop alpha on 2025-03-01 rejected" in bad.description

    folder = tmp_path / "artifacts" / "persona_codebook"
    (folder / "v1").mkdir(parents=True)
    (folder / "current.json").write_text('{"version": "v1"}')
    artifacts = ArtifactsResource(root=str(tmp_path / "artifacts"))
    for used, perplexity, ok in ((3, 2.5, False), (40, 21.0, True)):
        meta = {"final": {"used_codes": used, "perplexity": perplexity}}
        (folder / "v1" / "meta.json").write_text(json.dumps(meta))
        result = codebook_usage(config=CodebookUsageConfig(), artifacts=artifacts)
        assert result.passed is ok and result.severity == dg.AssetCheckSeverity.ERROR
        if not ok:
            assert result.description == "used codes 3 < 8; perplexity 2.50 < 4.0"


def test_backfill_command_stores_an_asset_backfill_of_the_shops(tmp_path: Path, monkeypatch):
    from typer.testing import CliRunner

    from dagster_project.cli import app

    lake = tmp_path / "lake"
    for shop, day in (("alpha", "2025-03-01"), ("alpha", "2025-03-02"), ("beta", "2025-03-01")):
        write_small_shop(lake, shop, day)
    home = tmp_path / "dagster_home"
    instance_at(home).dispose()
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    monkeypatch.setenv("SIMPERSONA_DATA_DIR", str(tmp_path))
    runner = CliRunner()
    out = runner.invoke(
        app, ["backfill", "--data-dir", str(tmp_path), "--shop", "alpha", "--from", "2025-03-02"]
    )
    assert out.exit_code == 0, out.output
    assert "1 shops, 1 shop-days" in out.output
    with dg.DagsterInstance.get() as instance:
        (backfill,) = instance.get_backfills()
        assert backfill.backfill_id in out.output
        assert backfill.status.value == "REQUESTED"  # the daemon picks it up
        targets = {
            (k.asset_key.to_user_string(), str(k.partition_key))
            for k in backfill.asset_backfill_data.target_subset.iterate_asset_partitions()
        }
        # nothing fitted yet: ingestion and the per-shop chain up to buyer_features
        assert targets == {
            ("catalog", "alpha"),
            ("raw_events", "2025-03-02|alpha"),
            ("enriched_sessions", "alpha"),
            ("product_embeddings", "alpha"),
            ("buyer_features", "alpha"),
        }
        assert set(instance.get_dynamic_partitions("shops")) == {"alpha", "beta"}
    bad = runner.invoke(app, ["backfill", "--data-dir", str(tmp_path), "--shop", "nope"])
    assert bad.exit_code == 1 and "no shop folder for ['nope']" in bad.output


def test_refresh_selection_follows_fits_and_catalog_changes(tmp_path: Path) -> None:
    from dagster_project.defs.refresh.sensors import embeddings_stale, refresh_selection
    from simpersona.embeddings import text_hash
    from simpersona.warehouse import Warehouse

    wh = Warehouse.at(tmp_path / "warehouse", tmp_path / "warehouse.duckdb")
    products = pl.DataFrame({"product_id": ["p1", "p2"], "title": ["Shoe", "Sock"]})
    wh.write_partition("products", products, "alpha")
    assert embeddings_stale(wh, "alpha")  # none yet

    def embed(rows: list[tuple[str, str]]) -> None:
        frame = pl.DataFrame(
            {"product_id": [p for p, _ in rows], "title_hash": [text_hash(t) for _, t in rows]}
        )
        wh.write_partition("product_embeddings", frame, "alpha")

    embed([("p1", "Shoe"), ("p2", "Sock")])
    assert not embeddings_stale(wh, "alpha")
    embed([("p1", "Shoe"), ("p2", "Old sock")])  # a title changed
    assert embeddings_stale(wh, "alpha")
    embed([("p1", "Shoe")])  # a product is new
    assert embeddings_stale(wh, "alpha")
    embed([("p1", "Shoe"), ("p2", " Sock ")])  # the same text once normalised
    assert not embeddings_stale(wh, "alpha")

    with dg.instance_for_test() as instance:
        names = lambda: [k.to_user_string() for k in refresh_selection(instance, wh, "alpha")]  # noqa: E731
        assert names() == ["enriched_sessions", "buyer_features"]
        instance.report_runless_asset_event(dg.AssetMaterialization("feature_transform"))
        assert names() == ["enriched_sessions", "buyer_features", "buyer_vectors"]
        instance.report_runless_asset_event(dg.AssetMaterialization("persona_codebook"))
        assert names() == list(SHOP_TABLES)  # the whole chain; embeddings are current
        wh.write_partition("products", products.with_columns(title=pl.lit("Boot")), "alpha")
        assert names() == [SHOP_TABLES[0], "product_embeddings", *SHOP_TABLES[1:]]
