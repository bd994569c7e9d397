"""Benchmark of simulated shopping: persona Markov agents in headless Chromium on the local
storefront (`simpersona simulate`).

    python benchmarks/bench_simulate.py --quick   # 8 sessions, under a minute
    python benchmarks/bench_simulate.py           # 60 sessions

A one-shop lake is generated (2,000 buyers), a Markov policy is fitted on its events with the
strata as labels, and its `end` transitions are removed so sessions take `--steps` actions
(10) and end at the step limit (one whose target state cannot be reached from its page may
give up earlier; mean_steps is printed): sessions/min is then the rate of ten-step sessions.
The storefront runs in-process on loopback (logging to a temporary lake), the browser pool
runs `--concurrency` sessions at once, and the process is pinned to `--cores` CPUs (2) when
the machine has more. Wall time starts after the browser has launched. action_ms_p50 is the
median time from starting an action to having the next page's observation. CPU seconds per
session give the rate the run would reach on otherwise idle cores, for machines shared with
other work (the process tree's CPU misses Chromium's zygote-forked renderers, so that rate
is an upper bound; the pinned cores' busy time is exact when nothing else runs on them).
The browser is Debian's chromium-headless-shell when installed (about twice the rate of the
full chromium; `--chromium /usr/bin/chromium` to compare). Target on 2 cores: at least 60
ten-step sessions per minute. The last line is exactly `sessions=… sessions_per_min=… action_ms_p50=…`.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import resource
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from simpersona.agent.browser import BrowserConfig, default_chromium  # noqa: E402
from simpersona.agent.cli import load_shop_events  # noqa: E402
from simpersona.agent.markov import MarkovModel  # noqa: E402
from simpersona.agent.session import RuntimeConfig  # noqa: E402
from simpersona.agent.simulate import (  # noqa: E402
    SimulationConfig,
    fit_shop_markov,
    simulate_shop,
)
from simpersona.store import StoreCatalog  # noqa: E402
from simpersona.synth import GeneratorConfig, generate_lake  # noqa: E402

TARGET_SESSIONS_PER_MIN = 60.0
SHOP = "shop-000"


def busy_core_seconds(cpus: list[int]) -> float | None:
    """Busy time of the given cores from /proc/stat (everything that ran on them: this run,
    Chromium's zygote-forked renderers included, and any other work); None off Linux."""
    try:
        lines = Path("/proc/stat").read_text().splitlines()
    except OSError:
        return None
    busy = 0
    for line in lines:
        name, *vals = line.split()
        if name.startswith("cpu") and name[3:].isdigit() and int(name[3:]) in cpus:
            ticks = [int(v) for v in vals]
            busy += sum(ticks) - ticks[3] - ticks[4]  # all but idle and iowait
    return busy / os.sysconf("SC_CLK_TCK")


def cpu_seconds() -> float:
    """User + system CPU of this process and its waited-for descendants (the Playwright
    driver and Chromium count once the pool has shut down). A lower bound: renderers that
    Chromium's zygote forks are not waited for by their parent chain and do not count."""
    me, kids = (
        resource.getrusage(resource.RUSAGE_SELF),
        resource.getrusage(resource.RUSAGE_CHILDREN),
    )
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def never_ending(model: MarkovModel) -> MarkovModel:
    """The same chains without the `end` state, so sessions run to the step limit."""

    def strip(trans: dict[str, dict[str, float]]) -> dict[str, dict[str, float]]:
        out = {}
        for s, row in trans.items():
            kept = {t: p for t, p in row.items() if t != "end"}
            total = sum(kept.values())
            out[s] = {t: p / total for t, p in kept.items()} if total else {"product": 1.0}
        return out

    labels = {
        k: dataclasses.replace(m, transitions=strip(m.transitions)) for k, m in model.labels.items()
    }
    overall = dataclasses.replace(model.overall, transitions=strip(model.overall.transitions))
    return MarkovModel(labels, overall, model.label_shares, model.config)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--quick", action="store_true", help="8 sessions instead of 60")
    p.add_argument("--sessions", type=int, default=None)
    p.add_argument("--steps", type=int, default=10, help="actions per session")
    p.add_argument("--concurrency", type=int, default=4, help="browser sessions at once")
    p.add_argument("--cores", type=int, default=2, help="pin to this many CPUs (0: no pinning)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--chromium-arg", action="append", default=[], help="extra Chromium flag")
    p.add_argument("--no-reuse", action="store_true", help="a fresh context per session")
    p.add_argument(
        "--chromium",
        default=None,
        help="browser binary (default: chromium-headless-shell when installed, else chromium)",
    )
    p.add_argument(
        "--intercept-local",
        action="store_true",
        help="route every request through Playwright (the remote-store path; slower)",
    )
    args = p.parse_args()
    n = args.sessions or (8 if args.quick else 60)
    if args.cores and hasattr(os, "sched_setaffinity"):
        cpus = sorted(os.sched_getaffinity(0))
        if len(cpus) > args.cores:
            os.sched_setaffinity(0, cpus[: args.cores])  # children (Chromium) inherit it
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"cores={cores} load_avg_1min={load:.1f} sessions={n} steps={args.steps} "
          f"concurrency={args.concurrency} browser={args.chromium or default_chromium()}",
          flush=True)  # fmt: skip

    with tempfile.TemporaryDirectory(prefix="bench-simulate-") as tmp:
        root = Path(tmp)
        lake = root / "lake"
        generate_lake(
            lake,
            GeneratorConfig(n_shops=1, n_buyers=2000, seed=args.seed),
            ground_truth_path=root / "truth.parquet",
            progress=False,
        )
        catalog = StoreCatalog.from_lake(lake, SHOP)
        events = load_shop_events(SHOP, lake, None)
        model = never_ending(fit_shop_markov(events))
        print(f"fitted on {events.height:,} events, labels={sorted(model.labels)}", flush=True)
        cfg = SimulationConfig(
            n_sessions=n,
            concurrency=args.concurrency,
            seed=args.seed,
            runtime=RuntimeConfig(max_steps=args.steps, session_timeout_s=600.0),
            browser=BrowserConfig(
                executable_path=args.chromium or default_chromium(),
                extra_args=tuple(args.chromium_arg),
                reuse_contexts=not args.no_reuse,
                intercept_local=args.intercept_local,
            ),
        )
        pinned = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
        cpu0, busy0 = cpu_seconds(), busy_core_seconds(pinned)
        report = simulate_shop(catalog, model, cfg, root / "out")
        cpu_s = cpu_seconds() - cpu0
        busy1 = busy_core_seconds(pinned)
        busy_s = busy1 - busy0 if busy0 is not None and busy1 is not None else float("nan")
    s = report.summary()
    steps = [r.steps for r in report.results]
    ms = report.action_ms
    print(
        f"wall_s={report.wall_s:.1f} outcomes={s['outcomes']} mean_steps={statistics.fmean(steps):.1f} "
        f"events={report.events_written} action_ms_p90={statistics.quantiles(ms, n=10)[-1]:.0f} "
        f"target_sessions_per_min={TARGET_SESSIONS_PER_MIN:.0f}",
        flush=True,
    )
    # CPU time of the run (this process, the storefront thread, the Playwright driver and
    # Chromium, browser start-up included), two ways: the process tree's (misses renderers;
    # a lower bound, so its idle-core rate is an upper bound) and the pinned cores' busy time
    # (exact when nothing else runs on them; other work inflates it).
    n_done = max(1, len(report.results))
    per_session = cpu_s / n_done
    print(
        f"cpu_s={cpu_s:.1f} cpu_s_per_session={per_session:.2f} "
        f"upper_bound_sessions_per_min_on_{cores}_idle_cores={cores * 60 / per_session:.1f} "
        f"busy_core_s={busy_s:.1f} busy_core_s_per_session={busy_s / n_done:.2f} "
        f"utilisation={busy_s / (cores * report.wall_s):.2f}",
        flush=True,
    )
    print(
        f"sessions={len(report.results)} sessions_per_min={s['sessions_per_min']:.1f} "
        f"action_ms_p50={s['action_ms_p50']:.0f}"
    )


if __name__ == "__main__":
    main()
