"""VQ-VAE hyperparameters (paper §2.2, App. C, D). Defaults are the paper's values
where it gives one; the rest (dropout, σ of the reset noise, optimiser, epochs and the step
floor, batch size) are ours and say so.

Three defaults are ours where the paper's text reads otherwise; `VQVAEConfig.paper()` (preset
"paper") takes the paper's reading of all three: the gate-1 funnel signature from the
interaction counts instead of the input masks, the commitment loss as the squared norm over
the latent dims instead of their mean, and no mask group in the reconstruction. Measured side
by side in docs/vqvae.md ("Paper preset vs ours")."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Literal

from simpersona.features.scalars import SCALAR_NAMES

# Behavioural features of contrastive gate 3 (paper §2.2: product views, search sessions,
# collection views, session duration), as indices into the 16 scalars.
GATE3_FEATURES: tuple[str, ...] = (
    "total_product_views",
    "search_sessions",
    "collection_view_sessions",
    "total_duration_s",
)
GATE3_INDICES: tuple[int, ...] = tuple(SCALAR_NAMES.index(n) for n in GATE3_FEATURES)

# Named presets (`VQVAEConfig.preset`): "default" is ours, "paper" the fields below changed to
# the paper's literal reading (§2.2); every other field is shared.
PRESETS: tuple[str, ...] = ("default", "paper")
PAPER_CHOICES: dict[str, Any] = {
    "signature_source": "counts",  # gate 1 from interaction counts (purchase > cart > view)
    "commitment": "squared_norm",  # L_commit = ||z_e − sg(z_q)||², summed over latent dims
    "mask_loss": "none",  # L_recon: the four groups (scalars, three channels) only
}


@dataclass
class VQVAEConfig:
    # --- architecture (App. C) ---
    input_dim: int = 403
    hidden_dims: tuple[int, ...] = (256, 128)  # encoder 403 → 256 → 128 → 96, decoder mirrored
    latent_dim: int = 96
    dropout: float = 0.1  # ours: the paper names Dropout blocks but no p
    # --- codebook (App. C, Eq. 7–8) ---
    codebook_size: int = 256  # K
    ema_decay: float = 0.9  # γ: e_k ← γ·e_k + (1 − γ)·mean of the batch's z_e assigned to k
    usage_decay: float = 0.9  # decay of the EMA of usage counts n̂_k (ours: the paper's γ)
    dead_alpha: float = 0.1  # α: dead when n̂_k < α·mean_j n̂_j
    dead_check_every: int = 50  # steps between dead-code checks
    dead_warmup_steps: int = 100  # no check before this many steps
    reset_noise_std: float = 0.01  # ours: σ of the Gaussian noise added to a reset code
    # --- loss weights (Eq. 2, App. C) ---
    lambda_recon: float = 0.3  # λr
    beta: float = 0.75  # β, commitment
    # ours: "mean" over batch and latent dims; the paper's ||z_e − sg(z_q)||² is
    # "squared_norm" (summed over the 96 dims, mean over the batch), i.e. 96× the mean
    commitment: Literal["mean", "squared_norm"] = "mean"
    lambda_con: float = 0.15  # λc, contrastive
    lambda_aux: float = 0.5  # λa, the three auxiliary heads
    # --- reconstruction (§2.2) ---
    mask_loss: Literal["bce", "none"] = "bce"  # ours: BCE on the 3 mask dims as a 5th group
    # --- contrastive (§2.2, App. D) ---
    tau: float = 0.1  # InfoNCE temperature
    top_m: int = 10  # gate 2: top-M by product-embedding cosine
    top_f: int = 3  # gate 3: top-F by behavioural Euclidean distance (M > F)
    # gate 1 (see contrastive.py): ours "masks" reads the input's channel masks; the paper's
    # "counts" takes one per buyer from its interaction counts; "given" any per-buyer level
    signature_source: Literal["masks", "counts", "given"] = "masks"
    # --- optimisation (ours) ---
    batch_size: int = 512
    epochs: int = 40
    # At least this many optimiser steps: on a small training set the epochs are raised to
    # reach it (40 epochs of 4 K vectors are only 320 steps, 3 dead-code checks). The
    # paper-sized set (≈ 45 K, ~3,000 steps in 40 epochs) is unaffected; 0 disables.
    min_steps: int = 1000
    lr: float = 1e-3
    weight_decay: float = 0.0
    grad_clip: float = 1.0  # max gradient norm; 0 disables
    seed: int = 0
    device: str = "cpu"  # "cpu", "cuda" (used when available, else CPU with a warning), "auto"
    # torch intra-op threads while training; None keeps torch's setting. 1 by default: the
    # per-step ops are small (batch × ≤ 403 × 256), and on 2 shared cores 2 threads ran a
    # step up to 20× slower than 1 whenever another process held a core (OpenMP barriers).
    num_threads: int | None = 1
    extra: dict[str, Any] = field(default_factory=dict)  # free-form provenance, saved along

    def __post_init__(self) -> None:
        self.hidden_dims = tuple(int(h) for h in self.hidden_dims)
        if not 0.0 <= self.ema_decay < 1.0 or not 0.0 <= self.usage_decay < 1.0:
            raise ValueError("EMA decays must lie in [0, 1)")
        if self.top_m < self.top_f or self.top_f < 1:
            raise ValueError(f"need top_m ≥ top_f ≥ 1, got M={self.top_m}, F={self.top_f}")
        if self.epochs < 1 or self.min_steps < 0:
            raise ValueError(
                f"need epochs ≥ 1 and min_steps ≥ 0, got {self.epochs}, {self.min_steps}"
            )
        if self.mask_loss not in ("bce", "none"):
            raise ValueError(f"mask_loss must be 'bce' or 'none', got {self.mask_loss!r}")
        if self.signature_source not in ("masks", "counts", "given"):
            raise ValueError("signature_source must be 'masks', 'counts' or 'given'")
        if self.commitment not in ("mean", "squared_norm"):
            raise ValueError(
                f"commitment must be 'mean' or 'squared_norm', got {self.commitment!r}"
            )

    @classmethod
    def preset(cls, name: str = "default", **overrides: Any) -> VQVAEConfig:
        """The named preset ("default": ours, "paper": `PAPER_CHOICES`) with `overrides`."""
        if name not in PRESETS:
            raise ValueError(f"unknown VQ-VAE preset {name!r}; one of {PRESETS}")
        base = PAPER_CHOICES if name == "paper" else {}
        return cls(**(base | overrides))

    @classmethod
    def paper(cls, **overrides: Any) -> VQVAEConfig:
        """The paper's literal reading of §2.2 (`PAPER_CHOICES`), other fields as ours."""
        return cls.preset("paper", **overrides)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["hidden_dims"] = list(self.hidden_dims)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> VQVAEConfig:
        names = {f.name for f in fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise ValueError(f"unknown VQVAEConfig fields: {sorted(unknown)}")
        return cls(**d)

    def save_json(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n")

    @classmethod
    def load_json(cls, path: str | Path) -> VQVAEConfig:
        return cls.from_dict(json.loads(Path(path).read_text()))
