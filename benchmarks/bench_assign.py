"""Benchmark of persona-token assignment (simpersona/personas/assign.py), paper App. B.

    python benchmarks/bench_assign.py --quick     # 500 K buyers, < 1 min
    python benchmarks/bench_assign.py             # 10 M buyers (paper: 8.37 M "in seconds")
    python benchmarks/bench_assign.py --train     # first train on 44,559 synthetic vectors
                                                  # (the paper's training-set size, 85/15 split)

Buyer vectors are random float32 403-d rows made chunk by chunk (`--chunk` rows at a time), so
10 M × 403 (16 GB) is never held: a pool of standard-normal rows is drawn once and every chunk
is an affine copy of it with fresh per-column scale and shift and fresh 0/1 mask columns
(drawing 4 G normals would take longer than the assignment itself). The assignment streams
the chunks through `assign_tokens` and keeps every token (int64, 80 MB at 10 M).

buyers/s = buyers / seconds spent in assignment (chunk generation excluded; the end-to-end
rate is printed too). Peak RSS is the process's maximum resident set (ru_maxrss), imports
included. Targets on 2 CPU cores: ≥ 150 K buyers/s, < 4 GiB. On CUDA, when available, the
same run is repeated there. The model is untrained unless --train or --model (the cost of an
encoder pass does not depend on the weights); its codebook is k-means++-seeded either way.
The last line is exactly `buyers=… buyers_per_s=… peak_rss_mb=…` (CPU figures).
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from simpersona.features.vectors import CHANNEL_SLICES, MASK_SLICE  # noqa: E402
from simpersona.personas import VQVAE, VQVAEConfig, assign_tokens, train_vqvae  # noqa: E402
from simpersona.personas.assign import DEFAULT_BATCH  # noqa: E402
from simpersona.personas.train import encode_all  # noqa: E402

PAPER_TRAIN_SET = 44_559  # §3.1: buyer–shop pairs from 39 shops


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def synthetic_training_set(n: int, n_types: int = 64, seed: int = 0):
    """Paper-sized buyer vectors with structure: `n_types` behaviour types, each with a
    scalar centre, channel directions and a funnel level drawn like strata A–D; bins from
    the types. Returns (vectors (n, 403) float32, bins (n, 3), types (n,))."""
    rng = np.random.default_rng(seed)
    types = rng.integers(0, n_types, n)
    level = rng.choice(4, n_types, p=[0.1, 0.4, 0.3, 0.2])  # none / view / cart / purchase
    masks = np.stack([level >= 1, level >= 2, level >= 3], 1).astype(np.float32)[types]
    x = np.zeros((n, 403), np.float32)
    centers = rng.normal(0, 1.0, (n_types, 16))
    x[:, :16] = centers[types] + 0.5 * rng.normal(size=(n, 16))
    for c, sl in enumerate(CHANNEL_SLICES.values()):
        dirs = rng.normal(0, 1, (n_types, 128)) * np.linspace(3, 0.1, 128)  # PCA-like decay
        obs = masks[:, c] > 0
        noise = rng.normal(size=(int(obs.sum()), 128)) * np.linspace(2, 0.1, 128)
        x[obs, sl] = dirs[types[obs]] + noise
    x[:, MASK_SLICE] = masks
    bins = np.stack([types % 3, (types // 3) % 3, np.minimum(level[types], 2)], 1)
    return x, bins.astype(np.int64), types


class ChunkSource:
    """`total` random buyer vectors in chunks of `chunk` rows, timing its own work."""

    def __init__(self, total: int, chunk: int, seed: int = 0):
        self.total, self.chunk = total, chunk
        self.rng = np.random.default_rng(seed)
        t = time.perf_counter()
        self.pool = self.rng.standard_normal((min(chunk, total), 403), dtype=np.float32)
        self.buf = np.empty_like(self.pool)
        self.gen_seconds = time.perf_counter() - t

    def __iter__(self) -> Iterator[np.ndarray]:
        done = 0
        while done < self.total:
            t = time.perf_counter()
            n = min(self.chunk, self.total - done)
            scale = self.rng.uniform(0.5, 1.5, 403).astype(np.float32)
            shift = self.rng.normal(0, 0.5, 403).astype(np.float32)
            out = self.buf[:n]
            np.multiply(self.pool[:n], scale, out=out)
            out += shift
            out[:, MASK_SLICE] = self.rng.integers(0, 2, (n, 3))
            self.gen_seconds += time.perf_counter() - t
            done += n
            yield out


def run(model: VQVAE, args: argparse.Namespace, device: str) -> tuple[float, float, int]:
    source = ChunkSource(args.buyers, args.chunk, seed=1)
    assign_tokens(model, source.pool[: args.batch], args.batch, device=device)  # warm-up
    source.gen_seconds = 0.0
    if device == "cuda":
        torch.cuda.synchronize()
    t = time.perf_counter()
    tokens = assign_tokens(
        model, source, args.batch, device=device, num_threads=args.threads or None
    )
    total = time.perf_counter() - t
    assign_s = total - source.gen_seconds
    used = int(np.unique(tokens).size)
    print(
        f"device={device} threads={torch.get_num_threads() if not args.threads else args.threads}"
        f" batch={args.batch} chunk={args.chunk} buyers={tokens.size:,} "
        f"assign_s={assign_s:.2f} gen_s={source.gen_seconds:.2f} "
        f"buyers_per_s={tokens.size / assign_s:,.0f} "
        f"end_to_end_per_s={tokens.size / total:,.0f} used_codes={used}",
        flush=True,
    )
    return tokens.size / assign_s, total, tokens.size


def make_model(args: argparse.Namespace) -> VQVAE:
    if args.model:
        return VQVAE.load(args.model)
    if args.train:
        x, bins, types = synthetic_training_set(PAPER_TRAIN_SET)
        n_train = int(0.85 * len(x))
        cfg = VQVAEConfig(num_threads=args.train_threads)
        print(f"training on {n_train:,} × 403 (+ {len(x) - n_train:,} validation), "
              f"{cfg.epochs} epochs, batch {cfg.batch_size}, {cfg.num_threads} thread(s)")  # fmt: skip
        r = train_vqvae(x[:n_train], bins[:n_train], x[n_train:], bins[n_train:], cfg)
        last = r.history[-1]
        keys = ("loss", "recon", "commit", "contrastive", "aux", "perplexity", "dead_codes")
        for h in r.history:
            if h["epoch"] in (1, 2, 5) or h["epoch"] % 10 == 0:
                print(f"  epoch {h['epoch']:3d} " + " ".join(f"{k}={h[k]:.3f}" for k in keys)
                      + f" val_loss={h['val_loss']:.3f} t={h['seconds']:.0f}s")  # fmt: skip
        tok = assign_tokens(r.model, x[n_train:])
        pur = sum(np.bincount(types[n_train:][tok == k]).max() for k in np.unique(tok))
        print(
            f"train_seconds={r.seconds:.1f} init_seconds={r.init_seconds:.1f} "
            f"steps={last['step']} loss={last['loss']:.3f} val_loss={last['val_loss']:.3f} "
            f"perplexity={last['perplexity']:.1f} used_codes={last['used_codes']} "
            f"dead_codes={last['dead_codes']} resets={sum(h['resets'] for h in r.history)} "
            f"val_type_purity={pur / len(tok):.3f}",
            flush=True,
        )
        path = Path(tempfile.mkdtemp(prefix="vqvae-bench-"))
        r.model.save(path)
        print(f"model saved to {path}")
        return r.model
    torch.manual_seed(0)
    model = VQVAE(VQVAEConfig()).eval()
    z = encode_all(model, torch.randn(20_000, 403))
    model.codebook.init_kmeanspp(z, seed=0, batch_size=512)
    return model


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--quick", action="store_true", help="500 K buyers instead of 10 M")
    p.add_argument("--buyers", type=int, default=None)
    p.add_argument("--chunk", type=int, default=131_072, help="rows per generated chunk")
    p.add_argument("--batch", type=int, default=None, help="rows per encoder pass (default:"
                   f" {DEFAULT_BATCH['cpu']:,} on CPU, {DEFAULT_BATCH['cuda']:,} on CUDA)")  # fmt: skip
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch default)")
    p.add_argument("--model", type=str, default=None, help="a saved model folder")
    p.add_argument("--train", action="store_true", help="train on the paper-sized set first")
    p.add_argument("--train-threads", type=int, default=1)
    p.add_argument("--no-cuda", action="store_true")
    args = p.parse_args()
    args.buyers = args.buyers or (500_000 if args.quick else 10_000_000)
    print(f"cores={os.cpu_count()} torch={torch.__version__} threads={torch.get_num_threads()}")

    model = make_model(args)
    rss_before = peak_rss_mb()
    cpu_args = argparse.Namespace(**{**vars(args), "batch": args.batch or DEFAULT_BATCH["cpu"]})
    rate, _, n = run(model, cpu_args, "cpu")
    rss = peak_rss_mb()
    print(f"peak_rss_mb before assignment={rss_before:.0f}, after={rss:.0f}")
    if torch.cuda.is_available() and not args.no_cuda:
        batch = args.batch or DEFAULT_BATCH["cuda"]
        cuda_args = argparse.Namespace(**{**vars(args), "batch": batch})
        cuda_rate, _, _ = run(model, cuda_args, "cuda")
        print(f"cuda buyers_per_s={cuda_rate:,.0f} ({torch.cuda.get_device_name()})")
    print(f"buyers={n} buyers_per_s={rate:.0f} peak_rss_mb={rss:.0f}")


if __name__ == "__main__":
    main()
