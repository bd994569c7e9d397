"""Discrete buyer personas (paper §2.2, App. B): the behaviour-aware VQ-VAE, its training loop and
token assignment. Names are imported lazily, so `import simpersona.personas.<module>` of a
torch-free sibling does not pay for importing torch.

    from simpersona.personas import VQVAEConfig, train_vqvae, assign_tokens, VQVAE
"""

from __future__ import annotations

from typing import Any

from simpersona.lazy import lazy_getattr

_EXPORTS = {
    "VQVAEConfig": "config",
    "GATE3_FEATURES": "config",
    "PRESETS": "config",
    "VQVAE": "vqvae",
    "EMACodebook": "vqvae",
    "VQOutput": "vqvae",
    "train_vqvae": "train",
    "TrainResult": "train",
    "evaluate": "train",
    "perplexity": "train",
    "assign_tokens": "assign",
    "iter_assign_tokens": "assign",
    "iter_parquet_vectors": "assign",
    "encode": "assign",
    "funnel_signature": "contrastive",
    "signature_from_strata": "contrastive",
    "signature_from_counts": "contrastive",
    "gate1_signatures": "contrastive",
    "positive_mask": "contrastive",
    "info_nce": "contrastive",
    "recon_loss": "losses",
    "commitment_loss": "losses",
    "total_loss": "losses",
}

__all__ = sorted(_EXPORTS)


__getattr__ = lazy_getattr(__name__, _EXPORTS)


def load_model(path: str) -> Any:
    """A saved VQ-VAE (`VQVAE.save`), on CPU, in eval mode."""
    from simpersona.personas.vqvae import VQVAE

    return VQVAE.load(path)
