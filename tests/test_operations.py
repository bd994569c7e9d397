"""Operating the pipeline with the real Dagster daemon: the nightly schedule ticks (cron every
minute in the test) and its runs succeed, the shops' downstream assets are refreshed after
them, a new shop folder dropped into the lake becomes partitions, a nightly partition run
twice leaves identical outputs; asset checks; the per-store backfill command."""

from __future__ import annotations

import datetime as dt
import os
import signal
import socket
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
from tests.test_dagster import _write_shop

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
    return {
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
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
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
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


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
        "SIMPERSONA_SENSOR_INTERVAL_S": "5",
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


# ---- the tests -------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def nightly(tmp_path_factory) -> Iterator[dict]:
    """A fitted 2-shop data dir whose last day is yesterday, served by `dagster dev` with the
    nightly cron set to every minute."""
    root = tmp_path_factory.mktemp("ops")
    home = root / "dagster_home"
    today = dt.datetime.now(dt.UTC).date()
    yesterday = (today - dt.timedelta(days=1)).isoformat()
    t0 = time.perf_counter()
    generate(
        root, n_shops=2, n_buyers=2_000, last_day=today - dt.timedelta(days=1), n_days=2, seed=11
    )
    with instance_at(home) as instance:
        shops = prepare_fitted(root, instance)
    before = read_outputs(root, shops, yesterday)
    raw_bytes = {
        s: (
            root / "warehouse/raw_events" / f"shop={s}" / f"date={yesterday}" / "data.parquet"
        ).read_bytes()
        for s in shops
    }
    setup_s = time.perf_counter() - t0
    env = dev_env(root, home, SIMPERSONA_NIGHTLY_CRON="* * * * *")
    dev = start_dagster_dev(root, home, env)
    try:
        yield {
            "root": root,
            "home": home,
            "dev": dev,
            "shops": shops,
            "day": yesterday,
            "before": before,
            "raw_bytes": raw_bytes,
            "setup_s": setup_s,
        }
    finally:
        stop_dagster_dev(dev)


START_SCHEDULE = """
mutation Start($sel: ScheduleSelector!) {
  startSchedule(scheduleSelector: $sel) {
    __typename
    ... on ScheduleStateResult { scheduleState { id status } }
    ... on PythonError { message }
  }
}
"""


def test_nightly_schedule_ticks_with_the_daemon_and_refreshes_shops(nightly) -> None:
    dev: DagsterDev = nightly["dev"]
    shops, day = nightly["shops"], nightly["day"]
    # the lake sensor's first tick finds everything ingested already: it requests nothing
    ticks = wait_for(lambda: sensor_ticks(dev, "lake_sensor"), 120, "lake_sensor's first tick", dev)
    assert ticks[-1]["status"] in ("SKIPPED", "SUCCESS") and ticks[-1]["runIds"] == [], ticks
    assert dev.runs({"dagster/sensor_name": "lake_sensor"}) == []
    sel = {
        "repositoryLocationName": LOCATION,
        "repositoryName": REPOSITORY,
        "scheduleName": "nightly_ingest_schedule",
    }
    started = dev.gql(START_SCHEDULE, {"sel": sel})["startSchedule"]
    assert started["scheduleState"]["status"] == "RUNNING", started
    t0 = time.perf_counter()
    # the daemon ticks at the next minute: one events_job run per shop for yesterday
    tick = wait_for(lambda: schedule_tick_runs(dev), 150, "the schedule's first tick", dev)
    stop = dev.gql(STOP_SCHEDULE, {"id": started["scheduleState"]["id"]})[
        "stopRunningSchedule"
    ]  # cron: every minute
    assert stop["scheduleState"]["status"] == "STOPPED", stop
    nightly_runs = wait_for(
        lambda: finished([r for r in dev.runs() if r["runId"] in tick], len(tick)),
        240,
        "the nightly runs",
        dev,
    )
    print(f"schedule started to nightly runs done: {time.perf_counter() - t0:.1f} s")
    assert sorted(tags_of(r)["dagster/partition"] for r in nightly_runs) == sorted(
        str(shop_day_key(s, day)) for s in shops
    )
    assert all(r["jobName"] == "events_job" for r in nightly_runs)
    # after them, one refresh run per shop through the whole per-shop chain
    nightly_ids = {r["runId"] for r in nightly_runs}
    refresh = wait_for(
        lambda: finished(
            [
                r
                for r in dev.runs({"simpersona/trigger": "ingest"})
                if tags_of(r)["simpersona/after_run"] in nightly_ids
            ],
            len(shops),
        ),
        240,
        "the refresh runs",
        dev,
    )
    assert sorted(tags_of(r)["dagster/partition"] for r in refresh) == shops
    for r in refresh:
        assert r["jobName"] == "shop_refresh_job"
        # the whole per-shop chain; the embeddings only if the catalog changed (it did not)
        assert {"/".join(a["path"]) for a in r["assetSelection"]} == set(SHOP_TABLES)
    print(f"schedule tick to refreshed shops: {time.perf_counter() - t0:.1f} s")

    # the asset checks ran in those runs and passed
    data = dev.gql(CHECKS_QUERY, {"key": {"path": ["persona_assignments"]}})
    checks = data["assetNodeOrError"]["assetChecksOrError"]["checks"]
    assert [c["name"] for c in checks] == ["row_count"]
    execs = checks[0]["executionForLatestMaterialization"]
    assert execs and execs["status"] == "SUCCEEDED", execs

    # the nightly partition run a second time (the first was the in-process setup): the same
    # events file byte for byte, the same rows downstream, no duplicates
    root = nightly["root"]
    for shop in shops:
        path = root / "warehouse/raw_events" / f"shop={shop}" / f"date={day}" / "data.parquet"
        assert path.read_bytes() == nightly["raw_bytes"][shop], shop
    after = read_outputs(root, shops, day)
    for name, frame in nightly["before"].items():
        assert after[name].equals(frame), name
    for shop in shops:
        events = after[f"raw_events/{shop}/{day}"]
        assert events.height > 0 and events["event_id"].is_unique().all()
        assign = after[f"persona_assignments/{shop}"]
        assert assign["buyer_id"].is_unique().all()
    print(f"setup (generate, ingest, fit in-process): {nightly['setup_s']:.1f} s")


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


def test_lake_sensor_registers_a_new_shop_folder(nightly) -> None:
    dev: DagsterDev = nightly["dev"]
    root, day = nightly["root"], nightly["day"]
    assert "newshop" not in dg.DagsterInstance.from_config(
        str(nightly["home"])
    ).get_dynamic_partitions("shops")
    _write_shop(root / "lake", "newshop", day, n=5)
    t0 = time.perf_counter()

    def registered() -> bool:
        data = dev.gql(PARTITIONS_QUERY, {"key": {"path": ["catalog"]}})
        return "newshop" in data["assetNodeOrError"]["partitionKeys"]

    wait_for(registered, 120, "the new shop's partitions", dev)
    print(f"new shop registered after {time.perf_counter() - t0:.1f} s")
    data = dev.gql(PARTITIONS_QUERY, {"key": {"path": ["raw_events"]}})
    assert str(shop_day_key("newshop", day)) in data["assetNodeOrError"]["partitionKeys"]
    # and its catalog and events are ingested by the runs the sensor requested
    runs = wait_for(
        lambda: finished([r for r in dev.runs({"dagster/sensor_name": "lake_sensor"})], 2),
        180,
        "the sensor's runs",
        dev,
    )
    assert sorted(tags_of(r)["dagster/partition"] for r in runs) == sorted(
        ["newshop", str(shop_day_key("newshop", day))]
    )
    events = pl.read_parquet(
        root / "warehouse/raw_events/shop=newshop" / f"date={day}" / "data.parquet"
    )
    assert events.height == 5
    # then the new shop goes through the per-shop chain like the others, unattended
    ids = {r["runId"] for r in runs}
    refresh = wait_for(
        lambda: finished(
            [
                r
                for r in dev.runs({"simpersona/trigger": "ingest"})
                if tags_of(r)["simpersona/after_run"] in ids
            ],
            1,
        ),
        240,
        "the new shop's refresh run",
        dev,
    )
    assert [tags_of(r)["dagster/partition"] for r in refresh] == ["newshop"]
    dist = pl.read_parquet(root / "warehouse/store_token_distribution/shop=newshop/data.parquet")
    assert dist["share"].sum() == pytest.approx(1.0)
    print(f"new shop dropped to refreshed: {time.perf_counter() - t0:.1f} s")


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
