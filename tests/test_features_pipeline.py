"""Feature stages through Dagster: generated shops end to end, and the real public logs."""

from __future__ import annotations

import json
from pathlib import Path

import dagster as dg
import numpy as np
import polars as pl
import pytest

from dagster_project.definitions import all_assets
from dagster_project.run import run_features, run_ingestion
from simpersona.features.scalars import CHANNELS
from simpersona.features.transform import FeatureTransform
from simpersona.synth import GeneratorConfig, generate_lake
from simpersona.tracking import Tracker
from simpersona.warehouse import Warehouse
from tests.conftest import resources_for


def test_generated_shops_to_buyer_vectors(tmp_path: Path) -> None:
    gen = generate_lake(
        tmp_path / "lake",
        GeneratorConfig(n_shops=3, n_buyers=6_000, seed=5, n_days=4, products_per_shop=(40, 60)),
        ground_truth_path=tmp_path / "gt.parquet",
        progress=False,
    )
    res = resources_for(tmp_path)
    with dg.instance_for_test() as instance:
        run_ingestion(tmp_path / "lake", instance=instance, resources=res)
        out = run_features(instance, resources=res)
        wh = Warehouse.at(tmp_path / "warehouse", tmp_path / "warehouse.duckdb")
        split = json.loads((wh.root / "shop_split.json").read_text())
        assert not set(split["train"]) & set(split["eval"]) and split["eval"]
        sample = pl.read_parquet(wh.table_path("training_sample"))
        assert set(sample["shop_id"]) <= set(split["train"])
        assert "E" not in sample["stratum"].to_list()
        for shop in gen.shops:
            vec = pl.read_parquet(wh.partition_path("buyer_vectors", shop.shop_id))
            feats = pl.read_parquet(wh.partition_path("buyer_features", shop.shop_id))
            assert vec.height == feats.height == shop.buyers
            m = vec["vector"].to_numpy()
            assert m.shape == (shop.buyers, 403) and np.isfinite(m).all()
            for i, c in enumerate(CHANNELS):  # masks agree with the channel product lists
                has = (feats.sort("buyer_id")[f"{c}_products"].list.len() > 0).to_numpy()
                assert (vec.sort("buyer_id")["vector"].to_numpy()[:, 400 + i] == has).all()
        assert out.buyers == gen.n_buyers
        # the transform is versioned on disk and logged to MLflow
        artifacts = tmp_path / "artifacts" / "feature_transform"
        version = json.loads((artifacts / "current.json").read_text())["version"]
        tf = FeatureTransform.load(artifacts / version)
        assert tf.version == version == out.transform["transform_version"]
        assert tf.fitted_on["shops"] == sorted(set(sample["shop_id"]))
        runs = Tracker(
            f"sqlite:///{tmp_path / 'mlflow.db'}", str(tmp_path / "mlartifacts")
        ).find_runs("tags.`dagster.asset_key` = 'feature_transform'")
        assert len(runs) == 1 and runs[0].data.params["version"] == version
        # re-materializing a shop's vectors replaces them with identical content
        shop = gen.shops[0].shop_id
        before = pl.read_parquet(wh.partition_path("buyer_vectors", shop))
        dg.materialize(
            all_assets,
            selection=["buyer_vectors"],
            partition_key=shop,
            instance=instance,
            resources=res,
        )
        assert pl.read_parquet(wh.partition_path("buyer_vectors", shop)).equals(before)


@pytest.mark.realdata
def test_real_public_data_strata_mix(tmp_path: Path, public_data: Path, capsys) -> None:
    from simpersona.ingest.importers import run_import

    lake = tmp_path / "lake"
    run_import("shopify-pixels", [public_data / "puffy-dtc-web-events-2025"], lake, shop_id="puffy")
    run_import(
        "rees46",
        [public_data / "rees46-multicategory-store-sample" / "2019-Nov_head_noheader.csv"],
        lake,
        shop_id="rees46-nov",
    )
    res = resources_for(tmp_path, max_reject_share=0.2)
    cfg = {
        "ops": {
            "training_sample": {"config": {"train_shops": ["puffy"], "eval_shops": ["rees46-nov"]}}
        }
    }
    with dg.instance_for_test() as instance:
        run_ingestion(lake, instance=instance, resources=res)
        run_features(instance, resources=res, run_config=cfg)
    wh = Warehouse.at(tmp_path / "warehouse", tmp_path / "warehouse.duckdb")
    mixes = {}
    for shop in ("puffy", "rees46-nov"):
        vec = pl.read_parquet(wh.partition_path("buyer_vectors", shop)).drop("vector")
        mixes[shop] = {s: round(float((vec["stratum"] == s).mean()), 4) for s in "ABCDE"}
    with capsys.disabled():
        print(f"\nreal strata mix: {mixes}")
    p = mixes["puffy"]
    assert abs(sum(p.values()) - 1) < 1e-3
    # Puffy: ~0.8 % purchasers, about half bouncers; a few checkout abandoners and cart builders
    assert 0.004 < p["A"] < 0.02 and 0.3 < p["E"] < 0.6 and p["B"] > 0 and p["C"] > 0
    # REES46 head: every event is on a product, so nobody is a bouncer
    r = mixes["rees46-nov"]
    assert r["E"] == 0.0 and r["D"] > 0.9
