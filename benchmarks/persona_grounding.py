"""Persona grounding with a real pretrained base: does the fine-tuned model write valid
actions, follow its instructions, read its goal's intent and act on its persona token — on
held-out shops?

Runs the demo (`dagster_project.run.run_demo`: generated shops, half of them held out of
every fit; traces of the training shops; stage 1 and stage 2 on SmolLM2-135M-Instruct, the
packaged base) and reads its figures, or reads those of a finished run:

* schema-valid JSON replies and executable actions of the LLM agents;
* instruction following (Table-4 tasks on the held-out shops): cart and checkout success;
* intent: the `persona_probe` asset's add-to-cart rate on held-out product pages under a
  "buy" minus a "browse" goal, with its paired bootstrap interval;
* persona token: the LLM agents' purchase-bin Cohen's d, the same model's without its token,
  their paired gap and interval; stratified ARA correct vs all-mismatch;
* stage-1, stage-2, simulation and probe times; LLM agents per minute.

Every figure is printed whatever it is, beside its target (paper §2.1.2–§3.4; docs/llm.md), as met,
missed or undecided (an interval that straddles the target).

    python benchmarks/persona_grounding.py                      # a demo run (about 35 min)
    python benchmarks/persona_grounding.py --agents 20 --tasks 30   # larger samples, longer
    python benchmarks/persona_grounding.py --from-run data      # a finished run (make demo)
    python benchmarks/persona_grounding.py --from-run data --quick   # + re-probe 3 prompts

`--quick` needs a finished run: it re-probes the run's persona model on 3 of its held-out
prompts (1 sample each, no browser) and prints the run's figures. Last line: `name=value`.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from simpersona.artifacts import require_current  # noqa: E402

# (summary key, target, direction, what it is). ">=": the figure should reach the target;
# "ci>": the interval's low end should exceed it.
TARGETS = [
    ("valid_json_rate", 0.98, ">=", "schema-valid JSON replies (LLM agents)"),
    ("valid_action_rate", 0.90, ">=", "executable actions (LLM agents)"),
    ("instruction_cart_success_llm", 0.80, ">=", "cart tasks: the right product in the cart"),
    ("instruction_checkout_success_llm", 0.60, ">=", "checkout tasks: reached checkout"),
    ("intent_gap_llm", 0.30, ">=", "add-to-cart under buy − browse (held-out pages)"),
    ("purchase_cohens_d_llm", 0.80, ">=", "purchase-bin Cohen's d, persona policy"),
    ("token_d_gap_llm", 0.0, "ci>", "Cohen's d with − without the token (paired)"),
    ("ara_diff_llm", 0.10, ">=", "stratified ARA correct − all-mismatch"),
]
TIMES = [
    "base_model",
    "sft_stage2_examples",
    "stage1_seconds",
    "stage2_seconds",
    "grounding_seconds",
    "probe_seconds",
    "simulation_seconds",
    "llm_agents_per_min",
    "agents_llm",
    "agents_nopersona",
    "instruction_runs",
    "probe_prompts",
    "demo_seconds",
]


def verdict(v, lo, hi, target: float, how: str) -> str:
    """met / missed / undecided for a figure and its interval (when it has one)."""
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "not measured"
    if how == "ci>":
        if lo is None:
            return "met" if v > target else "missed"
        return (
            "met" if lo > target else ("missed" if hi is not None and hi <= target else "undecided")
        )
    if lo is not None and hi is not None and lo < target <= hi:
        return "undecided"
    return "met" if v >= target else "missed"


def report(summary: dict) -> dict:
    """Print the table; return the flat figures of the last line."""
    flat: dict = {}
    print(f"\n{'figure':34} {'value':>8} {'95% CI':>17} {'target':>8}  verdict   what")
    for key, target, how, what in TARGETS:
        v = summary.get(key)
        lo, hi = summary.get(f"{key}_ci_low"), summary.get(f"{key}_ci_high")
        ci = f"[{lo:.3f}, {hi:.3f}]" if lo is not None and hi is not None else ""
        shown = f"{v:.3f}" if isinstance(v, int | float) else "–"
        tgt = f"{'>' if how == 'ci>' else '≥'}{target:g}"
        print(f"{key:34} {shown:>8} {ci:>17} {tgt:>8}  {verdict(v, lo, hi, target, how):9} {what}")
        flat[key] = None if v is None else round(float(v), 4)
        for s, b in (("_ci_low", lo), ("_ci_high", hi)):
            if b is not None:
                flat[key + s] = round(float(b), 4)
    for key in ("purchase_cohens_d_nopersona", "ara_correct_llm", "ara_all_mismatch_llm"):
        if summary.get(key) is not None:
            print(f"{key:34} {summary[key]:>8.3f}")
            flat[key] = round(float(summary[key]), 4)
    print()
    for key in TIMES:
        if key in summary:
            print(f"{key:34} {summary[key]}")
            flat[key] = summary[key]
    return flat


def quick_probe(root: Path, prompts: int) -> dict:
    """Re-probe the run's current persona model on its stored held-out prompts."""
    from simpersona.llm.probe import ProbeConfig, intent_probe
    from simpersona.traces.dataset import read_dataset

    art = root / "artifacts"
    version, _ = require_current(art, "persona_model")
    rows_path = art / "persona_probe" / f"{version}.rows.jsonl"
    if not rows_path.exists():
        sys.exit(f"{rows_path} not found: materialize persona_probe for model {version}")
    rows = read_dataset(rows_path)
    t0 = time.perf_counter()
    r = intent_probe(art / "persona_model" / version, rows, ProbeConfig(prompts=prompts, samples=1))
    return {
        "quick_intent_gap": round(r["intent_gap"], 3),
        "quick_token_gap": round(r["token_gap"], 3),
        "quick_prompts": r["prompts"],
        "quick_unparsed_rate": round(r["unparsed_rate"], 3),
        "quick_probe_seconds": round(time.perf_counter() - t0, 1),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--from-run", type=Path, default=None, help="a finished run's data folder")
    ap.add_argument("--data", type=Path, default=Path("data/bench/persona_grounding"),
                    help="where the demo run goes (without --from-run)")  # fmt: skip
    ap.add_argument("--base", default="smollm2-135m-instruct", help="packaged name or folder")
    ap.add_argument("--quick", action="store_true", help="with --from-run: re-probe 3 prompts")
    ap.add_argument(
        "--agents",
        type=int,
        default=None,
        help="LLM agents per evaluation shop and policy (default: the demo's)",
    )
    ap.add_argument(
        "--tasks",
        type=int,
        default=None,
        help="instruction tasks over the evaluation shops (default: the demo's)",
    )
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    extra: dict = {}
    if args.from_run is not None:
        path = args.from_run / "reports" / "latest" / "summary.json"
        if not path.exists():
            sys.exit(f"{path} not found: run `simpersona demo --data-dir {args.from_run}` first")
        summary = json.loads(path.read_text())
        if args.quick:
            extra = quick_probe(args.from_run, 3)
    elif args.quick:
        sys.exit("--quick re-probes a finished run: pass --from-run DATA (after `make demo`)")
    else:
        import copy

        from dagster_project.run import DEMO_SIMULATION_REAL_BASE, run_demo

        sim = copy.deepcopy(DEMO_SIMULATION_REAL_BASE)
        if args.agents:
            sim["ops"]["population_simulation"]["config"]["agents_per_shop"] = args.agents
        if args.tasks:
            sim["ops"]["instruction_following"]["config"]["n_tasks"] = args.tasks
        summary, _ = run_demo(
            args.data, seed=args.seed, base_model=args.base, simulation_run_config=sim
        )
    print(f"run: base {summary.get('base_model')}, model {summary.get('persona_model_version')}, "
          f"evaluation shops {summary.get('evaluation_shops')}")  # fmt: skip
    flat = report(summary) | extra
    print(" ".join(f"{k}={v}" for k, v in flat.items()))


if __name__ == "__main__":
    main()
