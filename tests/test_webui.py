"""The Dagster web UI, for real: `dagster dev` (webserver + daemon) on loopback with the
project's workspace over a small generated data dir; assets and partitions listed through
the GraphQL API; a backfill of two shops' partitions launched with `launchPartitionBackfill`
and run by the daemon; the asset graph page opened in headless Chromium with a screenshot."""

from __future__ import annotations

import datetime as dt
import time
from pathlib import Path

import polars as pl
import pytest

from dagster_project.run import run_ingestion
from simpersona.agent.browser import CHROMIUM_ARGS, CHROMIUM_PATH
from tests.test_operations import (
    LOCATION,
    DagsterDev,
    dev_env,
    finished,
    generate,
    instance_at,
    resources_at,
    sensor_ticks,
    start_dagster_dev,
    stop_dagster_dev,
    tags_of,
    wait_for,
)

pytestmark = [pytest.mark.slow, pytest.mark.browser]
SCREENSHOTS = Path(__file__).parent / "artifacts" / "screenshots"
DAY = dt.date(2025, 3, 1)
BACKFILLED = ["enriched_sessions", "buyer_features"]

ASSETS_QUERY = """
{
  assetNodes {
    assetKey { path }
    groupName
    isPartitioned
    partitionDefinition { type dimensionTypes { name dynamicPartitionsDefinitionName } }
  }
}
"""
PARTITIONS_QUERY = """
query Partitions($key: AssetKeyInput!) {
  assetNodeOrError(assetKey: $key) {
    ... on AssetNode {
      partitionKeys
      partitionKeysByDimension { name partitionKeys }
    }
  }
}
"""
LAUNCH_BACKFILL = """
mutation Backfill($params: LaunchBackfillParams!) {
  launchPartitionBackfill(backfillParams: $params) {
    __typename
    ... on LaunchBackfillSuccess { backfillId }
    ... on PythonError { message stack }
    ... on UnauthorizedError { message }
    ... on PartitionSetNotFoundError { message }
    ... on InvalidSubsetError { message }
  }
}
"""
BACKFILL_QUERY = """
query Backfill($id: String!) {
  partitionBackfillOrError(backfillId: $id) {
    __typename
    ... on PartitionBackfill { id status numPartitions partitionNames error { message } }
    ... on PythonError { message }
  }
}
"""
MATERIALIZED_QUERY = """
query Materialized($key: AssetKeyInput!) {
  assetNodeOrError(assetKey: $key) {
    ... on AssetNode {
      assetPartitionStatuses {
        ... on DefaultPartitionStatuses { materializedPartitions failedPartitions }
      }
    }
  }
}
"""


@pytest.fixture(scope="module")
def ui(tmp_path_factory):
    """Two generated shops, ingested in-process (what `simpersona ingest` records), served by
    `dagster dev` with the project's workspace."""
    root = tmp_path_factory.mktemp("webui")
    home = root / "dagster_home"
    generate(root, n_shops=2, n_buyers=600, last_day=DAY, n_days=1, seed=3)
    with instance_at(home) as instance:
        run_ingestion(root / "lake", instance=instance, resources=resources_at(root))
    dev = start_dagster_dev(root, home, dev_env(root, home))
    try:
        yield root, dev
    finally:
        stop_dagster_dev(dev)


