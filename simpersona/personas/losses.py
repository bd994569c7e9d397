"""The VQ-VAE objective (paper Eq. 2):
L = λr·L_recon + β·L_commit + λc·L_contrastive + λa·(L_engage + L_explore + L_purchase).

Group-aware reconstruction: one number per semantic group, then the mean over groups, so the
three 128-d channels do not outweigh the 16 scalars by dimension count:
  scalars    MSE over the 16 robust-z scalars;
  viewed     1 − cos(x̂_c, x_c) per buyer, averaged over the buyers whose channel c is
  carted     observed (mask from the input's last 3 dims); a buyer without the channel adds
  purchased  nothing, and a group nobody in the batch observed is left out of the mean;
  masks      (ours, `mask_loss="bce"`) BCE-with-logits on the 3 mask dims, so a decoded
             code also says which channels its buyers have; `mask_loss="none"` drops it
             (the paper's four groups, §2.2).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from simpersona.features.scalars import CHANNELS
from simpersona.features.vectors import CHANNEL_SLICES, MASK_SLICE, SCALAR_SLICE
from simpersona.personas.config import VQVAEConfig
from simpersona.personas.contrastive import contrastive_loss
from simpersona.personas.vqvae import VQOutput


def recon_loss(
    x_hat: torch.Tensor, x: torch.Tensor, mask_loss: str = "bce"
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """x_hat, x: (B, 403). Returns (mean over present groups, {group: loss}); groups that no
    buyer in the batch observed are absent from the dict."""
    parts = {"scalars": F.mse_loss(x_hat[:, SCALAR_SLICE], x[:, SCALAR_SLICE])}
    masks = x[:, MASK_SLICE]  # (B, 3) in CHANNELS order
    for i, c in enumerate(CHANNELS):
        m = masks[:, i] > 0.5  # (B,)
        if not bool(m.any()):
            continue
        sl = CHANNEL_SLICES[c]
        cos = F.cosine_similarity(x_hat[m, sl], x[m, sl], dim=1, eps=1e-8)  # (B_obs,)
        parts[c] = (1.0 - cos).mean()
    if mask_loss == "bce":
        parts["masks"] = F.binary_cross_entropy_with_logits(x_hat[:, MASK_SLICE], masks)
    total = torch.stack(list(parts.values())).mean()
    return total, parts


def commitment_loss(z_e: torch.Tensor, z_q: torch.Tensor, kind: str = "mean") -> torch.Tensor:
    """||z_e − sg(z_q)||², averaged over the batch. "mean" (ours, as in the reference VQ-VAE
    implementations) also averages over the latent dims; "squared_norm" (the paper's formula)
    sums over them, which is latent_dim (96) times larger, i.e. β scaled by 96."""
    if kind == "squared_norm":
        return (z_e - z_q.detach()).pow(2).sum(1).mean()
    if kind == "mean":
        return F.mse_loss(z_e, z_q.detach())
    raise ValueError(f"commitment must be 'mean' or 'squared_norm', got {kind!r}")


def aux_loss(
    logits: dict[str, torch.Tensor], bins: torch.Tensor, class_weights: torch.Tensor
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Sum of the three weighted 3-way cross-entropies. bins: (B, 3) in `logits` order;
    class_weights: (3 heads, 3 bins), w_i = N/(3·n_i). torch's weighted mean divides by the
    batch's Σ w_{y}; over the whole training set Σ_n w_{y_n} = N, so it is the plain weighted
    mean there."""
    parts = {}
    for j, (h, lg) in enumerate(logits.items()):
        parts[h] = F.cross_entropy(lg, bins[:, j].long(), weight=class_weights[j])
    return torch.stack(list(parts.values())).sum(), parts


def total_loss(
    out: VQOutput,
    x: torch.Tensor,
    bins: torch.Tensor,
    signature: torch.Tensor,
    class_weights: torch.Tensor,
    cfg: VQVAEConfig,
) -> tuple[torch.Tensor, dict[str, float]]:
    """Eq. 2. Returns the loss and every term as a float (recon groups as recon_<group>,
    heads as aux_<head>)."""
    l_rec, rec_parts = recon_loss(out.x_hat, x, cfg.mask_loss)
    l_com = commitment_loss(out.z_e, out.z_q, cfg.commitment)
    l_con = contrastive_loss(out.z_e, x, signature, cfg)
    l_aux, aux_parts = aux_loss(out.logits, bins, class_weights)
    loss = cfg.lambda_recon * l_rec + cfg.beta * l_com + cfg.lambda_con * l_con
    loss = loss + cfg.lambda_aux * l_aux
    terms = {"loss": loss, "recon": l_rec, "commit": l_com, "contrastive": l_con, "aux": l_aux}
    terms |= {f"recon_{k}": v for k, v in rec_parts.items()}
    terms |= {f"aux_{k}": v for k, v in aux_parts.items()}
    return loss, {k: float(v.detach()) for k, v in terms.items()}
