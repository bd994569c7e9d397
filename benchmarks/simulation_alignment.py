"""Action Rate Alignment and persona separation of simulated buyers on generated shops.

`--policy markov` (default; stratified ARA correct >= 0.85 and >= 0.15 above all-mismatch):
generates shops, runs ingestion, features and personas through the Dagster assets, fits the
Markov policy on the training shops, then simulates every evaluation shop with it and with
the same model without the token (`markov_notoken`, paired) in headless Chromium, and the
evaluation report with intervals (benchmarks/evaluation_power.py is the powered version).

`--policy llm` (the persona model's targets, docs/llm.md: >= 95 % valid JSON actions on held-out shops, purchase
Cohen's d >= 0.8): the same, plus `--traces` replayed sessions per training shop, the tiny
base's pretraining (`--pretrain-steps`), stage 1 and stage 2 on CPU, then the persona LLM and
the same model without its persona token (`nopersona`) on the evaluation shops, in free text
(default; what "valid JSON" measures) or with `--guided` decoding, and `--max-invalid`
invalid actions reported back before a session ends. It also runs the intent probe
(`simpersona.llm.probe`, see benchmarks/intent_probe.py) on the trained model: `probe_intent_gap`
is how much more it carts under a buy goal than under a browse goal, `probe_token_gap` with
its persona token than without.

Prints the report's path and, last, one line of figures.

    python benchmarks/simulation_alignment.py            # 6 shops, 12,000 buyers, 40 agents
    python benchmarks/simulation_alignment.py --quick    # 3 shops, 3,000 buyers, 12 agents
    python benchmarks/simulation_alignment.py --policy llm --agents 60 --max-invalid 3
    python benchmarks/simulation_alignment.py --policy llm --quick   # wiring only: 3 steps
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small run (under a few minutes)")
    ap.add_argument("--agents", type=int, default=None, help="agents per evaluation shop")
    ap.add_argument("--data", type=Path, default=None, help="work folder (default: a temp dir)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--policy", choices=("markov", "llm"), default="markov")
    ap.add_argument("--traces", type=int, default=None, help="llm: replays per training shop")
    ap.add_argument("--pretrain-steps", type=int, default=None, help="llm: tiny base pretraining")
    ap.add_argument("--guided", action="store_true", help="llm: schema-guided decoding")
    ap.add_argument("--max-invalid", type=int, default=0, help="llm: invalid actions tolerated")
    args = ap.parse_args()
    llm = args.policy == "llm"

    import dagster as dg
    from rich.console import Console

    from dagster_project.resources import resources_under
    from dagster_project.run import run_demo, run_grounding, run_simulation
    from simpersona.synth import GeneratorConfig

    shops, buyers = (3, 3_000) if args.quick else (6, 12_000)
    agents = args.agents or (12 if args.quick else 40)
    traces = (args.traces or (2 if args.quick else 30)) if llm else 0
    pretrain = (
        args.pretrain_steps if args.pretrain_steps is not None else (3 if args.quick else 400)
    )
    root = args.data or Path(tempfile.mkdtemp(prefix="sim-align-"))
    res = resources_under(root, "benchmark", tiny_pretrain_steps=pretrain)
    fast = {
        "ops": {
            "persona_codebook": {
                "config": {"epochs": 3, "min_steps": 0, "kmeans_n_init": 1, "kmeans_max_iter": 5}
            }
        }
    }
    gen = GeneratorConfig(
        n_shops=shops, n_buyers=buyers, seed=args.seed, n_days=3, products_per_shop=(40, 60)
    )
    with dg.instance_for_test() as instance:
        t0 = time.perf_counter()
        run_demo(
            root,
            console=Console(file=sys.stderr, width=140),
            generator=gen,
            instance=instance,
            resources=res,
            persona_run_config=fast,
            traces_per_shop=traces,
            simulate=False,
        )
        prep = time.perf_counter() - t0
        grounding = run_grounding(instance, res) if llm else None
        # The Markov chains fitted on the training shops, with and without the token, on
        # agents drawn per funnel stratum (docs/simulation.md).
        sim_cfg = {
            "policies": ["markov", "markov_notoken"],
            "agents_per_shop": agents,
            "sampling": "strata",
        }
        if llm:
            sim_cfg = {
                "policies": ["llm", "nopersona"],
                "agents_per_shop": agents,
                "guided_decoding": args.guided,
                "max_invalid_actions": args.max_invalid,
            }
        cfg = {"ops": {"population_simulation": {"config": sim_cfg}}}
        sim = run_simulation(instance, resources=res, run_config=cfg, instruction=False)
    if grounding is not None:
        probe = probe_figures(root, grounding.version, quick=args.quick)
        print_llm_figures(args, shops, buyers, traces, pretrain, prep, grounding, sim, probe)
        return
    h = sim.headline
    print(f"report: {sim.report_html}")
    figures = {
        "shops": shops,
        "buyers": buyers,
        "eval_shops": len(sim.shops),
        "agents": sim.agents,
        "ara_correct_markov": h.get("ara_correct_markov"),
        "ara_correct_markov_ci_low": h.get("ara_correct_markov_ci_low"),
        "ara_all_mismatch_markov": h.get("ara_all_mismatch_markov"),
        "ara_random_mismatch_markov": h.get("ara_random_mismatch_markov"),
        "gap_vs_all_mismatch": h.get("ara_diff_markov"),
        "gap_ci_low": h.get("ara_diff_markov_ci_low"),
        "gap_ci_high": h.get("ara_diff_markov_ci_high"),
        "token_gap": h.get("ara_correct_gap_markov_markov_notoken"),
        "token_gap_ci_low": h.get("ara_correct_gap_markov_markov_notoken_ci_low"),
        "purchase_cohens_d_markov": h.get("purchase_cohens_d_markov"),
        "agents_per_min": round(sim.agents / sim.seconds * 60, 1) if sim.seconds else 0,
        "prep_s": round(prep, 1),
        "simulation_s": round(sim.seconds, 1),
    }
    print(" ".join(f"{k}={v}" for k, v in figures.items()))


def probe_figures(root: Path, version: str, quick: bool) -> dict:
    """The trained model's intent probe (`simpersona.llm.probe`, as in
    benchmarks/intent_probe.py, 20 prompts x 2 samples): does it cart more under a buy goal
    than under a browse goal, and with its token than without? Empty when the stage-2 data
    has no product page taught with the intent-only goal (small runs)."""
    from simpersona.llm.probe import ProbeConfig, intent_probe
    from simpersona.traces.dataset import read_dataset

    model = root / "artifacts" / "persona_model" / version
    data = root / "warehouse" / "sft" / "stage2.jsonl"
    rows = read_dataset(data)
    cfg = ProbeConfig(prompts=4 if quick else 20, samples=2, num_threads=os.cpu_count())
    try:
        return intent_probe(model, rows, cfg)
    except ValueError as exc:
        print(f"intent probe skipped: {exc}", file=sys.stderr)
        return {}


def print_llm_figures(args, shops, buyers, traces, pretrain, prep, grounding, sim, probe) -> None:
    """The persona model's figures: valid JSON / executable actions, purchase-bin separation with and
    without the persona token, the intent probe's gaps, and the training wall times."""
    f, g = sim.figures, grounding.figures

    def fig(key: str) -> float | None:
        v = f.get(key)
        return None if v is None else round(float(v), 4)

    print(f"report: {sim.report_html}")
    figures = {
        "shops": shops,
        "buyers": buyers,
        "traces_per_shop": traces,
        "eval_shops": len(sim.shops),
        "agents": sim.agents,
        "decoding": "guided" if args.guided else "free_text",
        "max_invalid_actions": args.max_invalid,
        "valid_json_rate": fig("valid_json_rate_llm"),
        "valid_action_rate": fig("valid_action_rate_llm"),
        "purchase_cohens_d_llm": fig("purchase_cohens_d_llm"),
        "purchase_cohens_d_nopersona": fig("purchase_cohens_d_nopersona"),
        "atc_rate_llm": fig("atc_rate_llm"),
        "ara_correct_llm": fig("ara_correct_llm"),
        "ara_all_mismatch_llm": fig("ara_all_mismatch_llm"),
        "probe_intent_gap": round(probe["intent_gap"], 3) if probe else None,
        "probe_token_gap": round(probe["token_gap"], 3) if probe else None,
        "pretrain_steps": pretrain,
        "pretrain_seconds": round(g.get("pretrain_seconds", 0.0), 1),
        "stage1_seconds": round(g.get("stage1_seconds", 0.0), 1),
        "stage2_seconds": round(g.get("stage2_seconds", 0.0), 1),
        "prep_s": round(prep, 1),
        "simulation_s": round(sim.seconds, 1),
    }
    print(" ".join(f"{k}={v}" for k, v in figures.items()))


if __name__ == "__main__":
    main()
