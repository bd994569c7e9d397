"""Each stage run in-process, as the CLI and the demo run it: which selections
(dagster_project/selections.py) run for which partitions, in what order, and which of the
recorded facts come back (dagster_project/run/figures.py). The web UI and the daemon run the
same assets through the stages' jobs."""

import json
import os
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import dagster as dg
import polars as pl

from dagster_project import selections
from dagster_project.defs.simulation.assets import SimulationConfig
from dagster_project.partitions import SHOPS, shop_day_key
from dagster_project.run.figures import (
    FeaturesRun,
    GroundingRun,
    IngestionFailed,
    IngestRun,
    PersonasRun,
    SimulationRun,
    TracesRun,
)
from dagster_project.run.instance import dagster_instance, register_partitions
from dagster_project.run.steps import StageRuns
from simpersona.agent.policy_set import LLM_POLICIES
from simpersona.errors import describe
from simpersona.lake import Lake, sweep_temp_files

Resources = Mapping[str, Any] | None
RunConfig = Mapping[str, Any] | None


def _all_shops(instance: dg.DagsterInstance, shops: Iterable[str] | None) -> list[str]:
    return sorted(shops or instance.get_dynamic_partitions(SHOPS))


def _split_shops(resources: Resources, part: str, shops: Iterable[str] | None) -> list[str]:
    """`shops`, else the shop split's `part` ("train" or "eval")."""
    if shops is None:
        from dagster_project.resources import WarehouseResource

        warehouse = (resources or {}).get("warehouse") or WarehouseResource()
        shops = warehouse.warehouse().shop_split()[part]
    return sorted(shops)


def run_ingestion(
    lake_root: str | os.PathLike[str],
    instance: dg.DagsterInstance | None = None,
    shops: Iterable[str] | None = None,
    resources: Resources = None,
    on_partition: Callable[[str, str | None], None] | None = None,
    progress: bool = False,
    fail_fast: bool = False,
) -> IngestRun:
    """Materialize `catalog` per shop, `raw_events` per shop-day, then `quarantine`.

    A failing partition does not stop the others (a shop whose catalog fails skips its
    days); after the `quarantine` refresh, `IngestionFailed` names every failure, one line
    each. `fail_fast` re-raises the first failure instead. `on_partition(shop, date)` is
    called after each success (date None for a catalog); `progress` shows a progress bar."""
    t0 = time.perf_counter()
    instance = instance or dagster_instance()
    lake = Lake.at(lake_root)
    sweep_temp_files(lake.root)  # what a killed writer left
    register_partitions(instance, lake)
    wanted = set(shops) if shops else None
    plan = {s: lake.dates(s) for s in lake.shops() if wanted is None or s in wanted}
    out = IngestRun()
    total = sum(len(d) + 1 for d in plan.values()) + 1
    with StageRuns("ingest", total, instance, resources, progress=progress) as runs:

        def attempt(selection: tuple[str, ...], shop: str, date: str | None):
            key = shop if date is None else shop_day_key(shop, date)
            try:
                return runs.run(selection, key)
            except Exception as exc:
                if fail_fast:
                    raise
                out.failures.append((shop, date, describe(exc)))
                runs.advance()
                return None

        for shop, dates in plan.items():
            if attempt(selections.CATALOG, shop, None) is None:
                runs.advance(len(dates))
                continue
            out.catalogs += 1
            if on_partition:
                on_partition(shop, None)
            for date in dates:
                recorded = attempt(selections.EVENTS, shop, date)
                if recorded is None:
                    continue
                out.add_partition(shop, recorded["raw_events"])
                if on_partition:
                    on_partition(shop, date)
        runs.run(selections.QUARANTINE)
    out.seconds = time.perf_counter() - t0
    if out.failures:
        raise IngestionFailed(out)
    return out


def run_features(
    instance: dg.DagsterInstance,
    shops: Iterable[str] | None = None,
    resources: Resources = None,
    run_config: RunConfig = None,
    progress: bool = False,
) -> FeaturesRun:
    """Per shop enriched sessions, embeddings and buyer features; then the training sample
    and feature transform; then per shop buyer vectors."""
    t0 = time.perf_counter()
    shops = _all_shops(instance, shops)
    out = FeaturesRun(shops=len(shops))
    with StageRuns(
        "features", 2 * len(shops) + 1, instance, resources, run_config, progress
    ) as runs:
        for shop in shops:
            runs.run(selections.FEATURES_SHOP, shop)
        fit = runs.run(selections.FEATURES_FIT)
        out.add_fit(fit["training_sample"], fit["feature_transform"])
        for shop in shops:
            out.add_vectors(runs.run(selections.VECTORS, shop)["buyer_vectors"])
    out.seconds = time.perf_counter() - t0
    return out


