"""Three-gate InfoNCE on the encoder outputs (SPEC §6; paper §2.2, App. D, Eq. 9).

Positives of anchor i, within the batch, by progressively finer gates:
  1. funnel gate: same signature, the highest interaction level purchase (3) > cart (2) >
     view (1) > none (0). By default it is read from the input's masks (purchased / carted /
     viewed channel observed), so it needs no column beside the vector; with
     `signature_source="given"` the caller passes one per buyer (e.g. `signature_from_strata`).
  2. product filter: of those, the top-M by cosine of the product embeddings (the three
     128-d channels concatenated, absent channels being zero). An anchor with no product
     channel has no direction to compare, so for it gate 2 keeps the whole gate-1 pool.
  3. behavioural filter: of those, the top-F by Euclidean distance over the robust-z
     total_product_views, search_sessions, collection_view_sessions and total_duration_s.
Loss: −log softmax over all non-self samples (cosine similarity / τ), averaged over each
anchor's positives, then over the anchors that have at least one (the others are skipped).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from simpersona.features.vectors import MASK_SLICE, SCALAR_SLICE
from simpersona.personas.config import GATE3_INDICES, VQVAEConfig

PRODUCT_SLICE = slice(SCALAR_SLICE.stop, MASK_SLICE.start)  # [16:400], the three channels
STRATUM_SIGNATURE = {"A": 3, "B": 2, "C": 2, "D": 1, "E": 0}


def funnel_signature(x: torch.Tensor) -> torch.Tensor:
    """(B, 403) → (B,) long: 3 purchased observed, else 2 carted, else 1 viewed, else 0."""
    m = x[:, MASK_SLICE] > 0.5  # (B, 3): viewed, carted, purchased
    sig = torch.zeros(x.shape[0], dtype=torch.long, device=x.device)
    sig[m[:, 0]] = 1
    sig[m[:, 1]] = 2
    sig[m[:, 2]] = 3
    return sig


def signature_from_strata(strata: np.ndarray | list[str]) -> np.ndarray:
    """Strata A–E → signature: A purchase 3, B/C cart 2, D view 1, E none 0."""
    return np.array([STRATUM_SIGNATURE[s] for s in strata], dtype=np.int64)


@torch.no_grad()
def positive_mask(x: torch.Tensor, signature: torch.Tensor, top_m: int, top_f: int) -> torch.Tensor:
    """(B, 403), (B,) → (B, B) bool, [i, j] = j is a positive of anchor i (never i itself)."""
    B = x.shape[0]
    eye = torch.eye(B, dtype=torch.bool, device=x.device)
    gate1 = (signature[:, None] == signature[None, :]) & ~eye  # (B, B)
    if B < 2:
        return gate1
    # gate 2: top-M by product cosine among the gate-1 pool
    p = x[:, PRODUCT_SLICE]  # (B, 384)
    has_product = p.abs().sum(1) > 0  # (B,)
    pn = F.normalize(p, dim=1)
    cos = (pn @ pn.t()).masked_fill(~gate1, float("-inf"))  # (B, B)
    top2 = cos.topk(min(top_m, B - 1), dim=1).indices  # (B, M)
    gate2 = torch.zeros_like(gate1).scatter_(1, top2, True) & gate1
    gate2 = torch.where(has_product[:, None], gate2, gate1)
    # gate 3: top-F by behavioural Euclidean distance among the gate-2 survivors
    b = x[:, list(GATE3_INDICES)]  # (B, 4)
    dist = torch.cdist(b, b).masked_fill(~gate2, float("inf"))  # (B, B)
    top3 = dist.topk(min(top_f, B - 1), dim=1, largest=False).indices  # (B, F)
    return torch.zeros_like(gate1).scatter_(1, top3, True) & gate2


def info_nce(z: torch.Tensor, positives: torch.Tensor, tau: float) -> torch.Tensor:
    """z: (B, D), positives: (B, B) bool. Cosine similarity / τ, self excluded from the
    denominator; mean over positives per anchor, then over anchors with any."""
    B = z.shape[0]
    eye = torch.eye(B, dtype=torch.bool, device=z.device)
    zn = F.normalize(z, dim=1)
    logits = (zn @ zn.t() / tau).masked_fill(eye, float("-inf"))  # (B, B)
    log_prob = logits - torch.logsumexp(logits, dim=1, keepdim=True)  # (B, B)
    n_pos = positives.sum(1)  # (B,)
    valid = n_pos > 0
    if not bool(valid.any()):
        return z.sum() * 0.0  # keeps the graph; no anchor has a positive
    per_anchor = -log_prob.masked_fill(~positives, 0.0).sum(1) / n_pos.clamp(min=1)
    return per_anchor[valid].mean()


def contrastive_loss(
    z_e: torch.Tensor, x: torch.Tensor, signature: torch.Tensor | None, cfg: VQVAEConfig
) -> torch.Tensor:
    """L_contrastive on z_e (B, D) of inputs x (B, 403); `signature` None → from x's masks."""
    sig = funnel_signature(x) if signature is None else signature
    return info_nce(z_e, positive_mask(x, sig, cfg.top_m, cfg.top_f), cfg.tau)
