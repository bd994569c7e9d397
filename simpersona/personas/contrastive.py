"""Three-gate InfoNCE on the encoder outputs (paper §2.2, App. D, Eq. 9).

Positives of anchor i, within the batch, by progressively finer gates:
  1. funnel gate: same signature, the highest interaction level purchase (3) > cart (2) >
     view (1) > none (0). By default ("masks", ours) it is read from the input's masks
     (purchased / carted / viewed channel observed), so it needs no column beside the vector.
     The paper reads it from the interaction counts ("counts"): purchase sessions > 0 → 3,
     else checkout or add-to-cart sessions → 2, else product-view, collection-view or search
     sessions → 1, else 0. The two differ where a count has no embeddable product (a search-
     or collection-only browser is 1 by counts, 0 by masks; a checkout without an add-to-cart
     product is 2 by counts). With "counts" (or "given": any level per buyer) the caller
     passes one signature per buyer, `signature_from_counts` or `signature_from_strata`.
  2. product filter: of those, the top-M by cosine of the product embeddings (the three
     128-d channels concatenated, absent channels being zero). An anchor with no product
     channel has no direction to compare, so for it gate 2 keeps the whole gate-1 pool.
  3. behavioural filter: of those, the top-F by Euclidean distance over the robust-z
     total_product_views, search_sessions, collection_view_sessions and total_duration_s.
Loss: −log softmax over all non-self samples (cosine similarity / τ), averaged over each
anchor's positives, then over the anchors that have at least one (the others are skipped).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from simpersona.features.vectors import MASK_SLICE, SCALAR_SLICE
from simpersona.personas.config import GATE3_INDICES, VQVAEConfig

PRODUCT_SLICE = slice(SCALAR_SLICE.stop, MASK_SLICE.start)  # [16:400], the three channels
STRATUM_SIGNATURE = {"A": 3, "B": 2, "C": 2, "D": 1, "E": 0}
# Raw buyer-feature counts behind the count-based signature (features/scalars.py).
COUNT_COLUMNS = (
    "purchase_sessions",
    "checkout_sessions",
    "atc_sessions",
    "product_view_sessions",
    "collection_view_sessions",
    "search_sessions",
)


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


def signature_from_counts(counts: Mapping[str, Any]) -> np.ndarray:
    """The paper's gate-1 signature from raw interaction counts (a frame or mapping with the
    buyer-feature columns of `COUNT_COLUMNS`): 3 purchase > 2 cart (add-to-cart or checkout)
    > 1 view (product, collection or search) > 0 none.

    The same cascade over the same counts as the funnel stratum (paper §2.1.1), so it equals
    `signature_from_strata` of the buyer's stratum; the stratum is what the vector tables carry.
    The counts cannot be read back from the vector: its scalars are robust-z of log1p(count)
    with the training set's centre and scale (features/transform.py), so "count > 0" is a
    threshold known only to the fitted transform, which the trainer does not see."""
    col = {c: np.asarray(counts[c]) for c in COUNT_COLUMNS}
    view = (col["product_view_sessions"] + col["collection_view_sessions"]) > 0
    view |= col["search_sessions"] > 0
    cart = (col["atc_sessions"] > 0) | (col["checkout_sessions"] > 0)
    sig = np.where(view, 1, 0)
    sig = np.where(cart, 2, sig)
    return np.where(col["purchase_sessions"] > 0, 3, sig).astype(np.int64)


def gate1_signatures(cfg: VQVAEConfig, strata: np.ndarray | list[str]) -> np.ndarray | None:
    """Per-buyer gate-1 signatures the config needs from rows with these strata: None for
    "masks" (read from the vectors), else the count-based levels via the stratum."""
    return None if cfg.signature_source == "masks" else signature_from_strata(strata)


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
