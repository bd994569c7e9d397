"""Configurable resources: one per external system, local defaults, env-overridable."""

import datetime as dt
import os
from pathlib import Path

import dagster as dg
from pydantic import Field

from simpersona.artifacts import (
    NoCurrentArtifact,
    publish,
    require_current,
    set_current,
    staging_folder,
)
from simpersona.ingest.ingest import DEFAULT_MAX_REJECT_SHARE, HASH_KEY_ENV, load_hash_key
from simpersona.ingest.validate import DEFAULT_BOUNDS, PlausibilityBounds
from simpersona.lake import Lake
from simpersona.tracking import DEFAULT_EXPERIMENT, Tracker
from simpersona.warehouse import Warehouse

DATA_DIR = os.environ.get("SIMPERSONA_DATA_DIR", "data")


class LakeResource(dg.ConfigurableResource):
    """The raw lake folder (Parquet/CSV, hive-partitioned by shop and date)."""

    root: str = Field(default=f"{DATA_DIR}/lake", description="Folder of the raw lake.")

    def lake(self) -> Lake:
        return Lake.at(self.root)


class WarehouseResource(dg.ConfigurableResource):
    """Validated tables (one Parquet file per partition) and the DuckDB file with views."""

    root: str = Field(default=f"{DATA_DIR}/warehouse", description="Folder of validated tables.")
    duckdb_path: str = Field(
        default=f"{DATA_DIR}/warehouse.duckdb", description="DuckDB file with views over them."
    )

    def warehouse(self) -> Warehouse:
        return Warehouse.at(self.root, self.duckdb_path)

    def require(self, shop: str, *tables: str) -> Warehouse:
        """The warehouse, after failing the step naming the first of `tables` whose
        partition of `shop` is not materialized."""
        wh = self.warehouse()
        require_partitions(wh, shop, *tables)
        return wh


def require_partitions(wh: Warehouse, shop: str, *tables: str) -> None:
    """Fail the step naming the first of `tables` whose partition of `shop` is not
    materialized (the upstream asset to materialize first)."""
    if missing := wh.missing_partition(shop, tables):
        raise dg.Failure(f"{missing} of shop {shop} is not materialized")


class BuyerHashResource(dg.ConfigurableResource):
    """Keyed hashing of buyer ids. The key comes from `key` (use dg.EnvVar), else
    $SIMPERSONA_BUYER_HASH_KEY, else a random key kept in `key_file`."""

    key: str | None = Field(default=None, description="Hash key (secret); prefer dg.EnvVar.")
    key_file: str = Field(
        default=f"{DATA_DIR}/.buyer_hash_key", description="Where a generated key is kept."
    )

    def hash_key(self) -> bytes:
        return load_hash_key(self.key, self.key_file)


class IngestSettings(dg.ConfigurableResource):
    """Limits of ingestion."""

    max_reject_share: float = Field(
        default=DEFAULT_MAX_REJECT_SHARE,
        description="Fail a partition when more than this share of its rows is rejected.",
    )
    session_gap_minutes: int = Field(
        default=30, description="Inactivity gap that ends a session (for missing session ids)."
    )
    earliest_date: str = Field(
        default=DEFAULT_BOUNDS.earliest.isoformat(),
        description="Events before this day (YYYY-MM-DD) are quarantined as implausible_timestamp.",
    )
    future_days: int = Field(
        default=DEFAULT_BOUNDS.future_days,
        description="Events more than this many days after now are implausible_timestamp.",
    )
    max_quantity: int = Field(
        default=DEFAULT_BOUNDS.max_quantity,
        description="Units on one event above this are quarantined as implausible_quantity.",
    )
    max_amount: float = Field(
        default=DEFAULT_BOUNDS.max_amount,
        description="A price or order value above this is quarantined as implausible_value.",
    )

    def bounds(self) -> PlausibilityBounds:
        return PlausibilityBounds(
            earliest=dt.date.fromisoformat(self.earliest_date),
            future_days=self.future_days,
            max_quantity=self.max_quantity,
            max_amount=self.max_amount,
        )


class MLflowResource(dg.ConfigurableResource):
    """MLflow tracking: every materialization logs a run tagged with the Dagster run id,
    asset key and partition."""

    tracking_uri: str = Field(
        default=os.environ.get("SIMPERSONA_MLFLOW_TRACKING_URI", f"sqlite:///{DATA_DIR}/mlflow.db"),
        description="MLflow URI ($SIMPERSONA_MLFLOW_TRACKING_URI, e.g. http://mlflow:5000).",
    )
    artifact_root: str = Field(
        default=os.environ.get("SIMPERSONA_MLFLOW_ARTIFACT_ROOT", f"{DATA_DIR}/mlartifacts"),
        description="Artifact location of new experiments ($SIMPERSONA_MLFLOW_ARTIFACT_ROOT; "
        "mlflow-artifacts:/simpersona with a tracking server that serves artifacts).",
    )
    experiment: str = Field(default=DEFAULT_EXPERIMENT, description="MLflow experiment name.")

    def tracker(self) -> Tracker:
        return Tracker(self.tracking_uri, self.artifact_root, self.experiment)

    def run_for(self, context: dg.AssetExecutionContext, extra_tags: dict | None = None):
        """An MLflow run for this materialization (a context manager yielding TrackedRun)."""
        tags = {
            "dagster.run_id": context.run.run_id,
            "dagster.asset_key": context.asset_key.to_user_string(),
            "dagster.job": context.run.job_name,
        }
        if context.has_partition_key:
            tags["dagster.partition"] = str(context.partition_key)
        tags.update(extra_tags or {})
        name = context.asset_key.to_user_string()
        if context.has_partition_key:
            name += f"[{context.partition_key}]"
        return self.tracker().run(name, tags)


