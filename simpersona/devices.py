"""One device resolver for every model in the library: the embeddings, the VQ-VAE, the
model server and training."""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch


def resolve_device(name: str = "auto", strict: bool = False) -> torch.device:
    """The torch device for a name (any case): `auto` is CUDA when present, else the CPU; a
    `cuda…` device without CUDA falls back to the CPU with a warning, or raises with
    `strict` (a production fine-tune must not drift onto a CPU); other names go to torch."""
    import torch

    dev = name.strip().lower()
    if dev == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if dev.startswith("cuda") and not torch.cuda.is_available():
        if strict:
            raise RuntimeError(f"device {name!r} requested but no CUDA device is available")
        warnings.warn(f"device {name!r} requested but CUDA is not available; using the CPU",
                      stacklevel=2)  # fmt: skip
        return torch.device("cpu")
    return torch.device(dev)
