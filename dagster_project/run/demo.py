"""`simpersona demo`: generated shops through every stage, in-process, to
reports/latest/summary.json, sized for 2 CPU cores."""

import hashlib
import os
import re
import time
from pathlib import Path

import dagster as dg

from dagster_project.resources import default_resources
from dagster_project.run.console import print_personas
from dagster_project.run.figures import GroundingRun, SimulationRun, TracesRun
from dagster_project.run.instance import dagster_instance
from dagster_project.run.stages import (
    run_features,
    run_grounding,
    run_ingestion,
    run_personas,
    run_simulation,
    run_traces,
)
from simpersona.agent.policy import POLICIES
from simpersona.lake import Lake, sweep_temp_files

# The demo's simulation: small enough for 2 cores within the demo's 30 minutes (the
# assets' defaults are the paper-sized runs).
DEMO_SIMULATION = {
    "ops": {
        "population_simulation": {
            "config": {
                # Every policy: the Markov chains with and without the token and the labelled
                # in-sample oracle; the LLM with and without it, single-stage; Table 9's pair.
                "policies": list(POLICIES),
                # Equal agents per funnel stratum: purchasers are ~1 % of these shops, so a
                # draw from p̂_s leaves strata A–C with a handful of agents and Table 2 undecided.
                "sampling": "strata",
                "agents_per_shop": 20,
                # Markov agents cost no model: enough for an interval that decides the token
                # effect (docs/evaluation.md, "How many agents").
                "markov_agents_per_shop": 60,
                "ablation_agents_per_shop": 8,
            }
        },
        # n_tasks is a total over the evaluation shops (3 in the demo's split): 6 each.
        "instruction_following": {"config": {"n_tasks": 18, "repetitions": 2}},
    }
}


# The same demo with a real pretrained base (SmolLM2-135M-Instruct, the default) on 2 cores:
# a training step costs ~6 s an example and an agent step ~3 s instead of milliseconds, so
# stage 1 sees a quarter of the examples (it moves only the persona rows), the single-stage
# ablation and Table 9's pair are left out, and the LLM runs fewer agents and tasks — the
# demo's figures for them are small-sample (their intervals say so);
# benchmarks/persona_grounding.py and docs/llm.md have the measured sizes and times.
# Sized so `simpersona demo` stays within ~35 minutes on 2 cores (docs/llm.md, "The real
# base on 2 CPU cores": stage 2 costs ~7 s an example, an LLM agent step ~2 s);
# benchmarks/persona_grounding.py takes larger samples.
# Store walks (only with --store-walks): the first 12 steps of each, the CPU recipe of
# docs/llm.md ("Traces on your store"), since every example costs training time.
DEMO_STORE_WALKS = {"ops": {"store_walk_traces": {"config": {"kept_steps": 12}}}}
DEMO_TRACES_REAL_BASE = 6  # sessions replayed per training shop: ~80 stage-2 examples
DEMO_GROUNDING_REAL_BASE = {
    "ops": {"persona_model": {"config": {"train": {"stage1_epochs": 0.25}}}}
}
DEMO_SIMULATION_REAL_BASE = {
    "ops": {
        "population_simulation": {
            "config": {
                "policies": ["markov", "markov_notoken", "markov_oracle", "llm", "nopersona"],
                "sampling": "strata",
                "agents_per_shop": 2,
                "markov_agents_per_shop": 60,
                "max_steps": 12,
            }
        },
        "instruction_following": {
            "config": {
                "policies": ["markov", "llm"],
                "n_tasks": 6,  # two per evaluation shop: a cart task and a checkout task
                "repetitions": 1,
                "max_steps": 12,
            }
        },
        "persona_probe": {
            "config": {"sessions_per_shop": 6, "prompts": 10, "samples": 1, "max_new_tokens": 80}
        },
    }
}


def seed_hash_key(buyer_hash, seed: int) -> None:
    """Generated buyers have no real identity, so the demo may derive its buyer-hash key from
    the seed: the hashed ids, and every figure after ingestion, are then the same from run to
    run. A key that is configured, or a key file that exists, is left as it is."""
    from simpersona.ingest.ingest import HASH_KEY_ENV

    path = Path(buyer_hash.key_file)
    if buyer_hash.key or os.environ.get(HASH_KEY_ENV) or path.exists():
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(hashlib.sha256(f"simpersona-demo-seed-{seed}".encode()).hexdigest())


