"""The feature transform model (paper App. A): robust-z statistics of the 16 scalars, per-dimension
z and PCA of each product channel, and the label edges — fitted once on the training shops,
saved as a versioned artifact, reused unchanged at inference on any shop."""

from __future__ import annotations

import hashlib
import io
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Final

import numpy as np

from simpersona.features.labels import PURCHASE_EDGES
from simpersona.features.scalars import CHANNELS, SCALARS

PCA_DIMS: Final[int] = 128
INTENT_EPS: Final[float] = 1e-3  # logit_ε clips s to [ε, 1-ε]; s ∈ [0, 1) so s = 0 is common
MAD_TO_SIGMA: Final[float] = 1.4826
VECTOR_DIM: Final[int] = len(SCALARS) + len(CHANNELS) * PCA_DIMS + len(CHANNELS)  # 403


def _logit(p: np.ndarray) -> np.ndarray:
    return np.log(p) - np.log1p(-p)


def pre_transform(raw: np.ndarray) -> np.ndarray:
    """Per-group transform before robust z: log(1+x) for counts, durations and dollars; logit
    of the (already Laplace-smoothed) funnel rates; logit_ε of intent strength. raw: (n, 16)."""
    out = np.empty_like(raw, dtype=np.float64)
    for j, (_, group) in enumerate(SCALARS):
        x = raw[:, j].astype(np.float64)
        if group == "log":
            out[:, j] = np.log1p(np.maximum(x, 0.0))
        elif group == "rate":  # already Laplace-smoothed, so inside (0, 1); clip for safety
            out[:, j] = _logit(np.clip(x, 1e-9, 1 - 1e-9))
        elif group == "intent":
            out[:, j] = _logit(np.clip(x, INTENT_EPS, 1 - INTENT_EPS))
        else:  # pragma: no cover - SCALARS is a constant
            raise ValueError(group)
    return out


