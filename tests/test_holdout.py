"""Nothing scored on what it was fitted on: a tiny pipeline on generated shops, then the fits
the evaluation scores with (the Markov policy, the tokens' auxiliary bins, the codebook's
training sample) are shown to read the training shops only — rewriting every evaluation-shop
buyer's events and labels changes none of them — and a Markov policy fitted on a shop is
refused there, unless it runs as the labelled in-sample oracle."""

from __future__ import annotations

import json
from pathlib import Path

import dagster as dg
import polars as pl
import pytest

from dagster_project.defs.evaluation.assets import _fit_provenance
from dagster_project.resources import ArtifactsResource
from dagster_project.run import materialize, run_demo
from simpersona.synth import GeneratorConfig
from tests.conftest import resources_for
from tests.test_personas_pipeline import FAST

pytestmark = [pytest.mark.browser, pytest.mark.slow]
TINY_SIM = {"agents_per_shop": 2, "max_steps": 3, "concurrency": 2}


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory):
    root = tmp_path_factory.mktemp("holdout")
    res = resources_for(root)
    gen = GeneratorConfig(n_shops=4, n_buyers=2_000, seed=3, n_days=3, products_per_shop=(30, 40))
    with dg.instance_for_test() as instance:
        run_demo(root, generator=gen, instance=instance, resources=res,
                 persona_run_config=FAST, traces_per_shop=0)  # fmt: skip
        yield root, res, instance


def _split(root: Path) -> dict:
    return json.loads((root / "warehouse" / "shop_split.json").read_text())


def _fit_markov(instance, res) -> tuple[str, str]:
    r = materialize(["markov_policy"], instance, None, res)
    md = r.asset_materializations_for_node("markov_policy")[0].metadata
    folder = Path(md["path"].value)
    return md["version"].value, (folder / "markov.json").read_text()


def _rewrite(path: Path, fn, saved: dict[Path, bytes]) -> None:
    saved[path] = path.read_bytes()
    fn(pl.read_parquet(path)).write_parquet(path)


def _fit_on(res, shop: str) -> str:
    """The Markov chains fitted on one shop (what a leak would be), as JSON."""
    from simpersona.agent.markov_fit import ShopData, fit_token_policy

    wh = res["warehouse"].warehouse()
    labels = pl.read_parquet(wh.partition_path("persona_assignments", shop))
    model = fit_token_policy([ShopData(shop, wh.read_events(shop), labels)])
    return json.dumps(model.to_dict(), sort_keys=True)


def test_fits_scored_on_evaluation_shops_read_only_the_training_shops(pipeline):
    root, res, instance = pipeline
    split = _split(root)
    assert split["train"] and split["eval"] and not set(split["train"]) & set(split["eval"])
    wh = root / "warehouse"
    sample = pl.read_parquet(wh / "training_sample" / "data.parquet")
    assert set(sample["shop_id"].unique().to_list()) <= set(split["train"])
    version, text = _fit_markov(instance, res)
    fit = json.loads((root / "artifacts" / "markov_policy" / version / "fit.json").read_text())
    assert fit["fit_shops"] == sorted(split["train"])
    artifacts = ArtifactsResource(root=str(root / "artifacts"))
    agents = pl.DataFrame({"policy": ["markov"]})
    _, bins = _fit_provenance(res["warehouse"].warehouse(), artifacts, agents, split["eval"])
    leaky_before = _fit_on(res, split["eval"][0])

    # Every evaluation-shop buyer changes: no cart, no checkout in their events, another
    # token and other bins in their labels.
    saved: dict[Path, bytes] = {}
    try:
        for shop in split["eval"]:
            for f in (wh / "raw_events" / f"shop={shop}").glob("date=*/data.parquet"):
                _rewrite(f, lambda df: df.with_columns(
                    pl.when(pl.col("event_type").is_in(["add_to_cart", "checkout_started",
                                                        "checkout_completed"]))
                    .then(pl.lit("page_view")).otherwise(pl.col("event_type"))
                    .alias("event_type")), saved)  # fmt: skip
            _rewrite(
                wh / "persona_assignments" / f"shop={shop}" / "data.parquet",
                lambda df: df.with_columns(
                    pl.lit(0, dtype=df["token"].dtype).alias("token"),
                    pl.lit(2, dtype=df["purchase_bin"].dtype).alias("purchase_bin"),
                ),
                saved,
            )
        # The rewrite reaches what a fit on an evaluation shop would read...
        assert saved and _fit_on(res, split["eval"][0]) != leaky_before
        # ...and none of the fits the evaluation scores with.
        again, text_again = _fit_markov(instance, res)
        assert again == version and text_again == text
        wh_now = res["warehouse"].warehouse()
        _, bins_again = _fit_provenance(wh_now, artifacts, agents, split["eval"])
        assert bins_again.equals(bins)
    finally:
        for path, data in saved.items():
            path.write_bytes(data)


def test_a_markov_policy_fitted_on_a_shop_is_refused_there(pipeline):
    root, res, instance = pipeline
    split_path = root / "warehouse" / "shop_split.json"
    split = _split(root)
    shop = split["eval"][0]
    sim = {"ops": {"population_simulation": {"config": {**TINY_SIM, "policies": ["markov"]}}}}
    try:
        # The honest run: fitted on the training shops, simulated and reported on `shop`.
        _fit_markov(instance, res)
        materialize(["population_simulation"], instance, shop, res, sim)
        report = {"ops": {"evaluation_report": {"config": {"shops": [shop], "resamples": 20}}}}
        materialize(["evaluation_report"], instance, None, res, report)
        # Now the same shop also trained the policy: simulating and reporting it are refused.
        leaky = {**split, "train": sorted([*split["train"], shop])}
        split_path.write_text(json.dumps(leaky))
        _fit_markov(instance, res)
        with pytest.raises(Exception, match="is a training shop"):
            materialize(["population_simulation"], instance, shop, res, sim)
        # Past the split's guard, the policy's own provenance refuses it.
        anyway = {"ops": {"population_simulation": {"config": {**TINY_SIM,
                  "policies": ["markov"], "eval_shops_only": False}}}}  # fmt: skip
        with pytest.raises(Exception, match="would be in-sample"):
            materialize(["population_simulation"], instance, shop, res, anyway)
        with pytest.raises(Exception, match="an in-sample figure"):
            materialize(["evaluation_report"], instance, None, res, report)
        # The oracle is fitted on the shop on purpose, and says so in its name.
        oracle = {"ops": {"population_simulation": {"config": {**TINY_SIM,
                  "policies": ["markov_oracle"], "eval_shops_only": False}}}}  # fmt: skip
        r = materialize(["population_simulation"], instance, shop, res, oracle)
        assert (
            r.asset_materializations_for_node("population_simulation")[0].metadata["agents"].value
            == 2
        )
    finally:
        split_path.write_text(json.dumps(split))
