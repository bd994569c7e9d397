"""Training loop of the VQ-VAE (paper §2.2): k-means++ codebook init over one full encoder pass,
Adam on the encoder / decoder / heads, EMA codebook updates after every step, dead-code
checks every `dead_check_every` steps after `dead_warmup_steps`.

    result = train_vqvae(train_vectors, train_bins, val_vectors, val_bins, VQVAEConfig())
    result.model.save("models/vqvae")          # config.json + model.pt
    result.history_frame()                     # one row per epoch, every loss term

Deterministic for a given seed, data and thread count on CPU: shuffling, dropout and resets
draw from generators seeded by `config.seed`; the caller's global torch RNG is left as it was.
"""

from __future__ import annotations

import math
import time
import warnings
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import polars as pl
import torch

from simpersona.devices import resolve_device, torch_threads
from simpersona.features.labels import HEADS, class_weights
from simpersona.personas.config import VQVAEConfig
from simpersona.personas.contrastive import funnel_signature
from simpersona.personas.losses import total_loss
from simpersona.personas.vqvae import VQVAE
from simpersona.progress import progress_bar


@dataclass
class TrainResult:
    model: VQVAE  # in eval mode, on the training device
    history: list[dict[str, float]]  # one dict per epoch: every loss term, codebook stats, val_*
    dead_log: list[dict[str, int]]  # one dict per dead-code check: step, dead, reset
    seconds: float  # wall time of train_vqvae, init pass included
    config: VQVAEConfig
    class_weights: np.ndarray  # (3 heads, 3 bins), w_i = N / (3·n_i) on the training set
    init_seconds: float = 0.0  # of which the k-means++ init pass
    extra: dict[str, Any] = field(default_factory=dict)

    def history_frame(self) -> pl.DataFrame:
        return pl.DataFrame(self.history)


def perplexity(counts: torch.Tensor | np.ndarray) -> float:
    """exp(entropy) of the code-usage distribution: K when uniform, 1 when collapsed."""
    c = torch.as_tensor(counts, dtype=torch.float64)
    p = c[c > 0] / c.sum()
    return float(torch.exp(-(p * p.log()).sum())) if p.numel() else 0.0


def _check_inputs(vectors: np.ndarray, bins: np.ndarray, dim: int, name: str) -> None:
    if vectors.ndim != 2 or vectors.shape[1] != dim:
        raise ValueError(f"{name} vectors must be (n, {dim}), got {vectors.shape}")
    if bins.shape != (vectors.shape[0], len(HEADS)):
        raise ValueError(f"{name} bins must be (n, {len(HEADS)}) ({HEADS}), got {bins.shape}")
    if bins.size and (bins.min() < 0 or bins.max() > 2):
        raise ValueError(f"{name} bins must be 0/1/2")
    if not np.isfinite(vectors).all():
        raise ValueError(f"{name} vectors contain NaN or inf")


@torch.no_grad()
def encode_all(model: VQVAE, x: torch.Tensor, batch_size: int = 8192) -> torch.Tensor:
    """(N, 403) → (N, 96) z_e with the encoder in eval mode (dropout off)."""
    was = model.training
    model.eval()
    z = torch.cat([model.encode(x[i : i + batch_size]) for i in range(0, x.shape[0], batch_size)])
    model.train(was)
    return z


def _batch_stop(n: int, batch_size: int, shuffle: bool) -> int:
    """Rows used per pass: all of them, except that a shuffled pass drops a trailing batch too
    small for the contrastive gates (< half a batch)."""
    stop = n if not shuffle or n % batch_size >= batch_size // 2 else n - n % batch_size
    return max(stop, min(n, batch_size))


def _batches(n: int, batch_size: int, gen: torch.Generator | None) -> Iterator[torch.Tensor]:
    order = torch.randperm(n, generator=gen) if gen is not None else torch.arange(n)
    for i in range(0, _batch_stop(n, batch_size, gen is not None), batch_size):
        yield order[i : i + batch_size]