class ArtifactsResource(dg.ConfigurableResource):
    """Where models and fitted artifacts live (versioned folders)."""

    root: str = Field(default=f"{DATA_DIR}/artifacts", description="Artifacts folder.")

    def path(self, *parts: str) -> Path:
        return Path(self.root, *parts)

    def current(self, name: str) -> tuple[str, Path]:
        """(version, folder) of the current `name`; fails the step when none is published."""
        try:
            return require_current(self.root, name)
        except NoCurrentArtifact as exc:
            raise dg.Failure(str(exc)) from None

    def current_or_none(self, name: str) -> tuple[str, Path] | None:
        """(version, folder) of the current `name`, None when none is published."""
        try:
            return require_current(self.root, name)
        except NoCurrentArtifact:
            return None

    def set_current(self, name: str, version: str) -> None:
        set_current(self.root, name, version)

    def staging_folder(self, name: str, version: str) -> Path:
        """An empty folder to write `version` of `name` into; `publish` moves it in place."""
        return staging_folder(self.root, name, version)

    def publish(self, name: str, version: str, staged: Path) -> Path:
        """Move the staged folder to <root>/<name>/<version> and make it current."""
        return publish(self.root, name, version, staged)


_EMBEDDERS: dict[tuple, object] = {}


class EmbeddingResource(dg.ConfigurableResource):
    """The product-title text embedder (sentence-transformers, offline) and its cache."""

    model: str = Field(
        default="all-MiniLM-L6-v2",
        description="'all-MiniLM-L6-v2' (packaged, offline) or a local sentence-transformers "
        "directory (the paper used a 768-d model).",
    )
    device: str = Field(default="cpu", description="cpu or cuda.")
    batch_size: int = Field(default=64, description="Titles per forward pass.")
    cache_dir: str = Field(
        default=f"{DATA_DIR}/artifacts/embedding_cache", description="Embedding cache folder."
    )
    num_threads: int | None = Field(
        default=None,
        description="torch CPU threads (1 is fastest when several shops embed in parallel).",
    )

    def config(self):
        from simpersona.embeddings import EmbeddingConfig

        return EmbeddingConfig(
            model=self.model,
            device=self.device,
            batch_size=self.batch_size,
            cache_dir=self.cache_dir,
        )

    def embedder(self):
        """The loaded model, once per process."""
        from simpersona.embeddings import load_embedder

        key = (self.model, self.device, self.batch_size)
        if key not in _EMBEDDERS:
            _EMBEDDERS[key] = load_embedder(self.config())
        return _EMBEDDERS[key]

    def cache(self):
        from simpersona.embeddings import EmbeddingCache

        return EmbeddingCache(self.cache_dir)


class LLMResource(dg.ConfigurableResource):
    """Any OpenAI-compatible chat endpoint (vLLM, `simpersona serve-llm`, OpenAI): the goal
    writer's and the LLM judge's model. Used only when an asset's config asks for the LLM."""

    base_url: str = Field(
        default=os.environ.get("SIMPERSONA_LLM_BASE_URL", "http://127.0.0.1:8008/v1"),
        description="Base URL of the endpoint (…/v1).",
    )
    model: str = Field(
        default=os.environ.get("SIMPERSONA_LLM_MODEL", "simpersona-tiny"),
        description="Model name the endpoint serves.",
    )
    api_key: str | None = Field(
        default=None, description="API key (prefer dg.EnvVar); else $SIMPERSONA_LLM_API_KEY."
    )
    concurrency: int = Field(default=4, description="Requests in flight at most.")
    max_retries: int = Field(default=4, description="Retries (exponential backoff) per request.")
    timeout_s: float = Field(default=120.0, description="Seconds per request.")
    cache_path: str | None = Field(
        default=f"{DATA_DIR}/llm_cache.sqlite",
        description="SQLite response cache keyed by prompt hash (None: no cache).",
    )
    temperature: float = Field(default=0.0, description="Sampling temperature (0: greedy).")
    max_tokens: int = Field(default=512, description="Completion tokens per reply at most.")

    def client(self):
        from simpersona.llm.client import LLMClient, LLMConfig

        return LLMClient(
            LLMConfig(
                base_url=self.base_url,
                model=self.model,
                concurrency=self.concurrency,
                max_retries=self.max_retries,
                timeout_s=self.timeout_s,
                cache_path=self.cache_path,
                temperature=self.temperature,
                max_tokens=self.max_tokens,
            ),
            api_key=self.api_key,
        )