def run_personas(
    instance: dg.DagsterInstance,
    shops: Iterable[str] | None = None,
    resources: Resources = None,
    run_config: RunConfig = None,
    progress: bool = False,
) -> PersonasRun:
    """Train the codebook and write its report; per shop the persona assignments and token
    distribution; then distribution recovery and the persona cards. `run_config` is a
    Dagster run config (`{"ops": {"persona_codebook": {"config": {...}}, ...}}`); each
    run gets the ops it selects."""
    t0 = time.perf_counter()
    shops = _all_shops(instance, shops)
    out = PersonasRun()
    with StageRuns("personas", len(shops) + 2, instance, resources, run_config, progress) as runs:
        fit = runs.run(selections.PERSONAS_FIT)
        report = fit["codebook_report"]
        reports = json.loads(Path(report["path"]).with_name("report.json").read_text())
        out.add_codebook(fit["persona_codebook"], report, reports)
        for shop in shops:
            out.buyers += runs.run(selections.PERSONAS_SHOP, shop)["persona_assignments"]["buyers"]
        across = runs.run(selections.PERSONAS_REPORT)
        recovery = across["distribution_recovery"]
        stores = pl.read_csv(Path(recovery["path"]) / "store_js.csv").to_dicts()
        out.add_recovery(recovery, stores, across["persona_cards"])
    out.seconds = time.perf_counter() - t0
    return out


def run_traces(
    instance: dg.DagsterInstance,
    shops: Iterable[str] | None = None,
    resources: Resources = None,
    sessions_per_shop: int = 90,
    run_config: RunConfig = None,
    progress: bool = False,
    store_walks_per_shop: int = 0,
) -> TracesRun:
    """Replay `sessions_per_shop` sessions of each shop (default: the training shops); with
    `store_walks_per_shop`, fit the Markov policy and let that many personas of each shop walk
    its storefront (store_walk_traces); then build the stage-1 and stage-2 SFT datasets."""
    t0 = time.perf_counter()
    shops = _split_shops(resources, "train", shops)
    ops = dict((run_config or {}).get("ops", {}))
    replay = dict(ops.get("replayed_traces", {}).get("config", {}))
    replay.setdefault("sessions_per_shop", sessions_per_shop)
    ops["replayed_traces"] = {"config": replay}
    if store_walks_per_shop:
        walks = dict(ops.get("store_walk_traces", {}).get("config", {}))
        walks.setdefault("sessions_per_shop", store_walks_per_shop)
        ops["store_walk_traces"] = {"config": walks}
    out = TracesRun(shops=shops)
    total = len(shops) * (2 if store_walks_per_shop else 1) + 1 + bool(store_walks_per_shop)
    with StageRuns("traces", total, instance, resources, {"ops": ops}, progress) as runs:
        for shop in shops:
            out.add_replays(runs.run(selections.TRACES_SHOP, shop)["replayed_traces"])
        if store_walks_per_shop:
            runs.run(["markov_policy"])  # the walks' policy, fitted on the training shops
            for shop in shops:
                out.add_walks(runs.run(selections.STORE_WALKS, shop)["store_walk_traces"])
        sft = runs.run(selections.SFT)
        out.add_sft(sft["sft_stage1"], sft["sft_stage2"])
    out.seconds = time.perf_counter() - t0
    return out


def run_grounding(
    instance: dg.DagsterInstance,
    resources: Resources = None,
    run_config: RunConfig = None,
    single_stage: bool = False,
) -> GroundingRun:
    """Train the persona model (stage 1, then stage 2) from the SFT datasets; with
    `single_stage`, also the single-stage ablation (App. F) on the same data and config."""
    t0 = time.perf_counter()
    assets = ["persona_model"] + (["persona_model_single_stage"] if single_stage else [])
    ops = dict((run_config or {}).get("ops", {}))
    if single_stage and "persona_model" in ops:
        ops.setdefault("persona_model_single_stage", ops["persona_model"])
    with StageRuns("grounding", 1, instance, resources, {"ops": ops}) as runs:
        done = runs.run(assets)
    out = GroundingRun.of(done["persona_model"], done.get("persona_model_single_stage"))
    out.seconds = time.perf_counter() - t0
    return out


def run_simulation(
    instance: dg.DagsterInstance,
    shops: Iterable[str] | None = None,
    resources: Resources = None,
    run_config: RunConfig = None,
    instruction: bool = True,
    progress: bool = False,
    probe: bool = True,
) -> SimulationRun:
    """Per evaluation shop (default: the eval split) the population simulation and the
    instruction tasks, then (`probe`, when an LLM policy ran) the persona model's intent
    probe, then the evaluation report over them."""
    t0 = time.perf_counter()
    shops = _split_shops(resources, "eval", shops)
    ops = dict((run_config or {}).get("ops", {}))
    ops.setdefault("evaluation_report", {"config": {"shops": shops}})
    per_shop = ["population_simulation"] + (["instruction_following"] if instruction else [])
    pop = ops.get("population_simulation", {}).get("config", {})
    policies = pop.get("policies", SimulationConfig.model_fields["policies"].default)
    out = SimulationRun(shops=shops)
    with StageRuns(
        "simulation", len(shops) + 3, instance, resources, {"ops": ops}, progress
    ) as runs:
        # The Markov policy is fitted on the training shops first (out of sample on these).
        out.markov_fit_shops = list(runs.run(["markov_policy"])["markov_policy"]["fit_shops"])
        for shop in shops:
            done = runs.run(per_shop, shop)
            out.add_shop(done["population_simulation"], done.get("instruction_following"))
        if probe and any(p in LLM_POLICIES for p in policies):
            # The persona model's intent and token probe on the evaluation shops' product pages.
            probed = runs.run(["persona_probe"])["persona_probe"]
            out.probe_seconds = float(probed["seconds"])
        else:
            runs.advance()
        out.add_report(runs.run(selections.EVALUATION)["evaluation_report"])
    out.seconds = time.perf_counter() - t0
    return out
