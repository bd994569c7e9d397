"""Store walks: a training shop's personas shop the project's storefront on their own, and their
sessions become SFT trajectories (docs/llm.md, "Traces on your store").

The replayed traces (traces/replay.py) re-enact real sessions, each with a goal naming the
products it touched: a model fine-tuned only on them has never been asked to shop without a
named product, and rarely walked a checkout to its end, which is what an agent on an unseen
store must do. Here each persona's own Markov walk (agent/markov.py, keeping to the goal's
funnel step) shops the shop's storefront under every guard of `simulate --url`, with goals
drawn from paraphrases the evaluation never shows (traces/store.py); a session is kept when it
reached its goal's step. Half the sessions run on a storefront whose add to cart leads back to
the product page, as most stores do, so the model also sees the cart link taken from there.

    records, figures = walk_store(catalog, markov, shares, WalkConfig(sessions=16), workdir)
"""

from __future__ import annotations

import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from simpersona.traces.store import KEEP_STEP, TRAINING_GOALS, trace_records

if TYPE_CHECKING:
    from simpersona.store.visits import AfterAdd


@dataclass(frozen=True)
class WalkConfig:
    """How many personas walk the storefront, and how much of each walk becomes training data.
    Ours, not the paper's (which trains on replayed traces only): 16 sessions is the recipe
    measured in docs/llm.md ("Traces on your store"), which kept 12 steps of each to bound
    the cost of training on a CPU; by default every step is kept, checkout forms included."""

    sessions: int = 16  # sessions per shop, half of them with the add leading back to the product
    kept_steps: int | None = None  # steps of each session made examples (None: all)
    max_steps: int = 40  # steps a session may take
    session_timeout_s: float = 240.0
    concurrency: int = 2  # browser sessions at once
    goal: str = "buy"  # a key of TRAINING_GOALS
    seed: int = 0

    def __post_init__(self) -> None:
        if self.goal not in TRAINING_GOALS or self.goal not in KEEP_STEP:
            raise ValueError(f"goal must be one of {', '.join(TRAINING_GOALS)}, got {self.goal!r}")
        if (
            self.sessions < 0
            or self.max_steps < 1
            or (self.kept_steps is not None and self.kept_steps < 1)
        ):
            raise ValueError("sessions must be ≥ 0, kept_steps (when given) and max_steps ≥ 1")


def walk_store(
    catalog: Any,
    markov: Any,
    token_shares: Mapping[str, float],
    cfg: WalkConfig,
    workdir: str | Path,
) -> tuple[list[dict[str, Any]], dict[str, float | int]]:
    """`cfg.sessions` personas, drawn from `token_shares` (the shop's p̂_s), walk `catalog`'s
    storefront (a StoreCatalog) with the Markov policy `markov` (a MarkovModel). Returns the
    trajectory records (traces/store.py: `keep` when the goal's step was reached) and
    figures. `workdir` holds the sessions' recordings and events while they run; it is removed."""
    from simpersona.agent.live import LiveConfig, draw_labels, simulate_live
    from simpersona.agent.markov_policy import MarkovPolicy
    from simpersona.store.app import create_app
    from simpersona.store.events import MemoryEventSink
    from simpersona.store.server import serve

    workdir = Path(workdir)
    records: list[dict[str, Any]] = []
    orders = guarded = 0
    halves: dict[AfterAdd, int] = {
        "cart": cfg.sessions - cfg.sessions // 2,
        "product": cfg.sessions // 2,
    }
    try:
        for i, (after_add, n) in enumerate(halves.items()):
            if n == 0:
                continue
            seed = cfg.seed * 1_000_003 + i
            labels = draw_labels(token_shares, n, seed)
            personas = [
                markov.persona(lab, seed=seed * 1_000_003 + k) for k, lab in enumerate(labels)
            ]
            app = create_app(catalog, MemoryEventSink(), after_add=after_add)
            with serve(app) as base_url:
                live = LiveConfig(
                    url=base_url + "/",
                    n_sessions=n,
                    concurrency=cfg.concurrency,
                    seed=seed,
                    goal=cfg.goal,
                    goal_texts=TRAINING_GOALS[cfg.goal],
                    run_id=f"walk{cfg.seed}{after_add[0]}",
                    shop_id=catalog.shop_id,
                    # the project's storefront is a test store: orders complete the walk there
                    allow_orders=True,
                    order_hosts=(urlsplit(base_url).netloc,),
                    max_steps=cfg.max_steps,
                    session_timeout_s=cfg.session_timeout_s,
                )
                policy = MarkovPolicy(markov, seed=seed, follow_goal=True)
                report = simulate_live(live, policy, personas, workdir / after_add)
            records += trace_records(report, cfg.goal, cfg.kept_steps)
            orders += sum(bool(f.get("order")) for f in report.funnels)
            guarded += sum(1 for r in report.results if r.guard)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    kept = sum(bool(r["keep"]) for r in records)
    figures: dict[str, float | int] = {
        "sessions": len(records),
        "kept": kept,
        "keep_rate": round(kept / len(records), 4) if records else 0.0,
        "orders": orders,
        "guarded": guarded,
        "steps": sum(len(r["steps"]) for r in records),
    }
    return records, figures
