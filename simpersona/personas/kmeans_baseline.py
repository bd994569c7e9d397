"""MiniBatch k-means baseline for the codebook comparison (paper Table 1).

The paper compares the VQ-VAE codebook against MiniBatch k-means with K = 256 fitted on the
same 403-d buyer vectors. `fit_kmeans` wraps scikit-learn's `MiniBatchKMeans` (k-means++
initialisation, several initialisations, early stopping on the inertia), keeps only the
cluster centres and assigns buyers by nearest centre (squared Euclidean distance), which is
what `MiniBatchKMeans.predict` does, without pickling a scikit-learn object.
"""

from __future__ import annotations

import json
import logging
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from simpersona.lake import atomic_path

log = logging.getLogger(__name__)

DEFAULT_K = 256
FORMAT_VERSION = 1


@dataclass
class KMeansBaseline:
    """Fitted k-means centres plus what it took to get them.

    `k` is the number of centres actually fitted; `requested_k` what was asked for (they
    differ when there were fewer buyers than centres; `note` then says so)."""

    centers: np.ndarray  # (k, d) float32
    requested_k: int = DEFAULT_K
    seed: int = 0
    inertia: float = float("nan")  # sum of squared distances on the training vectors
    n_iter: int = 0  # mini-batch steps of the kept initialisation
    n_train: int = 0
    params: dict[str, Any] = field(default_factory=dict)
    note: str = ""

    @property
    def k(self) -> int:
        return int(self.centers.shape[0])

    @property
    def dim(self) -> int:
        return int(self.centers.shape[1])

    def assign(self, vectors: np.ndarray, chunk: int = 65536) -> np.ndarray:
        """Nearest centre (squared Euclidean distance) of each row: int64 codes in [0, k).
        Computed in float64, `chunk` rows at a time; ties go to the lower index."""
        x = _as_matrix(vectors, self.dim)
        c = self.centers.astype(np.float64)
        c_sq = np.einsum("ij,ij->i", c, c)
        out = np.empty(x.shape[0], dtype=np.int64)
        for start in range(0, x.shape[0], chunk):
            xb = x[start : start + chunk].astype(np.float64)
            # ||x||² is the same for every centre, so it does not change the argmin.
            d = c_sq[None, :] - 2.0 * (xb @ c.T)
            out[start : start + chunk] = np.argmin(d, axis=1)
        return out

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write an `.npz` with the centres and a JSON metadata string (no pickle)."""
        path = Path(path)
        if path.suffix != ".npz":
            path = path.with_suffix(".npz")
        path.parent.mkdir(parents=True, exist_ok=True)
        meta = {
            "format_version": FORMAT_VERSION,
            "requested_k": self.requested_k,
            "seed": self.seed,
            "inertia": self.inertia,
            "n_iter": self.n_iter,
            "n_train": self.n_train,
            "params": self.params,
            "note": self.note,
        }
        with atomic_path(path, suffix=".tmp.npz") as tmp:  # savez keeps a .npz name as is
            np.savez(tmp, centers=self.centers.astype(np.float32), meta=np.array(json.dumps(meta)))
        return path

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> KMeansBaseline:
        with np.load(Path(path), allow_pickle=False) as z:
            centers = z["centers"].astype(np.float32)
            meta = json.loads(str(z["meta"]))
        return cls(
            centers=centers,
            requested_k=int(meta.get("requested_k", centers.shape[0])),
            seed=int(meta.get("seed", 0)),
            inertia=float(meta.get("inertia", float("nan"))),
            n_iter=int(meta.get("n_iter", 0)),
            n_train=int(meta.get("n_train", 0)),
            params=dict(meta.get("params", {})),
            note=str(meta.get("note", "")),
        )


def fit_kmeans(
    vectors: np.ndarray,
    k: int = DEFAULT_K,
    seed: int = 0,
    batch_size: int = 2048,
    n_init: int = 3,
    max_iter: int = 30,
    max_no_improvement: int | None = None,
    reassignment_ratio: float = 0.01,
    tol: float = 0.0,
) -> KMeansBaseline:
    """Fit MiniBatch k-means on `vectors` (n, d) — the paper's baseline (K = 256).

    k-means++ initialisation; `n_init` initialisations (each on a 3·batch_size sample), the
    one with the lowest inertia is kept; then `max_iter` passes over the data in mini-batches
    of `batch_size`. Early stopping is off by default (`max_no_improvement=None`, `tol=0`):
    on 20k generated buyer vectors with K = 256, scikit-learn's default
    (`max_no_improvement=10`) ended runs erratically after 2–10 passes, with inertias up to a
    third above what 30 passes reach, and that gap would flatter the VQ-VAE. A fixed budget
    also makes the cost predictable (≈ 1 min for 20k × 403 on two busy cores).
    When there are fewer buyers than `k` (or fewer distinct vectors), k is lowered to that
    number, with a warning, and the centres are the distinct vectors themselves; the
    returned object's `note` says so."""
    from sklearn.cluster import MiniBatchKMeans

    x = _as_matrix(vectors)
    n = x.shape[0]
    if n == 0:
        raise ValueError("cannot fit k-means on zero vectors")
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    n_distinct = int(np.unique(x, axis=0).shape[0]) if n <= 200_000 else n
    k_fit = min(k, n, n_distinct)
    note = ""
    if k_fit < k:
        note = f"k lowered from {k} to {k_fit}: only {n} buyers ({n_distinct} distinct vectors)"
        warnings.warn(note, stacklevel=2)
        log.warning(note)
    params = {
        "batch_size": int(batch_size),
        "n_init": int(n_init),
        "max_iter": int(max_iter),
        "max_no_improvement": None if max_no_improvement is None else int(max_no_improvement),
        "reassignment_ratio": float(reassignment_ratio),
        "tol": float(tol),
        "init": "k-means++",
    }
    if k_fit == n_distinct:
        # As many centres as distinct points: the optimum is the points themselves (inertia
        # 0), which mini-batch updates would only approximate.
        model = KMeansBaseline(
            centers=np.unique(x, axis=0).astype(np.float32),
            requested_k=int(k),
            seed=int(seed),
            n_train=int(n),
            params={**params, "init": "distinct points"},
            note=note,
        )
        model.inertia = inertia(x, model.centers, model.assign(x))
        return model
    km = MiniBatchKMeans(
        n_clusters=k_fit,
        init="k-means++",
        n_init=n_init,
        max_iter=max_iter,
        batch_size=min(batch_size, n),
        max_no_improvement=max_no_improvement,
        reassignment_ratio=reassignment_ratio,
        tol=tol,
        random_state=seed,
        compute_labels=False,
    )
    with warnings.catch_warnings():
        # Duplicate points can leave fewer distinct clusters than k; that is reported below.
        warnings.simplefilter("ignore", category=UserWarning)
        km.fit(x)
    model = KMeansBaseline(
        centers=np.asarray(km.cluster_centers_, dtype=np.float32),
        requested_k=int(k),
        seed=int(seed),
        n_iter=int(getattr(km, "n_steps_", 0)),
        n_train=int(n),
        params=params,
        note=note,
    )
    model.inertia = inertia(x, model.centers, model.assign(x))
    return model


def inertia(vectors: np.ndarray, centers: np.ndarray, codes: np.ndarray) -> float:
    """Σ_i ||x_i − c_{code_i}||² (float64)."""
    x = np.asarray(vectors, dtype=np.float64)
    diff = x - np.asarray(centers, dtype=np.float64)[np.asarray(codes)]
    return float(np.einsum("ij,ij->", diff, diff))


def _as_matrix(vectors: Any, dim: int | None = None) -> np.ndarray:
    """A 2-D float32 array from an array, a list of rows or a polars Array/List column."""
    if hasattr(vectors, "to_numpy") and not isinstance(vectors, np.ndarray):
        arr = vectors.to_numpy()
        if arr.dtype == object:
            arr = np.stack([np.asarray(r, dtype=np.float32) for r in arr])
    else:
        arr = np.asarray(vectors)
    x = np.asarray(arr, dtype=np.float32)
    if x.ndim != 2:
        raise ValueError(f"expected a 2-D (n, d) array, got shape {x.shape}")
    if dim is not None and x.shape[1] != dim:
        raise ValueError(f"expected {dim} columns, got {x.shape[1]}")
    return x
