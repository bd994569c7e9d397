"""Action Rate Alignment of the persona Markov policy on generated shops (issue #8's
acceptance: stratified ARA correct >= 0.85 and >= 0.15 above all-mismatch).

Generates shops, runs ingestion, features and personas through the Dagster assets, then the
population simulation of every evaluation shop with the Markov policy in headless Chromium,
and the evaluation report. Prints the report's path and, last, one line of figures.

    python benchmarks/simulation_alignment.py            # 6 shops, 12,000 buyers, 40 agents
    python benchmarks/simulation_alignment.py --quick    # 3 shops, 3,000 buyers, 12 agents
"""

from __future__ import annotations

import argparse
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
    args = ap.parse_args()

    import dagster as dg
    from rich.console import Console

    from dagster_project.resources import resources_under
    from dagster_project.run import run_demo, run_simulation
    from simpersona.synth import GeneratorConfig

    shops, buyers = (3, 3_000) if args.quick else (6, 12_000)
    agents = args.agents or (12 if args.quick else 40)
    root = args.data or Path(tempfile.mkdtemp(prefix="sim-align-"))
    res = resources_under(root, "benchmark")
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
            traces_per_shop=0,
        )
        prep = time.perf_counter() - t0
        cfg = {
            "ops": {
                "population_simulation": {
                    "config": {"policies": ["markov"], "agents_per_shop": agents}
                }
            }
        }
        sim = run_simulation(instance, resources=res, run_config=cfg, instruction=False)
    h = sim.headline
    print(f"report: {sim.report_html}")
    figures = {
        "shops": shops,
        "buyers": buyers,
        "eval_shops": len(sim.shops),
        "agents": sim.agents,
        "ara_correct_markov": h.get("ara_correct_markov"),
        "ara_all_mismatch_markov": h.get("ara_all_mismatch_markov"),
        "ara_random_mismatch_markov": h.get("ara_random_mismatch_markov"),
        "gap_vs_all_mismatch": round(
            (h.get("ara_correct_markov") or 0) - (h.get("ara_all_mismatch_markov") or 0), 4
        ),
        "purchase_cohens_d_markov": h.get("purchase_cohens_d_markov"),
        "agents_per_min": round(sim.agents / sim.seconds * 60, 1) if sim.seconds else 0,
        "prep_s": round(prep, 1),
        "simulation_s": round(sim.seconds, 1),
    }
    print(" ".join(f"{k}={v}" for k, v in figures.items()))


if __name__ == "__main__":
    main()
