"""The evaluation at a size that can decide: out-of-sample Markov agents on held-out generated
shops, every headline figure with its 95 % bootstrap interval and the smallest difference the
run could detect.

Generates shops, runs ingestion, features and personas through the Dagster assets, fits the
Markov policy on the training shops only (`markov_policy`), then simulates on every held-out
shop, in headless Chromium, the same agents three times: `markov` (the token's chain),
`markov_notoken` (the same model without the token: the all-buyers chain) and `markov_oracle`
(chains fitted on the shop itself: an in-sample upper bound, printed as such). The
evaluation report then gives:

* the token effect: stratified ARA correct with the token minus without, paired (same agents,
  tokens and seeds), with its interval and its minimal detectable difference (MDD, 80 %
  power) — the default size is chosen so the MDD is at most 0.05;
* ARA correct, all-mismatch and their difference (paper §3.2 / Table 2) with intervals;
* population recovery on the held-out stores (App. B; strata A–D): JS mean and R² of
  intent strength and add-to-cart rate, with store-bootstrap intervals.

Shops differ in their buyer mix more than the demo's (`--concentration`, the Dirichlet
concentration of each shop's type mix: 30 here, 300 in the demo), as real stores do; R²
across stores measures nothing when every store has the same mix.

    python benchmarks/evaluation_power.py           # 12 shops (6 held out), 150 agents/shop
    python benchmarks/evaluation_power.py --quick   # 4 shops, 12 agents/shop: wiring only

Prints the report's path, a table of the figures, and last one line of `name=value` pairs.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

POLICIES = ["markov", "markov_notoken", "markov_oracle"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small run (about a minute)")
    ap.add_argument("--shops", type=int, default=None, help="generated shops (half held out)")
    ap.add_argument("--buyers", type=int, default=None, help="buyers over all shops")
    ap.add_argument("--agents", type=int, default=None, help="agents per held-out shop, policy")
    ap.add_argument("--concentration", type=float, default=30.0, help="shop mix concentration")
    ap.add_argument("--resamples", type=int, default=2000, help="bootstrap resamples")
    ap.add_argument("--concurrency", type=int, default=4, help="browser sessions at once")
    ap.add_argument("--data", type=Path, default=None, help="work folder (default: a temp dir)")
    ap.add_argument(
        "--reuse", action="store_true", help="--data holds a finished run: simulate again only"
    )
    ap.add_argument("--sampling", choices=("mix", "strata"), default="strata")
    ap.add_argument("--sessions", choices=("all", "deepest"), default="deepest")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    import dagster as dg
    from rich.console import Console

    from dagster_project.resources import resources_under
    from dagster_project.run import register_partitions, run_demo, run_simulation
    from simpersona.lake import Lake
    from simpersona.synth import GeneratorConfig

    shops = args.shops or (4 if args.quick else 12)
    buyers = args.buyers or (4_000 if args.quick else 60_000)
    agents = args.agents or (12 if args.quick else 150)
    root = args.data or Path(tempfile.mkdtemp(prefix="eval-power-"))
    res = resources_under(root, "benchmark")
    fast = {
        "ops": {
            "persona_codebook": {
                "config": {"epochs": 3, "min_steps": 0, "kmeans_n_init": 1, "kmeans_max_iter": 5}
            }
            if args.quick
            else {"config": {}}
        }
    }
    gen = GeneratorConfig(
        n_shops=shops,
        n_buyers=buyers,
        seed=args.seed,
        n_days=3 if args.quick else 7,
        products_per_shop=(40, 60) if args.quick else (60, 200),
        mixture_concentration=args.concentration,
    )
    sim_cfg = {
        "ops": {
            "population_simulation": {
                "config": {
                    "policies": POLICIES,
                    "agents_per_shop": agents,
                    "concurrency": args.concurrency,
                    "sampling": args.sampling,
                    "markov_sessions": args.sessions,
                    "seed": args.seed,
                }
            },
            "markov_policy": {"config": {"sessions": args.sessions}},
            "evaluation_report": {"config": {"resamples": args.resamples, "seed": args.seed}},
        }
    }
    with dg.instance_for_test() as instance:
        t0 = time.perf_counter()
        if args.reuse:  # a fresh instance: the shops are partitions again
            register_partitions(instance, Lake.at(root / "lake"))
        else:
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
        sim = run_simulation(
            instance, resources=res, run_config=sim_cfg, instruction=False, progress=True
        )
    f, h = sim.figures, sim.headline
    rec = {k: v for k, v in h.items() if "_heldout" in k}

    def fig(key: str, src: dict | None = None) -> float | None:
        v = (src or f).get(key)
        return None if v is None else round(float(v), 4)

    print(f"report: {sim.report_html}")
    rows = [
        ("token effect: ARA correct, markov − markov_notoken", "ara_correct_gap_markov_markov_notoken"),
        ("ARA correct (markov)", "ara_correct_markov"),
        ("ARA all-mismatch (markov)", "ara_all_mismatch_markov"),
        ("ARA correct − all-mismatch (markov)", "ara_diff_markov"),
        ("ARA correct − all-mismatch (markov_notoken)", "ara_diff_markov_notoken"),
        ("ARA correct (oracle, in-sample upper bound)", "ara_correct_markov_oracle"),
        ("purchase Cohen's d (markov)", "purchase_cohens_d_markov"),
    ]  # fmt: skip
    for label, key in rows:
        lo, hi, mdd = f.get(f"{key}_ci_low"), f.get(f"{key}_ci_high"), f.get(f"{key}_mdd")
        if f.get(key) is None:
            print(f"{label:<52} not measured")
            continue
        ci = f"[{lo:+.3f}, {hi:+.3f}]" if lo is not None else "[–]"
        print(f"{label:<52} {f[key]:+.3f} {ci}  MDD {mdd if mdd is None else round(mdd, 3)}")
    print(
        f"held-out recovery: JS mean {rec.get('js_mean_heldout')} "
        f"[{rec.get('js_mean_heldout_ci_low')}, {rec.get('js_mean_heldout_ci_high')}] over "
        f"{rec.get('n_stores_heldout')} stores; R² intent {rec.get('r2_intent_strength_heldout')}"
        f", R² add-to-cart {rec.get('r2_atc_rate_heldout')}"
    )
    gap = "ara_correct_gap_markov_markov_notoken"
    figures = {
        "shops": shops,
        "eval_shops": len(sim.shops),
        "fit_shops": len(sim.markov_fit_shops),
        "agents": sim.agents,
        "agents_per_policy": fig("agents_markov"),
        "token_gap": fig(gap),
        "token_gap_ci_low": fig(f"{gap}_ci_low"),
        "token_gap_ci_high": fig(f"{gap}_ci_high"),
        "token_gap_mdd": fig(f"{gap}_mdd"),
        "detects_0_05": bool((f.get(f"{gap}_mdd") or 1.0) <= 0.05),
        "verdict_token_effect": h.get("verdict_token_effect_markov"),
        "ara_correct_markov": fig("ara_correct_markov"),
        "ara_correct_markov_ci_low": fig("ara_correct_markov_ci_low"),
        "ara_diff_markov": fig("ara_diff_markov"),
        "ara_diff_markov_ci_low": fig("ara_diff_markov_ci_low"),
        "ara_diff_markov_ci_high": fig("ara_diff_markov_ci_high"),
        "ara_diff_markov_mdd": fig("ara_diff_markov_mdd"),
        "ara_correct_oracle": fig("ara_correct_markov_oracle"),
        "js_mean_heldout": fig("js_mean_heldout", rec),
        "js_mean_heldout_ci_high": fig("js_mean_heldout_ci_high", rec),
        "r2_intent_strength_heldout": fig("r2_intent_strength_heldout", rec),
        "r2_intent_strength_heldout_ci_low": fig("r2_intent_strength_heldout_ci_low", rec),
        "r2_atc_rate_heldout": fig("r2_atc_rate_heldout", rec),
        "r2_atc_rate_heldout_ci_low": fig("r2_atc_rate_heldout_ci_low", rec),
        "n_stores_heldout": rec.get("n_stores_heldout"),
        "agents_per_min": round(sim.agents / sim.seconds * 60, 1) if sim.seconds else 0,
        "prep_s": round(prep, 1),
        "simulation_s": round(sim.seconds, 1),
    }
    print(" ".join(f"{k}={v}" for k, v in figures.items()))


if __name__ == "__main__":
    main()
