"""Persona tokens for any number of buyers (paper App. B): one streaming encoder pass.

    tokens = assign_tokens(model, vectors)                       # (n, 403) array → (n,) int64
    tokens = assign_tokens(model, iter_parquet_vectors(paths))   # chunks from Parquet files
    for chunk_tokens in iter_assign_tokens(model, chunks): ...   # never holds all tokens

Memory is bounded by one chunk plus one batch of activations: input chunks are consumed one
at a time (numpy arrays, torch tensors, polars frames / series with a `vector`
Array[Float32, 403] column, pyarrow tables / record batches), each cut into `batch_size` rows.
The CPU path is one GEMM chain: encoder in eval mode under torch.inference_mode, then
argmin_k ||e_k||² − 2·z·e_k (||z||² is the same for every code), the same function training
uses, so tokens match the training assignment exactly.
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, TypeAlias

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from simpersona.devices import torch_threads
from simpersona.personas.vqvae import VQVAE

# Rows per encoder pass: on 2 CPU cores 4–16 K rows keep activations in cache (64 K was
# 25–35 % slower); a GPU wants far larger batches.
DEFAULT_BATCH = {"cpu": 16_384, "cuda": 262_144}
VectorSource: TypeAlias = (
    np.ndarray | torch.Tensor | pl.DataFrame | pl.Series | pa.Table | pa.RecordBatch
)


def as_matrix(chunk: Any, column: str = "vector") -> np.ndarray | torch.Tensor:
    """One chunk → (n, d) float32 array or tensor (zero-copy where the source allows)."""
    if isinstance(chunk, torch.Tensor):
        return chunk.float()
    if isinstance(chunk, pl.DataFrame):
        chunk = chunk.get_column(column)
    if isinstance(chunk, pl.Series):
        arr = chunk.to_numpy()
        if arr.dtype == object:  # List column (ragged type): stack the rows
            arr = np.stack(list(arr))
        return np.ascontiguousarray(arr, dtype=np.float32)
    if isinstance(chunk, pa.RecordBatch | pa.Table):
        return _arrow_matrix(chunk, column)
    return np.ascontiguousarray(chunk, dtype=np.float32)


def _arrow_matrix(chunk: pa.RecordBatch | pa.Table, column: str) -> np.ndarray:
    """The fixed-size-list `column` of a pyarrow table or record batch as (n, d) float32."""
    col = chunk.column(column)
    if isinstance(col, pa.ChunkedArray):
        col = col.combine_chunks()
    width = col.type.list_size
    values = col.flatten().to_numpy(zero_copy_only=False)
    return np.ascontiguousarray(values.reshape(-1, width), dtype=np.float32)


def _chunks(source: VectorSource | Iterable[VectorSource]) -> Iterator[Any]:
    single = (np.ndarray, torch.Tensor, pl.DataFrame, pl.Series, pa.Table, pa.RecordBatch)
    if isinstance(source, single):
        yield source
    else:
        yield from source


def iter_parquet_vectors(
    paths: str | Path | Iterable[str | Path], column: str = "vector", batch_rows: int = 65_536
) -> Iterator[np.ndarray]:
    """(≤ batch_rows, 403) float32 chunks of the `column` of one or more Parquet files, read
    with pyarrow record batches (only that column is read)."""
    if isinstance(paths, str | Path):
        paths = [paths]
    for path in paths:
        with pq.ParquetFile(path) as f:
            for batch in f.iter_batches(batch_size=batch_rows, columns=[column]):
                yield _arrow_matrix(batch, column)


class _Runner:
    """The encoder + codebook of a model, on one device, in eval mode, for inference. The
    model is copied when `device` differs from its own, so the caller's model never moves."""

    def __init__(self, model: VQVAE, device: str | torch.device | None):
        own = model.codebook.embed.device
        self.device = torch.device(device) if device else own
        if self.device != own:
            model = copy.deepcopy(model).to(self.device)
        self.encoder = model.encoder
        self.codebook = model.codebook

    def __call__(
        self, xb: torch.Tensor, with_distance: bool
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """(B, 403) → (z_e (B, D), token (B,), squared distance to its code (B,) or None)."""
        z = self.encoder(xb.to(self.device, non_blocking=True))
        tok, dist = self.codebook.nearest(z, with_distance)
        return z, tok, dist


def iter_assign_tokens(
    model: VQVAE,
    vectors: VectorSource | Iterable[VectorSource],
    batch_size: int | None = None,
    *,
    device: str | torch.device | None = None,
    num_threads: int | None = None,
    with_distances: bool = False,
    with_latents: bool = False,
) -> Iterator[np.ndarray | tuple[np.ndarray, ...]]:
    """One result per input chunk: int64 tokens (n,), or a tuple with the squared distances
    to the assigned code (n,) float32 and/or z_e (n, D) float32 when asked."""
    was_training = model.training
    model.eval()
    run = _Runner(model, device)
    batch_size = batch_size or DEFAULT_BATCH.get(run.device.type, DEFAULT_BATCH["cpu"])
    D = model.config.latent_dim
    try:
        for chunk in _chunks(vectors):
            x = as_matrix(chunk)
            if x.ndim != 2 or x.shape[1] != model.config.input_dim:
                raise ValueError(f"expected (n, {model.config.input_dim}) vectors, got {x.shape}")
            if isinstance(x, np.ndarray):
                with warnings.catch_warnings():  # read-only Arrow buffers: we never write
                    warnings.simplefilter("ignore", UserWarning)
                    x = torch.from_numpy(x)
            n = x.shape[0]
            tok = np.empty(n, dtype=np.int64)
            dist = np.empty(n, dtype=np.float32) if with_distances else None
            lat = np.empty((n, D), dtype=np.float32) if with_latents else None
            # contexts per chunk, so nothing leaks into the caller's code between yields
            with torch_threads(num_threads), torch.inference_mode():
                for s in range(0, n, batch_size):
                    z, t, d = run(x[s : s + batch_size], with_distances)
                    tok[s : s + len(t)] = t.cpu().numpy()
                    if dist is not None:
                        assert d is not None  # asked for with_distances, as dist was
                        dist[s : s + len(t)] = d.cpu().numpy()
                    if lat is not None:
                        lat[s : s + len(t)] = z.cpu().numpy()
            extras = tuple(a for a in (dist, lat) if a is not None)
            yield (tok, *extras) if extras else tok
    finally:
        model.train(was_training)


def assign_tokens(
    model: VQVAE,
    vectors: VectorSource | Iterable[VectorSource],
    batch_size: int | None = None,
    *,
    device: str | torch.device | None = None,
    num_threads: int | None = None,
    return_distances: bool = False,
) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """Persona token (code index) of every vector, (n,) int64, in input order; with
    `return_distances`, also the squared distance to the assigned code (n,) float32."""
    tok, dist = [], []
    for r in iter_assign_tokens(
        model, vectors, batch_size, device=device, num_threads=num_threads,
        with_distances=return_distances,
    ):  # fmt: skip
        if return_distances:
            tok.append(r[0])
            dist.append(r[1])
        else:
            tok.append(r)
    tokens = np.concatenate(tok) if tok else np.empty(0, dtype=np.int64)
    if return_distances:
        return tokens, (np.concatenate(dist) if dist else np.empty(0, dtype=np.float32))
    return tokens


def encode(
    model: VQVAE,
    vectors: VectorSource | Iterable[VectorSource],
    batch_size: int | None = None,
    *,
    device: str | torch.device | None = None,
    num_threads: int | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(z_e (n, D) float32, tokens (n,) int64, squared distance to the token's code (n,))."""
    toks, dists, lats = [], [], []
    for t, d, z in iter_assign_tokens(
        model, vectors, batch_size, device=device, num_threads=num_threads,
        with_distances=True, with_latents=True,
    ):  # fmt: skip
        toks.append(t)
        dists.append(d)
        lats.append(z)
    if not toks:
        return (
            np.empty((0, model.config.latent_dim), np.float32),
            np.empty(0, np.int64),
            np.empty(0, np.float32),
        )
    return np.concatenate(lats), np.concatenate(toks), np.concatenate(dists)


# Columns of a `buyer_vectors` file carried into an assignment row (everything but the vector).
ASSIGNMENT_CARRY = (
    "shop_id",
    "buyer_id",
    "stratum",
    "engagement_bin",
    "exploration_bin",
    "purchase_bin",
)


def iter_assignment_frames(
    model: VQVAE,
    path: str | Path,
    kmeans: Any = None,
    batch_rows: int = 65_536,
    *,
    device: str | torch.device | None = None,
    num_threads: int | None = None,
) -> Iterator[pl.DataFrame]:
    """One frame per `batch_rows` of a `buyer_vectors` Parquet file: its key, stratum and bin
    columns, `token` (Int32), `distance` (squared distance to the code, Float32) and, when a
    fitted k-means baseline is given (anything with `.assign(x) -> codes`),
    `kmeans_cluster` (Int32). One encoder pass; memory bounded by one batch."""
    with pq.ParquetFile(path) as f:
        names = set(f.schema_arrow.names)
        carry = [c for c in ASSIGNMENT_CARRY if c in names]
        for batch in f.iter_batches(batch_size=batch_rows, columns=[*carry, "vector"]):
            x = as_matrix(batch, "vector")
            tok, dist = assign_tokens(
                model, x, device=device, num_threads=num_threads, return_distances=True
            )
            cols = {c: pl.from_arrow(batch.column(c)) for c in carry}
            frame = pl.DataFrame(cols).with_columns(
                pl.Series("token", tok, dtype=pl.Int32),
                pl.Series("distance", dist, dtype=pl.Float32),
            )
            if kmeans is not None:
                frame = frame.with_columns(
                    pl.Series("kmeans_cluster", kmeans.assign(x), dtype=pl.Int32)
                )
            yield frame
