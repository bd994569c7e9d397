"""Fit the persona codebook (paper §2.2): the behaviour-aware VQ-VAE on the training split and
the MiniBatch k-means baseline on the same vectors, content-hashed and written as one folder.

    <folder>/vqvae/…        the VQ-VAE (config.json, model.pt)
    <folder>/kmeans.npz     the k-means baseline
    <folder>/history.csv    per-epoch losses
    <folder>/meta.json      what was trained on, how, and the final figures
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import polars as pl

from simpersona.lake import atomic_write_text
from simpersona.personas.config import VQVAEConfig
from simpersona.personas.sizing import sizing_warnings

if TYPE_CHECKING:  # torch and scikit-learn load only when a codebook is fitted
    from simpersona.personas.kmeans_baseline import KMeansBaseline
    from simpersona.personas.train import TrainResult

HISTORY_COLUMNS = (
    "epoch", "loss", "recon", "commit", "contrastive", "aux", "perplexity", "dead_codes",
    "val_loss",
)  # fmt: skip


def finite_numbers(d: dict[str, Any]) -> dict[str, float | int]:
    """Numbers only, NaN/inf dropped, floats rounded to 6 places (what metadata and metric
    stores accept)."""
    out: dict[str, float | int] = {}
    for k, v in d.items():
        if isinstance(v, bool) or not isinstance(v, int | float | np.integer | np.floating):
            continue
        if isinstance(v, float | np.floating) and not np.isfinite(v):
            continue
        out[k] = int(v) if isinstance(v, int | np.integer) else round(float(v), 6)
    return out


@dataclass(frozen=True)
class KMeansParams:
    """The k-means baseline's settings (the asset's config; k defaults to the codebook's K)."""

    k: int
    seed: int = 0
    batch_size: int = 2048
    n_init: int = 3
    max_iter: int = 30


@dataclass
class CodebookFit:
    """A trained VQ-VAE and k-means baseline, and what they were trained on."""

    result: TrainResult
    kmeans: KMeansBaseline
    kmeans_seconds: float
    config: VQVAEConfig
    train_rows: int
    val_rows: int
    version: str = ""
    warnings: list[str] = field(default_factory=list)

    @property
    def last(self) -> dict[str, Any]:
        return self.result.history[-1] if self.result.history else {}

    def figures(self) -> dict[str, float | int]:
        """The fit's headline numbers (finite ones)."""
        last, km = self.last, self.kmeans
        figures = {
            "train_rows": self.train_rows,
            "val_rows": self.val_rows,
            "training_seconds": round(self.result.seconds, 2),
            "init_seconds": round(self.result.init_seconds, 2),
            "kmeans_seconds": round(self.kmeans_seconds, 2),
            "epochs_run": len(self.result.history),  # raised above `epochs` for `min_steps`
            "train_steps": last.get("step"),
            "final_loss": last.get("loss"),
            "final_val_loss": last.get("val_loss"),
            "perplexity": last.get("perplexity"),
            "dead_codes": last.get("dead_codes"),
            "used_codes": last.get("used_codes"),
            "val_perplexity": last.get("val_perplexity"),
            "kmeans_k": km.k,
            "kmeans_inertia": km.inertia,
            "codebook_size": self.config.codebook_size,
        }
        return finite_numbers({k: v for k, v in figures.items() if v is not None})

    def log_history(self, run: Any) -> None:
        """Per-epoch losses as metric histories of a tracking run (simpersona.tracking)."""
        for row in self.result.history:
            run.log_metrics(
                {k: v for k, v in row.items() if k not in ("epoch", "step")},
                step=int(row["epoch"]),
            )

    def history_tail(self, rows: int = 10) -> pl.DataFrame:
        history = self.result.history_frame()
        return history.select([c for c in HISTORY_COLUMNS if c in history.columns]).tail(rows)


def content_version(model: Any, centers: np.ndarray) -> str:
    """Hash of the trained weights (codebook included) and the k-means centres."""
    h = hashlib.sha256()
    for k, v in sorted(model.state_dict().items()):
        h.update(k.encode())
        h.update(v.detach().cpu().contiguous().numpy().tobytes())
    h.update(np.ascontiguousarray(centers).tobytes())
    return h.hexdigest()[:12]


def fit_codebook(
    train: pl.DataFrame, val: pl.DataFrame, cfg: VQVAEConfig, kmeans: KMeansParams
) -> CodebookFit:
    """Train the VQ-VAE on `train` (validated on `val` when it has rows) and the k-means
    baseline on the same vectors. Rows: vector, stratum and the label bins."""
    from simpersona.personas.contrastive import gate1_signatures
    from simpersona.personas.kmeans_baseline import fit_kmeans
    from simpersona.personas.quality import bins_matrix, vector_matrix
    from simpersona.personas.train import train_vqvae

    x, bins = vector_matrix(train["vector"]), bins_matrix(train)
    has_val = val.height > 0
    xv, bv = (vector_matrix(val["vector"]), bins_matrix(val)) if has_val else (None, None)
    result = train_vqvae(
        x,
        bins,
        xv,
        bv,
        cfg,
        # gate-1 levels from the strata (the count cascade) unless read from the vectors' masks
        signatures=gate1_signatures(cfg, train["stratum"].to_numpy()),
        val_signatures=gate1_signatures(cfg, val["stratum"].to_numpy()) if has_val else None,
        progress=False,
    )
    t0 = time.perf_counter()
    km = fit_kmeans(
        x,
        k=kmeans.k,
        seed=kmeans.seed,
        batch_size=kmeans.batch_size,
        n_init=kmeans.n_init,
        max_iter=kmeans.max_iter,
    )
    fit = CodebookFit(
        result, km, time.perf_counter() - t0, cfg, train.height, val.height
    )  # fmt: skip
    result.model = result.model.cpu()
    fit.version = content_version(result.model, km.centers)
    last = fit.last
    fit.warnings = sizing_warnings(
        train.height, cfg.codebook_size, last.get("recon"), last.get("val_recon")
    )
    return fit


def codebook_files(folder: Path) -> list[tuple[Path, str]]:
    """A saved codebook's files and the folder each goes to in a tracking run."""
    return [
        *((folder / f, "persona_codebook/vqvae") for f in ("vqvae/config.json", "vqvae/model.pt")),
        *((folder / f, "persona_codebook") for f in ("kmeans.npz", "history.csv", "meta.json")),
    ]


def save_codebook(fit: CodebookFit, folder: Path, meta: dict[str, Any]) -> dict[str, Any]:
    """Write the fit into `folder` (see the module's docstring); `meta` adds what the caller
    knows (training shops, feature transform, sizing rule). Returns meta.json's content."""
    km, last = fit.kmeans, fit.last
    fit.result.model.save(folder / "vqvae")
    km.save(folder / "kmeans.npz")
    fit.result.history_frame().write_csv(folder / "history.csv")
    full = {
        "version": fit.version,
        "train_rows": fit.train_rows,
        "val_rows": fit.val_rows,
        **meta,
        "warnings": fit.warnings,
        "training_seconds": round(fit.result.seconds, 2),
        "init_seconds": round(fit.result.init_seconds, 2),
        "kmeans_seconds": round(fit.kmeans_seconds, 2),
        "kmeans": {"k": km.k, "inertia": km.inertia, "note": km.note, **km.params},
        "final": finite_numbers(last),
    }
    atomic_write_text(json.dumps(full, indent=2, default=str), folder / "meta.json")
    return full