def run_demo(
    data_dir: str | os.PathLike[str],
    n_shops: int = 6,
    n_buyers: int = 60_000,
    seed: int = 0,
    console=None,
    *,
    generator=None,
    instance: dg.DagsterInstance | None = None,
    resources: dict | None = None,
    persona_run_config: dict | None = None,
    traces_per_shop: int | None = None,
    traces_run_config: dict | None = None,
    grounding_run_config: dict | None = None,
    simulation_run_config: dict | None = None,
    simulate: bool = True,
    single_stage: bool | None = None,
    base_model: str | None = None,
    store_walks_per_shop: int = 0,
) -> tuple[dict, Path]:
    """Generate shops, run every stage that exists, write reports/latest/summary.json.

    `generator` (a GeneratorConfig) replaces n_shops / n_buyers / seed; `instance`,
    `resources` and `persona_run_config` (Dagster run config of the personas assets) let
    tests run the demo small and in isolation; `traces_per_shop` sessions of each training
    shop are replayed in the browser for the SFT datasets (default 12; 8 with a real base;
    0: skip the traces stage and everything after it; `traces_run_config` is the Dagster run
    config of its assets); `grounding_run_config` /
    `simulation_run_config` are Dagster run configs of the persona model and of the
    simulation assets (default: DEMO_SIMULATION);
    `simulate=False` stops after the traces; `single_stage` also trains the single-stage
    ablation (App. F) for the `llm_single` policy (default: with the tiny model only);
    `base_model` replaces the training resource's base (a packaged name, a folder, "tiny");
    `store_walks_per_shop` personas of each training shop also walk its storefront for the
    SFT data (store_walk_traces; default none: each walk's examples cost training time).
    A real base gets the DEMO_*_REAL_BASE configurations unless others are given."""
    from simpersona.reports import new_report_dir, update_summary
    from simpersona.synth import GeneratorConfig, generate_lake

    t_demo = time.perf_counter()
    data_dir = Path(data_dir)
    if data_dir.is_dir():
        sweep_temp_files(data_dir)  # what a killed earlier run left
    resources = dict(resources or default_resources())
    if base_model is not None:
        resources["training"] = resources["training"].model_copy(update={"base_model": base_model})
    tiny = resources["training"].uses_tiny()
    if single_stage is None:
        single_stage = tiny
    if traces_per_shop is None:
        traces_per_shop = 12 if tiny else DEMO_TRACES_REAL_BASE
    if not tiny:
        grounding_run_config = grounding_run_config or DEMO_GROUNDING_REAL_BASE
        simulation_run_config = simulation_run_config or DEMO_SIMULATION_REAL_BASE
    say = console.print if console is not None else print
    lake_root = data_dir / "lake"
    gen_cfg = generator or GeneratorConfig(n_shops=n_shops, n_buyers=n_buyers, seed=seed)
    seed_hash_key(resources["buyer_hash"], gen_cfg.seed)
    say(f"[1/7] generating {gen_cfg.n_shops} shops, {gen_cfg.n_buyers:,} buyers into {lake_root}")
    planted = data_dir / "ground_truth" / "planted_types.parquet"
    gen = generate_lake(lake_root, gen_cfg, ground_truth_path=planted, progress=False)
    say("[2/7] ingesting through the Dagster assets")
    instance = instance or dagster_instance(data_dir / "dagster_home")
    ing = run_ingestion(lake_root, instance=instance, resources=resources, progress=True)
    shops = Lake.at(lake_root).shops()
    say("[3/7] buyer representations: sessions, embeddings, features, transform, vectors")
    feats = run_features(instance, shops=shops, resources=resources, progress=True)
    say("[4/7] personas: VQ-VAE + k-means, codebook report, assignments, recovery, cards")
    ops = dict((persona_run_config or {}).get("ops", {}))
    for op in ("codebook_report", "distribution_recovery"):
        op_cfg = dict(ops.get(op, {}).get("config", {}))
        op_cfg.setdefault("planted_types_path", str(planted))
        ops[op] = {"config": op_cfg}
    pers = run_personas(
        instance, shops=shops, resources=resources, run_config={"ops": ops}, progress=True
    )
    print_personas(pers, console)
    traces = TracesRun()
    if traces_per_shop > 0:
        say(f"[5/7] traces: goals, {traces_per_shop} replays per training shop, SFT datasets")
        traces = run_traces(
            instance,
            resources=resources,
            sessions_per_shop=traces_per_shop,
            run_config=traces_run_config or DEMO_STORE_WALKS,
            progress=True,
            store_walks_per_shop=store_walks_per_shop,
        )
        say(
            f"      {traces.sessions} sessions replayed, keep rate {traces.keep_rate:.2f}; "
            f"stage-1 {traces.stage1_examples} / stage-2 {traces.stage2_examples} examples"
        )
    grounding, sim = GroundingRun(), SimulationRun()
    if traces_per_shop > 0 and simulate:
        say(
            "[6/7] persona grounding on "
            f"{resources['training'].base_model_name()}: stage 1 (persona embeddings), "
            "stage 2 (all weights)"
        )
        grounding = run_grounding(
            instance, resources, grounding_run_config, single_stage=single_stage
        )
        say(
            f"      model {grounding.version}: "
            + (
                f"base pretraining {grounding.figures['pretrain_seconds']:.0f} s, "
                if grounding.figures.get("pretrain_seconds")
                else ""
            )
            + "stage 1 "
            f"{grounding.figures.get('stage1_seconds', 0):.0f} s, stage 2 "
            f"{grounding.figures.get('stage2_seconds', 0):.0f} s"
            + (
                f"; single-stage ablation {grounding.figures['single_stage_stage2_seconds']:.0f} s"
                if "single_stage_stage2_seconds" in grounding.figures
                else ""
            )
        )
        say("[7/7] simulation: agents per evaluation shop and policy, instruction tasks, report")
        sim = run_simulation(
            instance,
            resources=resources,
            run_config=simulation_run_config or DEMO_SIMULATION,
            progress=True,
        )
        say(f"      report: {sim.report_html}")
        for i, sentence in enumerate(sim.verdict, 1):
            say(f"      {i}. " + re.sub(r"\*\*(.+?)\*\*", r"[bold]\1[/bold]", sentence))
    summary = {
        "seed": gen_cfg.seed,
        "generate_shops": gen_cfg.n_shops,
        "generate_buyers": gen.n_buyers,
        "generate_events": gen.n_events,
        "generate_seconds": round(gen.seconds, 2),
        **ing.summary(),
        **feats.summary(),
        **pers.summary(),
        **traces.summary(),
        **grounding.summary(),
        **sim.summary(),
        "demo_seconds": round(time.perf_counter() - t_demo, 1),
    }
    report_dir = new_report_dir(data_dir / "reports")
    update_summary(report_dir, summary)
    return summary, report_dir
