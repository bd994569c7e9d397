"""Benchmark of the synthetic clickstream generator (`simpersona generate`).

    python benchmarks/bench_generate.py --quick   # 50 K buyers per profile, a few seconds
    python benchmarks/bench_generate.py           # 1 M buyers, dense profile (~20 M events)

Runs in one process: a small dense baseline (10 K buyers), the default (Puffy-calibrated,
sparse) profile, then the main run with the dense profile (~20 events per buyer). Prints
throughput and the ratio of the main run's events/s to the baseline's (1.0 = perfectly
linear scaling). Target of the full run: <= 120 s and < 4 GB peak RSS on 2 cores. The last
line is exactly `buyers=… events=… seconds=… peak_rss_mb=…` for the main run (peak RSS of
the whole process, via getrusage).
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from simpersona.synth import GeneratorConfig, generate_lake  # noqa: E402

TARGET_SECONDS = 120.0
TARGET_RSS_MB = 4096.0


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # KiB on Linux


def run(label: str, root: Path, config: GeneratorConfig) -> dict[str, float]:
    lake = root / label / "lake"
    t0 = time.perf_counter()
    res = generate_lake(lake, config, root / label / "truth.parquet", progress=False)
    seconds = time.perf_counter() - t0
    size_mb = sum(p.stat().st_size for p in lake.rglob("*.parquet")) / 2**20
    out = {
        "buyers": res.n_buyers,
        "events": res.n_events,
        "seconds": seconds,
        "buyers_per_s": res.n_buyers / seconds,
        "events_per_s": res.n_events / seconds,
        "peak_rss_mb": peak_rss_mb(),
        "lake_mb": size_mb,
    }
    print(
        f"{label:<10} profile={config.profile:<5} buyers={res.n_buyers:>9,} "
        f"events={res.n_events:>11,} ({res.n_events / max(res.n_buyers, 1):5.2f}/buyer) "
        f"seconds={seconds:7.2f} buyers/s={out['buyers_per_s']:>9,.0f} "
        f"events/s={out['events_per_s']:>10,.0f} lake={size_mb:7.1f} MB "
        f"peak_rss_mb={out['peak_rss_mb']:.0f}",
        flush=True,
    )
    shutil.rmtree(root / label, ignore_errors=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="50 K buyers instead of 1 M")
    ap.add_argument("--buyers", type=int, help="buyers of the main run (overrides the mode)")
    ap.add_argument("--shops", type=int, default=4, help="number of shops")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, help="scratch folder (default: a temporary one)")
    args = ap.parse_args()
    n = args.buyers or (50_000 if args.quick else 1_000_000)
    root = Path(tempfile.mkdtemp(prefix="bench-generate-", dir=args.out))
    print(f"cpus={os.cpu_count()} main run: {n:,} buyers, {args.shops} shops, scratch {root}")
    try:
        base = run("baseline", root, GeneratorConfig(n_buyers=10_000, profile="dense", seed=1))
        sparse = run(
            "default", root, GeneratorConfig(n_buyers=n, n_shops=args.shops, seed=args.seed)
        )
        dense = run(
            "dense",
            root,
            GeneratorConfig(n_buyers=n, n_shops=args.shops, seed=args.seed, profile="dense"),
        )
    finally:
        shutil.rmtree(root, ignore_errors=True)
    print(
        f"scaling: dense events/s = {dense['events_per_s'] / base['events_per_s']:.2f}x the "
        f"10 K-buyer baseline; default-profile buyers/s = "
        f"{sparse['buyers_per_s'] / dense['buyers_per_s']:.2f}x dense"
    )
    if not args.quick and args.buyers is None:
        ok_t = dense["seconds"] <= TARGET_SECONDS
        ok_m = dense["peak_rss_mb"] < TARGET_RSS_MB
        print(
            f"target: <= {TARGET_SECONDS:.0f} s {'OK' if ok_t else 'MISSED'}, "
            f"< {TARGET_RSS_MB:.0f} MB peak RSS {'OK' if ok_m else 'MISSED'}"
        )
    print(
        f"buyers={dense['buyers']} events={dense['events']} "
        f"seconds={dense['seconds']:.2f} peak_rss_mb={dense['peak_rss_mb']:.0f}"
    )


if __name__ == "__main__":
    main()
