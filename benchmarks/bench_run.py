"""`simpersona run` on generated shops: wall time of each stage, peak memory, and a re-run.

Generates `--shops` shops with `--buyers` buyers into a fresh data dir, runs the pipeline
(ingest → features → personas, `dagster_project.pipeline.run_pipeline`, what `simpersona
run` calls) in this process, then runs it again with nothing changed: the baseline the
stage skipping is measured against. Peak resident memory is this process's (the whole run
is in-process).

    python benchmarks/bench_run.py --quick          # 2 shops, 3,000 buyers, a short codebook fit
    python benchmarks/bench_run.py --buyers 1000000 --shops 8   # the 24 GiB check

Prints a line per stage and, last, `name=value` pairs.
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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="Small shops and a short codebook fit.")
    ap.add_argument("--shops", type=int, default=None)
    ap.add_argument("--buyers", type=int, default=None, help="Buyers, all shops together.")
    ap.add_argument("--days", type=int, default=None)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--keep", action="store_true", help="Keep the data dir (printed).")
    args = ap.parse_args()
    shops = args.shops or (2 if args.quick else 6)
    buyers = args.buyers or (3_000 if args.quick else 60_000)
    days = args.days or (3 if args.quick else 14)

    work = Path(tempfile.mkdtemp(prefix="bench-run-"))
    os.environ["SIMPERSONA_DATA_DIR"] = str(work)  # before the Dagster resources load
    os.environ.setdefault("SIMPERSONA_BUYER_HASH_KEY", "bench-key")
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")
    from dagster_project.pipeline import run_pipeline
    from simpersona.synth import GeneratorConfig, generate_lake

    try:
        t0 = time.perf_counter()
        gen = generate_lake(
            work / "lake",
            GeneratorConfig(n_shops=shops, n_buyers=buyers, n_days=days, seed=args.seed),
            ground_truth_path=work / "ground_truth" / "planted_types.parquet",
            progress=False,
        )
        t_gen = time.perf_counter() - t0
        print(f"generated {shops} shops, {gen.n_buyers:,} buyers, {gen.n_events:,} events "
              f"in {t_gen:.1f} s")  # fmt: skip
        quick_fit = {"persona_codebook": {"epochs": 3, "min_steps": 150}} if args.quick else None
        t0 = time.perf_counter()
        first = run_pipeline(work, persona_config=quick_fit, say=lambda m: None, progress=False)
        t_first = time.perf_counter() - t0
        f = first.figures
        for stage in ("ingest", "features", "personas"):
            print(f"{stage}: {f.get(f'{stage}_seconds', float('nan')):.1f} s")
        t0 = time.perf_counter()
        again = run_pipeline(work, persona_config=quick_fit, say=lambda m: None, progress=False)
        t_again = time.perf_counter() - t0
        print(f"run: {t_first:.1f} s; re-run with nothing changed: {t_again:.1f} s "
              f"(skipped: {', '.join(again.skipped)})")  # fmt: skip
        peak_gib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2
        figures = {
            "shops": shops,
            "buyers": gen.n_buyers,
            "events": gen.n_events,
            "generate_s": round(t_gen, 1),
            "ingest_s": round(f.get("ingest_seconds", float("nan")), 1),
            "features_s": round(f.get("features_seconds", float("nan")), 1),
            "personas_s": round(f.get("personas_seconds", float("nan")), 1),
            "run_s": round(t_first, 1),
            "rerun_s": round(t_again, 1),
            "rerun_speedup": round(t_first / t_again, 1) if t_again else float("nan"),
            "codebook_size": f.get("codebook_size"),
            "peak_rss_gib": round(peak_gib, 2),
            "fits_24_gib": peak_gib < 24,
        }
        print(" ".join(f"{k}={v}" for k, v in figures.items()))
    finally:
        if args.keep:
            print(f"data dir kept: {work}", file=sys.stderr)
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    os.environ.setdefault("PYTHONWARNINGS", "ignore")
    main()