class _Meter:
    """Batch-size-weighted means of the loss terms over an epoch."""

    def __init__(self) -> None:
        self.sums: dict[str, float] = defaultdict(float)
        self.weights: dict[str, float] = defaultdict(float)

    def add(self, terms: dict[str, float], n: int) -> None:
        for k, v in terms.items():
            self.sums[k] += v * n
            self.weights[k] += n

    def means(self, prefix: str = "") -> dict[str, float]:
        return {prefix + k: self.sums[k] / self.weights[k] for k in self.sums}


def epochs_for(n: int, cfg: VQVAEConfig) -> int:
    """Epochs to run on n training vectors: `cfg.epochs`, raised so that training makes at
    least `cfg.min_steps` optimiser steps (a small set would otherwise get few steps and few
    dead-code checks)."""
    per_epoch = math.ceil(_batch_stop(n, cfg.batch_size, shuffle=True) / cfg.batch_size)
    return max(cfg.epochs, math.ceil(cfg.min_steps / max(per_epoch, 1)))


def _signatures(sig: np.ndarray | None, n: int, cfg: VQVAEConfig, name: str) -> torch.Tensor | None:
    """Gate-1 signatures: None for "masks" (read from each batch's vectors), else the caller's
    per-buyer levels. "counts" cannot be derived here: the vector holds robust-z scalars, not
    counts (`contrastive.signature_from_counts`)."""
    if cfg.signature_source == "masks":
        return None
    src = cfg.signature_source
    if sig is None or len(sig) != n:
        how = " (signature_from_strata or signature_from_counts)" if src == "counts" else ""
        raise ValueError(f"signature_source={src!r} needs {name} signatures{how}, one per vector")
    out = torch.as_tensor(np.asarray(sig), dtype=torch.long)
    if out.numel() and (int(out.min()) < 0 or int(out.max()) > 3):
        raise ValueError(f"{name} signatures must be funnel levels 0–3")
    return out


@torch.no_grad()
def evaluate(
    model: VQVAE,
    x: torch.Tensor,
    bins: torch.Tensor,
    cfg: VQVAEConfig,
    signature: torch.Tensor | None = None,
) -> dict[str, float]:
    """Loss terms, head accuracies, perplexity and used codes on a set, eval mode, no EMA."""
    was = model.training
    model.eval()
    meter, counts = _Meter(), torch.zeros(cfg.codebook_size, device=x.device)
    for idx in _batches(x.shape[0], cfg.batch_size, None):
        xb, yb = x[idx], bins[idx]
        sb = funnel_signature(xb) if signature is None else signature[idx]
        out = model(xb)
        _, terms = total_loss(out, xb, yb, sb, model.class_weights, cfg)
        for j, h in enumerate(HEADS):
            terms[f"acc_{h}"] = float((out.logits[h].argmax(1) == yb[:, j]).float().mean())
        meter.add(terms, len(idx))
        counts += torch.bincount(out.idx, minlength=cfg.codebook_size)
    model.train(was)
    stats = meter.means()
    stats["perplexity"] = perplexity(counts.cpu())
    stats["used_codes"] = int((counts > 0).sum())
    return stats


