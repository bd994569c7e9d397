"""Benchmark of persona agents on real third-party stores: how far buy-goal sessions get on
django-oscar and EverShop served on loopback (scripts/shops), with the Markov policy and the
LLM policy, and whether the safety guards held.

    python benchmarks/bench_live_store.py --quick          # Markov, 4 sessions a store
    python benchmarks/bench_live_store.py                  # Markov and LLM, 20 sessions
    python benchmarks/bench_live_store.py --llm-model data/artifacts/persona_model/<v>

Per store and policy it prints the share of sessions that reached a product page, added to
the cart (an add the store accepted) and reached checkout, each with its Wilson 95 % interval
and the number of sessions; the orders placed (must be 0: the stores are not declared test
stores), requests that got an answer from a host off the allowlist (must be 0), the guards
that stopped sessions, and the rejects when the recorded clickstream is ingested (must be
0). The Markov chains are fitted on a generated shop and the LLM is the persona model of
`--llm-model` (default: the data dir's current persona_model); neither was fitted on these
stores. Without a persona model the LLM rows say so and are left out. The last line is
`name=value` pairs, `<store>_<policy>_<figure>`.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from scripts.shops import LAUNCHERS, load_shop  # noqa: E402
from simpersona.agent.cli import load_shop_events  # noqa: E402
from simpersona.agent.live import LiveConfig, draw_labels, simulate_live  # noqa: E402
from simpersona.agent.markov_policy import MarkovPolicy  # noqa: E402
from simpersona.agent.policy import Persona  # noqa: E402
from simpersona.agent.simulate import fit_shop_markov  # noqa: E402
from simpersona.artifacts import current_folder  # noqa: E402
from simpersona.datadir import default_data_dir  # noqa: E402
from simpersona.ingest.ingest import ingest_catalog, ingest_events  # noqa: E402
from simpersona.lake import Lake  # noqa: E402
from simpersona.synth import GeneratorConfig, generate_lake  # noqa: E402
from simpersona.warehouse import Warehouse  # noqa: E402


def ingest_rejects(folder: Path) -> int:
    lake, wh = Lake.at(folder / "lake"), Warehouse.at(folder / "warehouse")
    rejected = 0
    for shop in lake.shops():
        # Every row counted: no reject threshold stops the count.
        cat = ingest_catalog(lake, wh, shop, max_reject_share=1.0)
        rejected += sum(cat.rejects_by_reason.values())
        for date in lake.dates(shop):
            res = ingest_events(lake, wh, shop, date, b"k" * 32, max_reject_share=1.0)
            rejected += res.rows_rejected
    return rejected


def paired_differences(
    store: str, new: list[dict[str, bool]], base: list[dict[str, bool]], seed: int
) -> dict[str, object]:
    """Per funnel step, the share reached by `llm` minus `llm_base` over the same personas and
    session seeds, with a paired percentile bootstrap 95 % interval (sessions resampled)."""
    import numpy as np
    from scipy.stats import bootstrap

    out: dict[str, object] = {}
    for step in ("product", "cart_add", "checkout"):
        a = np.array([f[step] for f in new], dtype=float)
        b = np.array([f[step] for f in base], dtype=float)
        diff = float(a.mean() - b.mean())
        if np.all(a - b == (a - b)[0]):  # no spread: the interval is the point
            lo = hi = diff
        else:
            ci = bootstrap((a, b), lambda x, y, axis=-1: x.mean(axis) - y.mean(axis),
                           paired=True, vectorized=True, method="percentile",
                           n_resamples=10_000, random_state=seed).confidence_interval  # fmt: skip
            lo, hi = float(ci.low), float(ci.high)
        verdict = "better" if lo > 0 else ("worse" if hi < 0 else "undecided")
        print(f"{store}: {step} llm - llm_base = {diff:+.2f} [{lo:+.2f}, {hi:+.2f}] "
              f"(paired, n={len(a)}): {verdict}", flush=True)  # fmt: skip
        out[f"{store}_llm_minus_base_{step}"] = round(diff, 3)
        out[f"{store}_llm_minus_base_{step}_ci"] = f"[{lo:.3f},{hi:.3f}]"
    return out


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--quick", action="store_true", help="Markov only, 4 sessions a store")
    ap.add_argument("--sessions", type=int, default=20)
    ap.add_argument("--llm-sessions", type=int, default=10)
    ap.add_argument("--concurrency", type=int, default=2)
    ap.add_argument("--stores", default=",".join(LAUNCHERS))
    ap.add_argument("--policies", default="markov,llm")
    ap.add_argument("--llm-model", type=Path, default=None)
    ap.add_argument(
        "--baseline-llm-model",
        type=Path,
        default=None,
        help="a second persona model run on the same personas and seeds (policy llm_base); "
        "the paired difference llm - llm_base per funnel step is printed with its interval",
    )
    ap.add_argument("--data-dir", type=Path, default=None)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    n_markov = 4 if args.quick else args.sessions
    policies = ["markov"] if args.quick else args.policies.split(",")
    if args.baseline_llm_model is not None and "llm" in policies:
        policies.append("llm_base")
    work = Path(tempfile.mkdtemp(prefix="bench-live-"))
    gen = work / "gen"
    generate_lake(gen, GeneratorConfig(n_shops=1, n_buyers=300, seed=args.seed), progress=False)
    model = fit_shop_markov(load_shop_events(Lake.at(gen).shops()[0], gen, None))
    llm_folder = args.llm_model
    if "llm" in policies and llm_folder is None:
        data = args.data_dir or default_data_dir()
        llm_folder = current_folder(data / "artifacts", "persona_model")
    figures: dict[str, object] = {}
    funnels: dict[str, list[dict[str, bool]]] = {}
    for store in args.stores.split(","):
        shop = load_shop(store)
        if not shop.installed():
            shop.install()
        url = shop.start()
        try:
            for policy in policies:
                key = f"{store}_{policy}"
                folder = args.baseline_llm_model if policy == "llm_base" else llm_folder
                if policy != "markov" and (folder is None or not Path(folder).exists()):
                    print(f"{key}: no persona model (give --llm-model); not measured")
                    continue
                n = n_markov if policy == "markov" else args.llm_sessions
                cfg = LiveConfig(url=url + "/", n_sessions=n, concurrency=args.concurrency,
                                 goal="buy", seed=args.seed)  # fmt: skip
                labels = draw_labels(model.label_shares, n, seed=args.seed)
                out = work / key
                t0 = time.monotonic()
                if policy == "markov":
                    personas = [model.persona(lab, seed=i) for i, lab in enumerate(labels)]
                    report = simulate_live(cfg, MarkovPolicy(model, args.seed, follow_goal=True),
                                           personas, out)  # fmt: skip
                else:
                    from simpersona.agent.live_cli import llm_policy

                    tokens = draw_labels({str(t): 1.0 for t in range(16)}, n, seed=args.seed)
                    personas = [Persona(t, attributes={"token": t}) for t in tokens]
                    with llm_policy(Path("."), folder, None, args.concurrency) as agent:
                        report = simulate_live(cfg, agent, personas, out)
                funnels[key] = report.funnels
                s = report.summary()
                rejects = ingest_rejects(out)
                print(
                    f"{key}: n={s['sessions']} product={s['product_rate']} {s['product_rate_ci']} "
                    f"cart_add={s['cart_add_rate']} {s['cart_add_rate_ci']} "
                    f"checkout={s['checkout_rate']} {s['checkout_rate_ci']} "
                    f"orders={s['orders_placed']} off_allowlist={s['requests_off_allowlist_completed']} "
                    f"guards={s['guards']} outcomes={s['outcomes']} ingest_rejects={rejects} "
                    f"wall={time.monotonic() - t0:.0f}s",
                    flush=True,
                )
                figures |= {
                    f"{key}_sessions": s["sessions"],
                    f"{key}_product_rate": s["product_rate"],
                    f"{key}_cart_add_rate": s["cart_add_rate"],
                    f"{key}_checkout_rate": s["checkout_rate"],
                    f"{key}_orders_placed": s["orders_placed"],
                    f"{key}_shop_orders": shop.orders(),
                    f"{key}_off_allowlist": s["requests_off_allowlist_completed"],
                    f"{key}_ingest_rejects": rejects,
                    f"{key}_sessions_per_min": s["sessions_per_min"],
                }
            if f"{store}_llm" in funnels and f"{store}_llm_base" in funnels:
                figures |= paired_differences(
                    store, funnels[f"{store}_llm"], funnels[f"{store}_llm_base"], args.seed
                )
        finally:
            shop.stop()
    print(" ".join(f"{k}={v}" for k, v in figures.items()))


if __name__ == "__main__":
    main()
