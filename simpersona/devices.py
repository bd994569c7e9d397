"""One device resolver for every model in the library (the embeddings, the VQ-VAE, the model
server, training), and torch's CPU threads for a block."""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator
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


@contextlib.contextmanager
def torch_threads(n: int | None) -> Iterator[None]:
    """torch's intra-op threads set to `n` for the block (process-wide, hence restored);
    None or 0 leaves them as they are."""
    import torch

    before = torch.get_num_threads()
    if n:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        if n:
            torch.set_num_threads(before)