def test_webui_lists_assets_backfills_two_shops_and_shows_the_graph(ui) -> None:
    root, dev = ui
    dev: DagsterDev
    t0 = time.perf_counter()
    # assets and their partitions through GraphQL
    nodes = {"/".join(n["assetKey"]["path"]): n for n in dev.gql(ASSETS_QUERY)["assetNodes"]}
    expected = {
        "catalog",
        "raw_events",
        "quarantine",
        "enriched_sessions",
        "buyer_features",
        "buyer_vectors",
        "persona_codebook",
        "persona_assignments",
        "store_token_distribution",
    }
    assert expected <= set(nodes), sorted(nodes)
    assert nodes["enriched_sessions"]["groupName"] == "enrich"
    assert nodes["raw_events"]["partitionDefinition"]["type"] == "MULTIPARTITIONED"
    assert not nodes["persona_codebook"]["isPartitioned"]
    shops = dev.gql(PARTITIONS_QUERY, {"key": {"path": ["enriched_sessions"]}})
    shops = shops["assetNodeOrError"]["partitionKeys"]
    assert shops == ["shop-000", "shop-001"]
    raw = dev.gql(PARTITIONS_QUERY, {"key": {"path": ["raw_events"]}})["assetNodeOrError"]
    dims = {d["name"]: d["partitionKeys"] for d in raw["partitionKeysByDimension"]}
    assert dims == {"date": [DAY.isoformat()], "shop": shops}
    assert sorted(raw["partitionKeys"]) == [f"{DAY}|{s}" for s in shops]
    # the lake sensor found everything ingested from the CLI: no runs of its own
    wait_for(lambda: sensor_ticks(dev, "lake_sensor"), 120, "lake_sensor's first tick", dev)
    assert dev.runs({"dagster/sensor_name": "lake_sensor"}) == []

    # a backfill of the two shops' partitions of the first per-shop assets
    params = {
        "partitionNames": shops,
        "assetSelection": [{"path": [a]} for a in BACKFILLED],
        "fromFailure": False,
        "title": "two shops from the test",
    }
    res = dev.gql(LAUNCH_BACKFILL, {"params": params})["launchPartitionBackfill"]
    assert res["__typename"] == "LaunchBackfillSuccess", res
    backfill_id = res["backfillId"]

    def backfill_done():
        b = dev.gql(BACKFILL_QUERY, {"id": backfill_id})["partitionBackfillOrError"]
        assert b["status"] not in ("FAILED", "COMPLETED_FAILED", "CANCELED"), b
        return b if b["status"] in ("COMPLETED", "COMPLETED_SUCCESS") else None

    backfill = wait_for(backfill_done, 300, "the backfill", dev, every=3)
    assert sorted(backfill["partitionNames"]) == shops and backfill["numPartitions"] == 2
    runs = finished(dev.runs({"dagster/backfill": backfill_id}), 1)
    assert runs and {tags_of(r)["dagster/partition"] for r in runs} == set(shops)
    print(f"backfill of {len(runs)} runs done in {time.perf_counter() - t0:.1f} s")
    for asset in BACKFILLED:
        st = dev.gql(MATERIALIZED_QUERY, {"key": {"path": [asset]}})["assetNodeOrError"]
        status = st["assetPartitionStatuses"]
        assert sorted(status["materializedPartitions"]) == shops, (asset, status)
        assert status["failedPartitions"] == []
        for shop in shops:
            frame = pl.read_parquet(root / "warehouse" / asset / f"shop={shop}" / "data.parquet")
            assert frame.height > 0

    # the asset graph page in headless Chromium
    from playwright.sync_api import sync_playwright

    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    shot = SCREENSHOTS / "dagster_asset_graph.png"
    shot.unlink(missing_ok=True)
    url = f"{dev.url}/locations/{LOCATION}/asset-groups/features"
    # on loopback a first visit opens the "Join the Dagster community" dialog a second after
    # the page mounts (a race with any click on "Skip"); mark it seen on the server instead
    assert dev.gql("mutation { setNuxSeen }")["setNuxSeen"] is True
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM_PATH, args=list(CHROMIUM_ARGS))
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 900})
            page.set_default_timeout(90_000)
            page.goto(url, wait_until="domcontentloaded")
            # graph nodes render the asset names once the layout is computed
            for name in ("buyer_features", "buyer_vectors", "feature_transform"):
                page.get_by_text(name, exact=True).first.wait_for(state="visible")
            page.wait_for_timeout(1_000)  # let the layout settle for the screenshot
            page.screenshot(path=str(shot), full_page=False)
            body = page.inner_text("body")
            title = page.title()
        finally:
            browser.close()
    assert "product_embeddings" in body and "training_sample" in body
    assert "Join the Dagster community" not in body
    assert "Materialize" in body and title.endswith("features"), title
    assert shot.stat().st_size > 20_000, shot  # a rendered page, not a blank one
    print(f"web UI test body done in {time.perf_counter() - t0:.1f} s; screenshot {shot}")
