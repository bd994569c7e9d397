"""A team's own logs end to end: `simpersona run`, its split, K, warnings and failures."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from datetime import date
from pathlib import Path

import polars as pl
import pytest

from simpersona.data_warnings import (
    missing_strata,
    outside_window,
    shop_specific_tokens,
    unreadable_titles,
)
from simpersona.features.sample import ShopSplit, holdout_buyers
from simpersona.lake import Lake
from simpersona.personas.sizing import PAPER_K, codebook_size_for, sizing_warnings
from simpersona.synth import GeneratorConfig, generate_lake

REPO = Path(__file__).resolve().parents[1]


def simpersona(*args: str, timeout: float = 1200) -> subprocess.CompletedProcess:
    """The real command in its own process (its Dagster resources read the data dir at
    import, so it cannot share this test process)."""
    exe = Path(sys.executable).with_name("simpersona")
    env = {**os.environ, "COLUMNS": "200"}
    env.pop("SIMPERSONA_DATA_DIR", None)
    env.pop("DAGSTER_HOME", None)
    return subprocess.run(
        [str(exe), *args], capture_output=True, text=True, timeout=timeout, env=env, cwd=REPO
    )


# ---- K and the warnings, on their own ------------------------------------------------------
def test_codebook_size_follows_the_training_set():
    assert codebook_size_for(472)[0] == 47  # the 815-buyer shop that got 256 codes
    assert codebook_size_for(2_560)[0] == PAPER_K and codebook_size_for(90_000)[0] == PAPER_K
    assert codebook_size_for(5)[0] == 2
    assert codebook_size_for(472, requested=16) == (16, "K = 16, as configured")
    for n in (30, 472, 2_000, 9_999):
        k, rule = codebook_size_for(n)
        assert k <= max(2, n // 10) and f"{n:,} training buyers" in rule
    # 472 training buyers on 256 codes, validation error 11x the training one
    said = " ".join(sizing_warnings(472, 256, 0.43, 4.89))
    assert "fewer than 10 per code" in said and "memorised" in said
    # the demo: 2,052 training buyers, K from the rule, reconstruction 0.241 vs 0.270
    assert sizing_warnings(2_052, codebook_size_for(2_052)[0], 0.241, 0.270) == []


def test_data_warnings_each_say_what_to_do():
    products = pl.DataFrame(
        {
            "shop_id": ["ids"] * 4 + ["words"] * 2,
            "product_id": ["1", "2", "3", "4", "a", "b"],
            "title": ["4756105", "4756106", "12-884", "Mug", "Blue Mug", "Tea Pot"],
        }
    )
    (w,) = unreadable_titles(products)
    assert w.shop == "ids" and "3 of 4 product titles" in w.message and "item_name" in w.message
    assert "'4756105'" in w.message  # an example of a bad title, not of a good one

    counts = pl.DataFrame(
        {
            "shop_id": ["a", "a", "a", "b", "b", "b", "b"],
            "event_type": ["product_view", "add_to_cart", "checkout_completed"]
            + ["product_view", "add_to_cart", "checkout_started", "checkout_completed"],
            "n": [10, 3, 1, 10, 3, 2, 1],
        }
    )
    (w,) = missing_strata(counts)
    assert w.shop == "a" and "no checkout_started" in w.message and "stratum B" in w.message

    days = [date(2019, 10, d) for d in range(1, 10)] + [date(2019, 11, 1)]
    daily = pl.DataFrame({"shop_id": ["s"] * 10, "date": days, "n": [100] * 9 + [8]})
    (w,) = outside_window(daily)
    assert "8 events on 1 day(s) outside" in w.message and "2019-10-01–2019-10-09" in w.message
    assert outside_window(daily.head(9)) == []

    apart = pl.DataFrame({"shop_id": ["a"] * 98 + ["b"] * 98 + ["a", "b"] * 2,
                          "token": [1] * 98 + [2] * 98 + [3] * 4})  # fmt: skip
    (w,) = shop_specific_tokens(apart)
    assert "98% of buyers" in w.message
    shared = apart.with_columns(pl.lit(7).alias("token"))
    assert shop_specific_tokens(shared) == [] and shop_specific_tokens(apart.head(98)) == []
    # a small shop beside a big one with the same catalogue: the big one fills every token
    big = pl.DataFrame({"shop_id": ["big"] * 1000, "token": [i % 50 for i in range(1000)]})
    small = pl.DataFrame({"shop_id": ["small"] * 20, "token": [i % 10 for i in range(20)]})
    assert shop_specific_tokens(pl.concat([big, small])) == []


def test_one_shop_splits_its_buyers_not_its_shops():
    buyers = pl.DataFrame({"shop_id": ["s"] * 1000, "buyer_id": [f"b{i:04d}" for i in range(1000)]})
    held = holdout_buyers(buyers, 0.5, seed=0)
    assert held.sum() == 500
    # the same buyers whatever the row order
    again = holdout_buyers(buyers.reverse(), 0.5, seed=0).reverse()
    assert (held == again).all()
    assert ShopSplit(["s"], []).splits_buyers and not ShopSplit(["s"], ["t"]).splits_buyers


# ---- the command -----------------------------------------------------------------------------
@pytest.mark.slow
def test_run_on_one_small_shop(tmp_path):
    """One shop of a data dir whose warehouse still holds another shop from an earlier run:
    the other shop stays out of the split, the recovery and the cards."""
    data = tmp_path / "team"
    generate_lake(
        data / "lake",
        GeneratorConfig(n_shops=2, n_buyers=2_000, n_days=7, seed=5),
        ground_truth_path=tmp_path / "truth.parquet",
        progress=False,
    )
    both = simpersona("run", "--data-dir", str(data))
    assert both.returncode == 0, both.stdout[-3000:] + both.stderr[-3000:]
    assert "split: training shops shop-00" in both.stdout
    res = simpersona("run", "--data-dir", str(data), "--shop", "shop-000")
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    out = res.stdout
    assert "split: one shop (shop-000)" in out and "cross-store recovery is undefined" in out
    split = json.loads((data / "warehouse" / "shop_split.json").read_text())
    assert split["train"] == ["shop-000"] and split["eval"] == []
    assert split["holdout_buyers"]["buyers"] > 0
    sample = pl.read_parquet(data / "warehouse" / "training_sample" / "data.parquet")
    trained = set(sample.filter(pl.col("split") != "holdout")["buyer_id"])
    held = set(sample.filter(pl.col("split") == "holdout")["buyer_id"])
    assert held and not trained & held  # no held-out buyer is trained on
    art = data / "artifacts" / "persona_codebook"
    meta = json.loads(
        (art / json.loads((art / "current.json").read_text())["version"] / "meta.json").read_text()
    )
    assert meta["codebook_size"] <= max(2, meta["train_rows"] // 10) < PAPER_K
    summary = json.loads((data / "reports" / "latest" / "summary.json").read_text())
    assert summary["run_cross_store_recovery"] == "undefined (one shop)"
    assert summary["codebook_size"] == meta["codebook_size"]
    assert summary["js_mean_heldout"] is None  # no held-out shop: undefined, not in-sample
    assert any("one shop" in w for w in summary["run_warnings"])
    cards = Path(summary["cards_html"])
    assert cards.is_file() and oct(cards.stat().st_mode & 0o777) != oct(0o600)
    assert json.loads(cards.with_name("cards.json").read_text())["meta"]["shops"] == ["shop-000"]
    report = json.loads((data / "reports" / "latest" / "summary.json").read_text())
    assert report["n_stores_heldout"] in (None, 0)  # shop-001 of the first run is not used

    # nothing changed: every stage is skipped, in seconds
    t0 = time.monotonic()
    again = simpersona("run", "--data-dir", str(data), "--shop", "shop-000")
    assert again.returncode == 0, again.stdout[-2000:] + again.stderr[-2000:]
    assert again.stdout.count("skipped") >= 3 and time.monotonic() - t0 < 30

    # the same run as a Dagster job (the UI's way in), against the data dir's instance
    script = (
        "import os, json; from pathlib import Path\n"
        "from dagster_project.definitions import defs\n"
        "from dagster_project.run import dagster_instance\n"
        "inst = dagster_instance(Path(os.environ['SIMPERSONA_DATA_DIR']) / 'dagster_home')\n"
        "cfg = {'ops': {'simpersona_run': {'config': {'shops': ['shop-000']}}}}\n"
        "job = defs.get_job_def('simpersona_run_job')\n"
        "res = job.execute_in_process(instance=inst, run_config=cfg)\n"
        "out = [e for e in res.all_events if e.event_type_value == 'STEP_OUTPUT'][0]\n"
        "md = out.step_output_data.metadata\n"
        "print(json.dumps({k: getattr(v, 'value', v) for k, v in md.items()}, default=str))\n"
    )
    job = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=300, cwd=REPO,
        env={**os.environ, "SIMPERSONA_DATA_DIR": str(data)},
    )  # fmt: skip
    assert job.returncode == 0, job.stderr[-3000:]
    md = json.loads(job.stdout.strip().splitlines()[-1])
    assert md["skipped"] == "ingest, features, personas" and md["train_shops"] == ["shop-000"]
    assert md["codebook_size"] == meta["codebook_size"] and md["cards"] == summary["cards_html"]


def test_a_failing_asset_ends_the_run_in_seconds_with_one_message(tmp_path):
    data = tmp_path / "team"
    generate_lake(
        data / "lake",
        GeneratorConfig(n_shops=1, n_buyers=150, n_days=1, seed=2),
        ground_truth_path=tmp_path / "truth.parquet",
        progress=False,
    )
    day = next((data / "lake" / "events").glob("shop=*/date=*"))
    one = pl.read_parquet(next(day.glob("*.parquet"))).head(1)
    Lake.at(data / "lake").write_events(one, part="again")  # a duplicate event id
    t0 = time.monotonic()
    res = simpersona("run", "--data-dir", str(data), "--max-reject-share", "0", timeout=60)
    took = time.monotonic() - t0
    assert res.returncode == 1 and took < 10, (took, res.stdout, res.stderr)
    errors = [line for line in res.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "no shop was ingested" in errors[0]
    assert "Traceback" not in res.stderr and "STEP_FAILURE" not in res.stderr
    assert "duplicate_event_id" in res.stdout and "shop=shop-000" in res.stdout


@pytest.mark.slow
@pytest.mark.realdata
def test_run_on_real_public_logs_and_a_generated_shop(tmp_path, public_data):
    """Puffy and REES46 read in place, a generated shop beside them, and only `simpersona
    run` after that: from an empty data directory to persona cards."""
    from simpersona.ingest.importers import run_import

    data = tmp_path / "team"
    lake = data / "lake"
    generate_lake(
        lake, GeneratorConfig(n_shops=1, n_buyers=1_500, n_days=7, seed=3),
        ground_truth_path=tmp_path / "truth.parquet", progress=False,
    )  # fmt: skip
    run_import("shopify-pixels", [public_data / "puffy-dtc-web-events-2025"], lake, shop_id="puffy")
    run_import(
        "rees46", sorted((public_data / "rees46-multicategory-store-sample").glob("*.csv")), lake
    )
    # Puffy's empty client ids are 8-16 % of some days: above the default 5 % guard
    res = simpersona("run", "--data-dir", str(data), "--max-reject-share", "0.2")
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    out = res.stdout
    # the split is said before anything is fitted: two shops train, one is held out
    said = next(line for line in out.splitlines() if line.startswith("split:"))
    assert out.index("split:") < out.index("[2/4]")
    summary = json.loads((data / "reports" / "latest" / "summary.json").read_text())
    train, evals = summary["run_train_shops"].split(","), summary["run_eval_shops"].split(",")
    assert (
        len(train) == 2
        and len(evals) == 1
        and set(train + evals) == {"puffy", "rees46", "shop-000"}
    )
    assert all(s in said for s in train + evals)
    # per shop: rows read, valid, rejected, and why (Puffy's empty client ids)
    assert "missing_field" in out and "46,504" in out
    # the warnings a team must read: REES46 has no checkout_started and a stray November day
    warnings = " ".join(summary["run_warnings"])
    assert "rees46: no checkout_started events: stratum B" in warnings
    assert "rees46:" in warnings and "outside the log's main window" in warnings
    assert all(w in out.replace("\n", " ") or w[:60] in out for w in summary["run_warnings"])
    # K from the training set, and the outputs exist
    assert summary["codebook_size"] <= max(2, summary["training_sample_rows"] // 10)
    assert Path(summary["cards_html"]).is_file()
    assert summary["persona_cards"] > 0 and summary["js_mean_heldout"] is not None
    assert (data / "warehouse.duckdb").is_file()


def test_a_stage_whose_outputs_changed_is_not_skipped(tmp_path):
    from dagster_project.pipeline import RunState

    state = RunState(tmp_path / "run_state.json")
    state.record("ingest", "in-1", "out-1", {"figures": {}, "shops": ["a"]})
    state.record("features", "in-2", "out-2", {"features_buyers": 3})
    again = RunState(tmp_path / "run_state.json")  # read back from the file
    assert again.unchanged("features", "in-2", "out-2") == {"features_buyers": 3}
    assert again.unchanged("features", "in-2", "out-DELETED") is None  # e.g. vectors removed
    assert again.unchanged("features", "in-CHANGED", "out-2") is None
    again.record("ingest", "in-1b", "out-1", {"figures": {}, "shops": ["a"]})
    assert again.unchanged("features", "in-2", "out-2") is None  # a rerun stage resets later ones
