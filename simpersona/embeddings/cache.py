"""The persistent embedding cache: vectors keyed by (model id, sha256 of the normalised text),
as Parquet shards on disk, safe for many processes at once (one Dagster run per shop, on
one machine or on several pods sharing a network volume).

Layout (one folder per model; see `docs/embeddings.md`):

    <cache_dir>/<model slug>/model.json                        model_id, dim
    <cache_dir>/<model slug>/shard-<ns>-<pid>-<rand>.parquet    one per write
    <cache_dir>/<model slug>/compact-<ns>-<pid>-<rand>.parquet  merged by compact()

Every file is written to a hidden temporary name in the same folder, fsynced, then renamed
with `os.replace`, so readers never see a partial file and any number of processes can add
shards at once. When two processes embed the same text, both shards hold it; reads keep the
oldest copy, so a key's vector never changes once written. `compact()` merges the shards
into one file under an exclusive lock.

(Why not one SQLite file, as the LLM response cache keeps its replies: SQLite's WAL mode
needs every process on one host, and its locking is unreliable on network file systems,
while run pods on Kubernetes share the cache over a ReadWriteMany volume.)
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import re
import time
import uuid
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from simpersona.embeddings.config import DEFAULT_CACHE_DIR, EmbeddingConfig
from simpersona.embeddings.keys import CacheKey
from simpersona.embeddings.model import read_json
from simpersona.lake import atomic_path

log = logging.getLogger(__name__)


def model_slug(model_id: str) -> str:
    """Folder name of a model's cache: readable part + hash of the full id."""
    readable = re.sub(r"[^A-Za-z0-9._-]+", "-", model_id).strip("-.")[-48:].strip("-.")
    return f"{readable or 'model'}-{hashlib.sha256(model_id.encode()).hexdigest()[:10]}"


def _atomic_write(path: Path, write: Callable[[str], object]) -> Path:
    with atomic_path(path, fsync=True) as tmp:
        write(tmp)
    return path


def _shard_name(kind: str) -> str:
    return f"{kind}-{time.time_ns():020d}-{os.getpid()}-{uuid.uuid4().hex[:8]}.parquet"


def _frame_schema(dim: int) -> dict[str, pl.DataType]:
    return {"text_hash": pl.String(), "text": pl.String(), "embedding": pl.Array(pl.Float32, dim)}


def embedding_series(vectors: np.ndarray, dim: int, name: str = "embedding") -> pl.Series:
    """An (n, dim) float32 matrix as a polars Array(Float32, dim) column."""
    vectors = np.ascontiguousarray(vectors, dtype=np.float32).reshape(-1, dim)
    if len(vectors) == 0:
        return pl.Series(name, [], dtype=pl.Array(pl.Float32, dim))
    return pl.Series(name, vectors).cast(pl.Array(pl.Float32, dim))


def frame_vectors(frame: pl.DataFrame, dim: int, column: str = "embedding") -> np.ndarray:
    """The (n, dim) float32 matrix of an Array(Float32, dim) column."""
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
        return read_json(self.model_dir(model_id) / "model.json")

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
            vecs = frame_vectors(frame, frame.schema["embedding"].size)  # type: ignore[attr-defined]
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
                    "embedding": embedding_series(vectors, dim),
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
                meta = read_json(folder / "model.json") if folder.is_dir() else None
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
                with atomic_path(path, fsync=True) as tmp:
                    merged.write_parquet(
                        tmp, compression="zstd", statistics=True, row_group_size=row_group_size
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