def train_vqvae(
    train_vectors: np.ndarray,
    bins: np.ndarray,
    val_vectors: np.ndarray | None = None,
    val_bins: np.ndarray | None = None,
    config: VQVAEConfig | None = None,
    *,
    signatures: np.ndarray | None = None,
    val_signatures: np.ndarray | None = None,
    progress: bool = True,
) -> TrainResult:
    """Train the VQ-VAE on (n, 403) float32 vectors with (n, 3) int bins (columns: engagement,
    exploration, purchase; 0 Low, 1 Medium, 2 High). `signatures` (n,) ints 0–3 are needed
    only with `config.signature_source` "counts" (the paper preset: `signature_from_strata`
    of the rows' strata, or `signature_from_counts`) or "given"."""
    cfg = config or VQVAEConfig()
    t0 = time.perf_counter()
    train_vectors = np.ascontiguousarray(train_vectors, dtype=np.float32)
    bins = np.asarray(bins)
    _check_inputs(train_vectors, bins, cfg.input_dim, "train")
    has_val = val_vectors is not None
    if has_val:
        if val_bins is None:
            raise ValueError("val_vectors given without val_bins")
        val_vectors = np.ascontiguousarray(val_vectors, dtype=np.float32)
        val_bins = np.asarray(val_bins)
        _check_inputs(val_vectors, val_bins, cfg.input_dim, "val")
    n = train_vectors.shape[0]
    if n < 2:
        raise ValueError("need at least 2 training vectors")
    device = resolve_device(cfg.device)
    weights = np.stack([class_weights(bins[:, j]) for j in range(len(HEADS))])  # (3, 3)

    fork_devices = [device.index or 0] if device.type == "cuda" else []
    with torch_threads(cfg.num_threads), torch.random.fork_rng(devices=fork_devices):
        torch.manual_seed(cfg.seed)  # model init and dropout (global RNG, restored after)
        gen = torch.Generator().manual_seed(cfg.seed)  # shuffling and dead-code resets
        x = torch.from_numpy(train_vectors).to(device)
        y = torch.as_tensor(bins, dtype=torch.long, device=device)
        sig = _signatures(signatures, n, cfg, "train")
        sig = sig.to(device) if sig is not None else None
        if has_val:
            xv = torch.from_numpy(val_vectors).to(device)
            yv = torch.as_tensor(val_bins, dtype=torch.long, device=device)
            sv = _signatures(val_signatures, xv.shape[0], cfg, "val")
            sv = sv.to(device) if sv is not None else None

        model = VQVAE(cfg).to(device)
        model.class_weights.copy_(torch.as_tensor(weights, dtype=torch.float32))
        model.codebook.init_kmeanspp(encode_all(model, x), cfg.seed, cfg.batch_size)
        init_seconds = time.perf_counter() - t0
        opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)

        history: list[dict[str, float]] = []
        dead_log: list[dict[str, int]] = []
        step = 0
        epochs = epochs_for(n, cfg)
        with progress_bar(epochs, "vqvae", unit="epochs", enabled=progress) as bar:
            for epoch in range(epochs):
                model.train()
                meter = _Meter()
                counts = torch.zeros(cfg.codebook_size, device=device)
                resets = 0
                for idx in _batches(n, cfg.batch_size, gen):
                    idx = idx.to(device)
                    xb, yb = x[idx], y[idx]
                    sb = funnel_signature(xb) if sig is None else sig[idx]
                    out = model(xb)
                    loss, terms = total_loss(out, xb, yb, sb, model.class_weights, cfg)
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    if cfg.grad_clip > 0:
                        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
                    opt.step()
                    counts += model.codebook.ema_update(out.z_e, out.idx)
                    step += 1
                    if step >= cfg.dead_warmup_steps and step % cfg.dead_check_every == 0:
                        n_dead = int(model.codebook.dead_codes().sum())
                        n_reset = model.codebook.reset_dead(out.z_e, out.idx, gen)
                        dead_log.append({"step": step, "dead": n_dead, "reset": n_reset})
                        resets += n_reset
                    meter.add(terms, len(idx))
                row: dict[str, float] = {"epoch": epoch + 1, "step": step, **meter.means()}
                row["perplexity"] = perplexity(counts.cpu())
                row["used_codes"] = int((counts > 0).sum())
                row["dead_codes"] = int(model.codebook.dead_codes().sum())
                row["resets"] = resets
                if has_val:
                    row |= {f"val_{k}": v for k, v in evaluate(model, xv, yv, cfg, sv).items()}
                row["seconds"] = time.perf_counter() - t0
                history.append(row)
                bar.note(
                    loss=f"{row['loss']:.3f}",
                    ppl=f"{row['perplexity']:.0f}",
                    dead=row["dead_codes"],
                    **({"val": f"{row['val_loss']:.3f}"} if has_val else {}),
                )
                bar.advance()
        model.eval()
    seconds = time.perf_counter() - t0
    if any(not math.isfinite(r["loss"]) for r in history):
        warnings.warn("non-finite training loss", stacklevel=2)
    return TrainResult(
        model=model,
        history=history,
        dead_log=dead_log,
        seconds=seconds,
        config=cfg,
        class_weights=weights,
        init_seconds=init_seconds,
        extra={"epochs": epochs, "steps": step},
    )