class StorefrontResource(dg.ConfigurableResource):
    """Where the simulations' agents shop. Empty `base_url`: the project's storefront, served
    on loopback from each shop's warehouse catalogue (a test store). A URL: any store (a
    staging copy of yours), read generically, its clickstream recorded in the browser, and
    orders only where `allow_orders` and `order_hosts` say (docs/agents.md, "Your store")."""

    base_url: str = Field(
        default=os.environ.get("SIMPERSONA_STORE_URL", ""),
        description="Store URL the agents start at; empty: the project's own storefront.",
    )
    allow_orders: bool = Field(
        default=False,
        description="Let agents place orders on `order_hosts` (declared test stores only).",
    )
    order_hosts: list[str] = Field(
        default_factory=list, description="Hosts (or host:port) where orders are allowed."
    )
    allowed_hosts: list[str] = Field(
        default_factory=list, description="Hosts besides the store's the browser may load."
    )
    site_profiles: list[str] = Field(
        default_factory=list, description="YAML site profiles (selectors, URL patterns)."
    )

    def runtime_overrides(self) -> dict:
        """RuntimeConfig fields for a run against `base_url` (empty when it is ours)."""
        if not self.base_url:
            return {}
        from urllib.parse import urlsplit

        from simpersona.agent.site_profile import load_profile

        return {
            "allow_orders": self.allow_orders,
            "order_hosts": tuple(self.order_hosts),
            "allowed_domains": (urlsplit(self.base_url).hostname or "", *self.allowed_hosts),
            "profiles": tuple(load_profile(p) for p in self.site_profiles),
        }


def default_resources() -> dict[str, dg.ConfigurableResource]:
    return {
        "lake": LakeResource(),
        "warehouse": WarehouseResource(),
        "buyer_hash": BuyerHashResource(key=os.environ.get(HASH_KEY_ENV)),
        "ingest_settings": IngestSettings(),
        "mlflow": MLflowResource(),
        "artifacts": ArtifactsResource(),
        "embeddings": EmbeddingResource(),
        "llm": LLMResource(),
        "training": _training_resource(),
        "storefront": StorefrontResource(),
    }


def resources_under(
    root: str | os.PathLike[str],
    buyer_hash_key: str | None = None,
    max_reject_share: float = 0.05,
    tiny_pretrain_steps: int = 400,
    base_model: str | None = None,
) -> dict[str, dg.ConfigurableResource]:
    """Every resource with its files under one folder `root` (lake, warehouse, MLflow,
    artifacts, caches, the tiny base model): an isolated data folder for tests, benchmarks
    and throwaway runs. `tiny_pretrain_steps`: the tiny base's pretraining (tests: a few);
    `base_model`: a packaged model's name, a folder or "tiny" (default: SIMPERSONA_BASE_MODEL,
    else the tiny model: these folders are for tests and throwaway runs)."""
    from dagster_project.resources.training import TrainingLauncherResource

    root = Path(root)
    return {
        "lake": LakeResource(root=str(root / "lake")),
        "warehouse": WarehouseResource(
            root=str(root / "warehouse"), duckdb_path=str(root / "warehouse.duckdb")
        ),
        "buyer_hash": BuyerHashResource(key=buyer_hash_key),
        "ingest_settings": IngestSettings(max_reject_share=max_reject_share),
        "mlflow": MLflowResource(
            tracking_uri=f"sqlite:///{root / 'mlflow.db'}", artifact_root=str(root / "mlartifacts")
        ),
        "artifacts": ArtifactsResource(root=str(root / "artifacts")),
        "embeddings": EmbeddingResource(cache_dir=str(root / "embedding_cache")),
        "llm": LLMResource(cache_path=str(root / "llm_cache.sqlite")),
        "training": TrainingLauncherResource(
            tiny_model_dir=str(root / "models" / "tiny-base"),
            models_dir=str(root / "models"),
            base_model=base_model or os.environ.get("SIMPERSONA_BASE_MODEL") or "tiny",
            tiny_pretrain_steps=tiny_pretrain_steps,
        ),
        "storefront": StorefrontResource(),
    }


def _training_resource() -> dg.ConfigurableResource:
    # Imported here: the training module imports this package (its resources' defaults).
    from dagster_project.resources.training import TrainingLauncherResource

    return TrainingLauncherResource()


__all__ = [
    "ArtifactsResource",
    "EmbeddingResource",
    "BuyerHashResource",
    "IngestSettings",
    "LLMResource",
    "LakeResource",
    "MLflowResource",
    "WarehouseResource",
    "default_resources",
]
