"""Product-title embeddings with a persistent, multi-process-safe cache (paper App. A).

A buyer's product preference is the mean of the title embeddings of the products they viewed,
carted and purchased. This package turns a products frame (`schema.PRODUCTS_SCHEMA`) into one
vector per product and keeps every vector it computes, so that a nightly run embeds only the
titles it has never seen:

    config = EmbeddingConfig()                       # packaged all-MiniLM-L6-v2, CPU, 384-d
    embedder = load_embedder(config)                 # never downloads anything
    cache = EmbeddingCache(config.cache_dir)
    result = embed_products(warehouse.read_partition("products", shop), embedder, cache)
    result.embeddings  # shop_id, product_id, title_hash, embedding: Array(Float32, dim)

- `config`: `EmbeddingConfig` (model, device, batch size, cache folder, threads);
- `keys`: the embedded text (`normalize_text`) and its key (`text_hash`, `cache_key`);
- `model`: loading the sentence-transformers model offline, its id, `encode`;
- `cache`: `EmbeddingCache`, Parquet shards safe for many processes (`docs/embeddings.md`);
- `products`: `embed_products`, products frame -> one vector per product.

Nothing here imports torch or sentence-transformers until a model is actually loaded.
"""

from simpersona.embeddings.cache import CacheStats, EmbeddingCache, ModelCacheStats, model_slug
from simpersona.embeddings.config import DEFAULT_CACHE_DIR, PACKAGED_MODEL, EmbeddingConfig
from simpersona.embeddings.keys import CacheKey, cache_key, normalize_text, text_hash
from simpersona.embeddings.model import (
    Embedder,
    EmbeddingModelError,
    ModelNotFoundError,
    SentenceTransformerEmbedder,
    force_offline,
    load_embedder,
    model_fingerprint,
)
from simpersona.embeddings.products import EmbedResult, embed_products, embeddings_schema

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