def robust_scale(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Median and scale per column: IQR; MAD·1.4826 when IQR = 0 (paper App. A).

    Our addition: with interpolated percentiles IQR = 0 means over half the values equal the
    median, so MAD is then 0 as well; the cascade goes on to the standard deviation, and to 1
    for a constant column.
    """
    center = np.median(x, axis=0)
    q75, q25 = np.percentile(x, [75, 25], axis=0)
    scale = q75 - q25
    mad = np.median(np.abs(x - center), axis=0) * MAD_TO_SIGMA
    scale = np.where(scale > 0, scale, mad)
    scale = np.where(scale > 0, scale, x.std(axis=0))
    scale = np.where(scale > 0, scale, 1.0)
    return center, scale


@dataclass
class ChannelPCA:
    """z-score per dimension, then PCA to `PCA_DIMS` (zero-padded when fewer components can
    be fitted, e.g. a catalog with fewer products than 128)."""

    mean: np.ndarray  # (D,)
    std: np.ndarray  # (D,)
    components: np.ndarray  # (k, D), k ≤ 128
    pca_mean: np.ndarray  # (D,)
    explained_variance_ratio: float
    n_fit: int

    @classmethod
    def fit(cls, x: np.ndarray, seed: int = 0) -> ChannelPCA:
        from sklearn.decomposition import PCA

        mean = x.mean(axis=0)
        std = x.std(axis=0)
        std = np.where(std > 1e-8, std, 1.0)
        z = (x - mean) / std
        k = int(min(PCA_DIMS, z.shape[0] - 1, z.shape[1]))
        if k < 1:  # fewer than two observed buyers: no direction to keep, channel stays zero
            return cls(
                mean=mean.astype(np.float32),
                std=std.astype(np.float32),
                components=np.zeros((0, z.shape[1]), np.float32),
                pca_mean=np.zeros(z.shape[1], np.float32),
                explained_variance_ratio=0.0,
                n_fit=int(z.shape[0]),
            )
        # Many more buyers than dimensions: the eigen-decomposition of the D×D covariance
        # gives the same components as the full SVD (to ~1e-12) at a fraction of the cost.
        solver = "covariance_eigh" if z.shape[0] > 2 * z.shape[1] else "full"
        pca = PCA(n_components=k, svd_solver=solver, random_state=seed).fit(z)
        return cls(
            mean=mean.astype(np.float32),
            std=std.astype(np.float32),
            components=pca.components_.astype(np.float32),
            pca_mean=pca.mean_.astype(np.float32),
            explained_variance_ratio=float(pca.explained_variance_ratio_.sum()),
            n_fit=int(z.shape[0]),
        )

    def transform(self, x: np.ndarray) -> np.ndarray:
        """(n, D) channel means → (n, 128)."""
        z = (x - self.mean) / self.std
        y = (z - self.pca_mean) @ self.components.T
        if y.shape[1] < PCA_DIMS:
            y = np.pad(y, ((0, 0), (0, PCA_DIMS - y.shape[1])))
        return y.astype(np.float32)

    def project(self, embeddings: np.ndarray) -> np.ndarray:
        """(P, D) product embeddings → (P, 128) float64, `transform` applied to each product.

        The transform is affine, so the transform of a mean of products is the same mean of
        their projections: a buyer's channel is its averaging row times this matrix, which
        skips the (n, D) means and the (n, D) × (D, 128) product."""
        e = embeddings.astype(np.float64)
        z = (e - self.mean.astype(np.float64)) / self.std.astype(np.float64)
        y = (z - self.pca_mean.astype(np.float64)) @ self.components.astype(np.float64).T
        if y.shape[1] < PCA_DIMS:
            y = np.pad(y, ((0, 0), (0, PCA_DIMS - y.shape[1])))
        return y


@dataclass
class FeatureTransform:
    scalar_center: np.ndarray  # (16,)
    scalar_scale: np.ndarray  # (16,)
    channels: dict[str, ChannelPCA]
    engagement_edges: tuple[float, float]
    exploration_edges: tuple[float, float]
    embedding_model_id: str
    embedding_dim: int
    purchase_edges: tuple[float, float] = PURCHASE_EDGES
    fitted_on: dict = field(default_factory=dict)  # shops, rows, seed

    # ---- scalars -----------------------------------------------------------------------
    def transform_scalars(self, raw: np.ndarray) -> np.ndarray:
        """(n, 16) raw scalars → robust z."""
        return ((pre_transform(raw) - self.scalar_center) / self.scalar_scale).astype(np.float32)

    # ---- persistence -------------------------------------------------------------------
    def _arrays(self) -> dict[str, np.ndarray]:
        arrays = {"scalar_center": self.scalar_center, "scalar_scale": self.scalar_scale}
        for name, ch in self.channels.items():
            for k in ("mean", "std", "components", "pca_mean"):
                arrays[f"{name}.{k}"] = getattr(ch, k)
        return arrays

    def _meta(self) -> dict:
        return {
            "format": 1,
            "vector_dim": VECTOR_DIM,
            "scalars": [n for n, _ in SCALARS],
            "engagement_edges": list(self.engagement_edges),
            "exploration_edges": list(self.exploration_edges),
            "purchase_edges": list(self.purchase_edges),
            "embedding_model_id": self.embedding_model_id,
            "embedding_dim": self.embedding_dim,
            "channels": {
                n: {"explained_variance_ratio": c.explained_variance_ratio, "n_fit": c.n_fit}
                for n, c in self.channels.items()
            },
            "fitted_on": self.fitted_on,
        }

    @property
    def version(self) -> str:
        """Content hash of the fitted statistics: same fit → same version."""
        h = hashlib.sha256()
        for k, v in sorted(self._arrays().items()):
            h.update(k.encode())
            h.update(np.ascontiguousarray(v).tobytes())
        h.update(json.dumps(self._meta(), sort_keys=True, default=str).encode())
        return h.hexdigest()[:12]

    def save(self, folder: str | Path) -> Path:
        """Write `transform.npz` and `transform.json` into `folder` (atomically each)."""
        from simpersona.lake import atomic_write_text

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        buf = io.BytesIO()
        # allow_pickle is savez's default, named so that a type checker does not match the
        # arrays' names against it
        np.savez(buf, allow_pickle=True, **self._arrays())
        tmp = folder / ".transform.npz.tmp"
        tmp.write_bytes(buf.getvalue())
        tmp.replace(folder / "transform.npz")
        atomic_write_text(
            json.dumps({**self._meta(), "version": self.version}, indent=2, default=str),
            folder / "transform.json",
        )
        return folder

    @classmethod
    def load(cls, folder: str | Path) -> FeatureTransform:
        folder = Path(folder)
        meta_path, npz_path = folder / "transform.json", folder / "transform.npz"
        if not meta_path.exists() or not npz_path.exists():
            raise FileNotFoundError(f"no fitted feature transform in {folder}")
        meta = json.loads(meta_path.read_text())
        if meta.get("scalars") != [n for n, _ in SCALARS]:
            raise ValueError(f"{meta_path}: fitted for other scalars {meta.get('scalars')}")
        arrays = np.load(npz_path)
        channels = {
            n: ChannelPCA(
                mean=arrays[f"{n}.mean"],
                std=arrays[f"{n}.std"],
                components=arrays[f"{n}.components"],
                pca_mean=arrays[f"{n}.pca_mean"],
                explained_variance_ratio=meta["channels"][n]["explained_variance_ratio"],
                n_fit=meta["channels"][n]["n_fit"],
            )
            for n in CHANNELS
        }
        return cls(
            scalar_center=arrays["scalar_center"],
            scalar_scale=arrays["scalar_scale"],
            channels=channels,
            engagement_edges=tuple(meta["engagement_edges"]),
            exploration_edges=tuple(meta["exploration_edges"]),
            purchase_edges=tuple(meta["purchase_edges"]),
            embedding_model_id=meta["embedding_model_id"],
            embedding_dim=meta["embedding_dim"],
            fitted_on=meta.get("fitted_on", {}),
        )

    def summary(self) -> dict:
        d = self._meta()
        d["version"] = self.version
        return d


__all__ = ["ChannelPCA", "FeatureTransform", "VECTOR_DIM", "PCA_DIMS", "asdict"]
