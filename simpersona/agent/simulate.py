"""Simulating a shop's buyers: serve its storefront, run persona Markov agents against it
in a browser pool, record every session and write the agents' events into a lake.

    model = fit_shop_markov(warehouse, "shop-000")                 # labels: strata by default
    report = simulate_shop(catalog, model, SimulationConfig(n_sessions=50), out_dir)

The agents' clicks land in `<events lake>/events/shop=<S>/…` as canonical events (through
the storefront's lake sink), so the same ingestion and feature code measures them.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polars as pl

from simpersona.agent.browser import BrowserConfig, BrowserPool
from simpersona.agent.markov import MarkovModel
from simpersona.agent.markov_policy import MarkovPolicy
from simpersona.agent.policy import Goal, Policy
from simpersona.agent.recorder import SessionRecorder
from simpersona.agent.runtime import run_sessions
from simpersona.agent.session import RuntimeConfig, SessionResult, SessionSpec

DEFAULT_GOAL = "Shop the way you usually do; leave when you are done."


@dataclass
class SimulationConfig:
    """How many agents, how many at once, and their limits."""

    n_sessions: int = 20
    concurrency: int = 4
    seed: int = 0
    run_id: str | None = None  # buyer ids are sim-<run_id>-<n>; default: from the clock
    goal: str = DEFAULT_GOAL
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)
    browser: BrowserConfig = field(default_factory=BrowserConfig)


@dataclass
class SimulationReport:
    """What a simulation did: one result per session and the headline figures."""

    results: list[SessionResult]
    wall_s: float
    recordings_dir: Path | None
    events_written: int = 0
    event_files: list[str] = field(default_factory=list)

    @property
    def outcomes(self) -> dict[str, int]:
        return dict(Counter(r.outcome for r in self.results))

    @property
    def action_ms(self) -> list[float]:
        return [m for r in self.results for m in r.action_ms]

    def summary(self) -> dict[str, Any]:
        ms = self.action_ms
        steps = [r.steps for r in self.results]
        return {
            "sessions": len(self.results),
            "wall_s": round(self.wall_s, 2),
            "sessions_per_min": round(len(self.results) / self.wall_s * 60, 1)
            if self.wall_s
            else 0.0,
            "mean_steps": round(statistics.fmean(steps), 2) if steps else 0.0,
            "action_ms_p50": round(statistics.median(ms), 1) if ms else 0.0,
            "outcomes": self.outcomes,
            "events_written": self.events_written,
            "recordings": str(self.recordings_dir) if self.recordings_dir else None,
        }


def shop_labels_by_stratum(events: pl.DataFrame) -> pl.DataFrame:
    """buyer_id → stratum (A–E, the funnel depth of paper App. A): the label to use when no
    persona tokens exist yet."""
    from simpersona.features.scalars import buyer_features

    feats = buyer_features(events)
    return feats.select("buyer_id", pl.col("stratum").alias("label"))


def fit_shop_markov(
    events: pl.DataFrame,
    products: pl.DataFrame | None = None,
    collections: pl.DataFrame | None = None,
    labels: pl.DataFrame | None = None,
    label_column: str = "label",
) -> MarkovModel:
    """A Markov model of one shop's buyers; labels default to the strata."""
    if labels is None:
        labels, label_column = shop_labels_by_stratum(events), "label"
    return MarkovModel.fit(events, labels, products, collections, label_column=label_column)


def session_specs(
    model: MarkovModel, base_url: str, cfg: SimulationConfig, run_id: str
) -> list[SessionSpec]:
    """One spec per session: a label drawn in the population's proportions, a persona of
    that label, a fresh buyer id, and a per-session seed."""
    labels = model.sample_labels(cfg.n_sessions, seed=cfg.seed)
    specs = []
    for i, label in enumerate(labels):
        buyer = f"sim-{run_id}-{i:05d}"
        specs.append(
            SessionSpec(
                start_url=base_url.rstrip("/") + "/",
                buyer_id=buyer,
                persona=model.persona(label, seed=cfg.seed * 1_000_003 + i),
                goal=Goal(cfg.goal, target="browse"),
                seed=cfg.seed * 1_000_003 + i,
                key=buyer,
            )
        )
    return specs


def run_simulation(
    base_url: str,
    specs: list[SessionSpec],
    policy: Policy,
    cfg: SimulationConfig,
    recorder: SessionRecorder | None = None,
    on_done: Callable[[SessionResult], None] | None = None,
    own_store: bool = True,
) -> tuple[list[SessionResult], float]:
    """Run `specs` against a running store in a fresh browser pool; (results, wall seconds).
    `own_store`: the store is one this run serves (a test store: orders allowed on it)."""
    runtime = cfg.runtime.own_store(base_url) if own_store else cfg.runtime

    def done(res: SessionResult) -> None:
        if recorder is not None:
            recorder.write(res, {"base_url": base_url})
        if on_done is not None:
            on_done(res)

    async def main() -> tuple[list[SessionResult], float]:
        async with BrowserPool(cfg.browser, size=cfg.concurrency) as pool:
            t0 = time.monotonic()
            results = await run_sessions(pool, specs, policy, runtime, on_done=done)
            return results, time.monotonic() - t0

    return asyncio.run(main())


def simulate_shop(
    catalog: Any,
    model: MarkovModel,
    cfg: SimulationConfig,
    out_dir: str | os.PathLike[str],
    events_lake: str | os.PathLike[str] | None = None,
    on_done: Callable[[SessionResult], None] | None = None,
) -> SimulationReport:
    """Serve `catalog` (a StoreCatalog) on loopback, run `cfg.n_sessions` Markov agents,
    record them under `<out_dir>/recordings/` and write their events into `events_lake`
    (default `<out_dir>/lake`)."""
    from simpersona.store import LakeEventSink, create_app, run_in_thread

    out = Path(out_dir)
    run_id = cfg.run_id or format(int(time.time() * 1000), "x")
    lake_root = Path(events_lake) if events_lake is not None else out / "lake"
    sink = LakeEventSink(lake_root, flush_interval_s=5.0, part_prefix="sim")
    base_url, stop = run_in_thread(create_app(catalog, sink))
    recorder = SessionRecorder(out / "recordings" / catalog.shop_id)
    try:
        specs = session_specs(model, base_url, cfg, run_id)
        results, wall = run_simulation(
            base_url, specs, MarkovPolicy(model, seed=cfg.seed), cfg, recorder, on_done
        )
    finally:
        stop()
        sink.close()
    return SimulationReport(
        results=results,
        wall_s=wall,
        recordings_dir=recorder.directory,
        events_written=sink.events_written,
        event_files=[str(p) for p in sink.written],
    )
