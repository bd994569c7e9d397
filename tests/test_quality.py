"""Codebook quality metrics (paper Table 1) and the k-means baseline, on hand-checked fixtures."""

from __future__ import annotations

import io
import math
import warnings

import numpy as np
import pytest
from sklearn.metrics import (
    adjusted_rand_score,
    calinski_harabasz_score,
    normalized_mutual_info_score,
)

from simpersona.personas import quality as q
from simpersona.personas import quality_table as qt
from simpersona.personas.kmeans_baseline import KMeansBaseline, fit_kmeans

# Twelve buyers on codes 0–3 of a K = 5 codebook (code 4 is dead).
#   code 0: A A A D D  -> purity 3/5; A–C 60 %, D 40 %          -> mixed
#   code 1: D D D C    -> purity 3/4; A–C 25 %, D 75 %          -> mixed at 20 %, not at 30 %
#   code 2: B          -> purity 1 (one member)
#   code 3: D E        -> purity 1/2; no A–C                     -> not mixed
CODES = np.array([0, 0, 0, 0, 0, 1, 1, 1, 1, 2, 3, 3])
STRATA = np.array(["A", "A", "A", "D", "D", "D", "D", "D", "C", "B", "D", "E"])
ENGAGE = np.array([0, 0, 2, 1, 1, 0, 1, 1, 1, 2, 0, 2])  # code 0: L 40 % H 20 %; code 3: L+H
EXPLORE = np.ones(12, dtype=int)  # all Medium
PURCHASE = np.array([2, 2, 2, 2, 2, 0, 0, 0, 2, 0, 1, 1])  # code 1: L 75 % H 25 %
BINS = np.column_stack([ENGAGE, EXPLORE, PURCHASE])


def _vectors(n: int = 12, d: int = 6, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, d)).astype(np.float32)


def test_purity_by_hand():
    per = q.code_purity(CODES, STRATA, k=5)
    np.testing.assert_allclose(per[:4], [3 / 5, 3 / 4, 1.0, 1 / 2])
    assert math.isnan(per[4])
    assert q.mean_stratum_purity(CODES, STRATA) == pytest.approx((0.6 + 0.75 + 1 + 0.5) / 4)
    assert q.mean_stratum_purity(CODES, STRATA, weighted=True) == pytest.approx(8 / 12)


def test_incompatible_mixing_by_hand():
    assert q.incompatible_mixing_code_ids(CODES, STRATA).tolist() == [0, 1]
    assert q.incompatible_mixing_codes(CODES, STRATA) == 2
    assert q.incompatible_mixing_codes(CODES, STRATA, threshold=0.3) == 1
    assert q.incompatible_mixing_codes(CODES, STRATA, threshold=0.5) == 0
    assert q.incompatible_mixing_codes(CODES, STRATA, min_size=5) == 1
    # E is neither side: code 3 (D + E) is never mixed.
    assert 3 not in q.incompatible_mixing_code_ids(CODES, STRATA, threshold=0.0)


def test_incoherence_by_hand():
    # engagement: codes 0 (5 buyers) and 3 (2 buyers) hold Low and High ≥ 10 % each.
    assert q.incoherent_share(CODES, ENGAGE) == pytest.approx(7 / 12)
    # at 25 %, code 0 (High 20 %) no longer counts.
    assert q.incoherent_share(CODES, ENGAGE, threshold=0.25) == pytest.approx(2 / 12)
    assert q.incoherent_share(CODES, EXPLORE) == 0.0
    # purchase: code 1 (Low 75 %, High 25 %).
    assert q.incoherent_share(CODES, PURCHASE) == pytest.approx(4 / 12)
    assert q.incoherent_share(CODES, PURCHASE, threshold=0.3) == 0.0
    assert q.incoherent_share(CODES, PURCHASE, threshold=0.0) == pytest.approx(4 / 12)
    by_head = q.incoherence_by_head(CODES, BINS)
    assert list(by_head) == ["engagement", "exploration", "purchase"]
    assert by_head["purchase"] == pytest.approx(4 / 12)
    # Low + Medium only (adjacent bins) is coherent.
    assert q.incoherent_share([0, 0, 0], [0, 1, 1], threshold=0.0) == 0.0


def test_usage_perplexity_and_dead_codes():
    u = q.codebook_usage(CODES, k=5)
    p = np.array([5, 4, 1, 2]) / 12
    h = -(p * np.log(p)).sum()
    assert u["perplexity"] == pytest.approx(math.exp(h))
    assert u["entropy_bits"] == pytest.approx(h / math.log(2))
    assert (u["k"], u["used_codes"], u["dead_codes"], u["singleton_codes"]) == (5, 4, 1, 1)
    uniform = q.codebook_usage(np.arange(8).repeat(3), k=8)
    assert uniform["perplexity"] == pytest.approx(8.0)
    assert q.codebook_usage([3, 3, 3], k=4)["perplexity"] == pytest.approx(1.0)
    with pytest.raises(ValueError):
        q.codebook_usage([0, 5], k=3)


def test_pairwise_cosine_matches_brute_force():
    x = _vectors().astype(np.float64)
    x[4] = 0.0  # a zero vector has cosine 0 with everything
    per = q.code_pairwise_cosine(CODES, x, k=5)
    norm = np.linalg.norm(x, axis=1, keepdims=True)
    u = np.divide(x, norm, out=np.zeros_like(x), where=norm > 0)
    expected = []
    for c in range(4):
        idx = np.flatnonzero(np.equal(CODES, c))
        sims = [float(u[i] @ u[j]) for i in idx for j in idx if i != j]
        expected.append(np.mean(sims) if sims else np.nan)
    np.testing.assert_allclose(per[:4], expected, rtol=1e-6, atol=1e-9)
    assert math.isnan(per[2]) and math.isnan(per[4])  # one member; no member
    # The mean skips the codes without a pair; weighted by size it uses 5, 4, 2.
    ok = [0, 1, 3]
    assert q.mean_pairwise_cosine(CODES, x) == pytest.approx(np.mean(per[ok]))
    w = np.array([5, 4, 2])
    assert q.mean_pairwise_cosine(CODES, x, weighted=True) == pytest.approx(
        np.sum(per[ok] * w) / w.sum()
    )
    two = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0], [2.0, 0.0]])
    np.testing.assert_allclose(q.code_pairwise_cosine([0, 0, 1, 1], two), [0.0, 1.0])


def test_calinski_harabasz_equals_sklearn():
    x = _vectors(200, 5, seed=1)
    codes = np.random.default_rng(2).integers(0, 7, 200)
    assert q.calinski_harabasz(codes, x) == pytest.approx(calinski_harabasz_score(x, codes))
    # sampled: the same as sklearn on the same seeded subset
    idx = np.sort(np.random.default_rng(5).choice(200, 120, replace=False))
    assert q.calinski_harabasz(codes, x, max_samples=120, seed=5) == pytest.approx(
        calinski_harabasz_score(x[idx], codes[idx])
    )
    assert math.isnan(q.calinski_harabasz(np.zeros(10, dtype=int), x[:10]))


def test_planted_agreement():
    types = np.array(["a", "a", "a", "b", "b", "b", "c", "c"])
    codes = np.array([0, 1, 1, 2, 3, 3, 4, 4])  # refines the types perfectly
    agree = q.planted_agreement(codes, types)
    assert agree["ari"] == pytest.approx(adjusted_rand_score(types, codes))
    assert agree["nmi"] == pytest.approx(normalized_mutual_info_score(types, codes))
    assert agree["ari"] < 1.0
    assert agree["majority_ari"] == pytest.approx(1.0)
    assert agree["majority_accuracy"] == 1.0
    assert q.majority_map(codes, types).tolist() == types.tolist()
    noisy = np.array([0, 0, 0, 0, 1, 1, 1, 1])  # code 0: a a a b -> a; code 1: b b c c -> b
    agree = q.planted_agreement(noisy, types)
    mapped = np.array(["a"] * 4 + ["b"] * 4)
    assert agree["majority_ari"] == pytest.approx(adjusted_rand_score(types, mapped))
    assert agree["majority_accuracy"] == pytest.approx(5 / 8)
    # buyers without a known type are left out
    part = q.planted_agreement(np.append(codes, [0, 4]), np.append(types, [None, np.nan]))
    assert part["n_known"] == 8 and part["majority_ari"] == pytest.approx(1.0)
    assert math.isnan(q.planted_agreement([0, 1], [None, None])["ari"])


def test_report_and_tables():
    x = _vectors()
    types = np.array(list("aaaabbbbcccc"))
    rep = q.codebook_report("toy", CODES, STRATA, BINS, x, planted=types, k=5)
    assert rep["stratum_purity_pct"] == pytest.approx(100 * 2.85 / 4)
    assert rep["incompatible_mixing_codes"] == 2
    assert rep["incoherent_engagement_pct"] == pytest.approx(100 * 7 / 12)
    assert rep["incoherent_any_engagement_pct"] == pytest.approx(100 * 7 / 12)
    assert rep["dead_codes"] == 1 and rep["used_codes"] == 4
    assert rep["calinski_harabasz"] == pytest.approx(calinski_harabasz_score(x, CODES))
    assert "planted_majority_ari" in rep
    assert all(not isinstance(v, dict | list) for v in rep.values())  # flat
    other = q.codebook_report("other", np.zeros(12, dtype=int), STRATA, BINS, x, k=5)
    md = qt.side_by_side({"toy": rep, "other": other})
    assert md.splitlines()[0] == "| metric | toy | other | paper k-means | paper VQ-VAE |"
    assert "| mean stratum purity (over codes) | 71.2 % | 50.0 % | 78.9 % | 84.5 % |" in md
    assert "173.8" in md and "206.5" in md
    assert "ARI vs planted types" in md
    from rich.console import Console

    buf = io.StringIO()
    qt.print_reports({"toy": rep}, console=Console(file=buf, width=160))
    assert "Calinski" in buf.getvalue()


def test_calinski_harabasz_on_behavioural_scalars():
    rng = np.random.default_rng(0)
    codes = np.repeat(np.arange(4), 30)
    x = rng.normal(size=(120, 403)).astype(np.float32)
    x[:, :16] += 3.0 * codes[:, None]  # codes separate the scalars, not the rest
    rep = q.codebook_report("b", codes, ["D"] * 120, np.ones((120, 3), dtype=int), x)
    assert rep["calinski_harabasz_behaviour"] == pytest.approx(
        calinski_harabasz_score(x[:, :16], codes), rel=1e-5
    )
    assert rep["calinski_harabasz"] == pytest.approx(calinski_harabasz_score(x, codes), rel=1e-5)
    assert rep["calinski_harabasz_behaviour"] > 10 * rep["calinski_harabasz"]
    assert "16 behavioural scalars" in qt.side_by_side({"b": rep})
    # only 403-d buyer vectors have the scalar block
    toy = q.codebook_report("toy", CODES, STRATA, BINS, _vectors(), k=5)
    assert "calinski_harabasz_behaviour" not in toy


def test_group_pure_codes_keep_groups_apart_and_price_purity():
    # Four tight blobs; the group label cuts across them (blobs 0+1 vs 2+3 are groups by
    # geometry, but the labels split every blob in half).
    rng = np.random.default_rng(0)
    blob = np.repeat(np.arange(4), 50)
    x = rng.normal(scale=0.1, size=(200, 5)) + 10.0 * np.eye(5)[blob]
    groups = np.where(np.arange(200) % 2 == 0, "low", "high")
    codes = q.group_pure_codes(x, groups, k=8, seed=0)
    assert codes.shape == (200,) and set(np.unique(codes)) <= set(range(8))
    for c in np.unique(codes):  # no code mixes the groups
        assert np.unique(groups[codes == c]).size == 1
    assert np.unique(codes).size == 8
    # 4 codes per group find its four blobs: as tight as 4 blob codes, far above random codes
    by_blob = calinski_harabasz_score(x, blob)
    assert calinski_harabasz_score(x, codes) > 0.4 * by_blob
    # with one code per group the purity constraint costs nearly all the geometry
    two = q.group_pure_codes(x, groups, k=2)
    assert np.unique(two).size == 2 and calinski_harabasz_score(x, two) < 1.0
    # identical buyers (as on real logs) get no codes of their own: at most one per distinct
    # vector, and k-means never warns of duplicate points
    dup = np.repeat(np.eye(3), 20, axis=0)  # 3 distinct vectors, 60 buyers, one group
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        same = q.group_pure_codes(dup, ["D"] * 60, k=10)
    assert np.unique(same).size == 3
    with pytest.raises(ValueError, match="3 groups do not fit in 2 codes"):
        q.group_pure_codes(x, np.arange(200) % 3, k=2)


def test_report_edge_cases():
    x = _vectors(3)
    rep = q.codebook_report(
        "one", [0, 0, 0], ["A", "D", "D"], np.array([[0, 0, 0], [2, 1, 0], [1, 1, 0]]), x, k=4
    )
    assert rep["dead_codes"] == 3
    assert math.isnan(rep["calinski_harabasz"])  # one code: undefined
    assert rep["incompatible_mixing_codes"] == 1
    singles = q.codebook_report("singles", [0, 1, 2], ["A", "D", "D"], np.zeros((3, 3)), x)
    assert math.isnan(singles["pairwise_cosine"])  # no code has a pair
    assert math.isnan(singles["calinski_harabasz"])  # as many codes as buyers
    assert singles["stratum_purity_pct"] == 100.0
    with pytest.raises(ValueError):
        q.codebook_report("bad", [0, 1], ["A"], np.zeros((2, 3)), x[:2])


def _blobs(n_per: int = 60, seed: int = 0):
    rng = np.random.default_rng(seed)
    centers = rng.normal(scale=20.0, size=(5, 16))
    labels = np.repeat(np.arange(5), n_per)
    x = centers[labels] + rng.normal(scale=0.5, size=(labels.size, 16))
    return x.astype(np.float32), labels


def test_kmeans_recovers_blobs_and_round_trips(tmp_path):
    x, labels = _blobs()
    model = fit_kmeans(x, k=5, seed=0, batch_size=128)
    codes = model.assign(x)
    assert adjusted_rand_score(labels, codes) > 0.99
    assert model.k == 5 and model.note == ""
    # nearest centre, as a brute-force check
    d = ((x[:, None, :] - model.centers[None]) ** 2).sum(-1)
    assert (codes == d.argmin(1)).all()
    path = model.save(tmp_path / "km")
    assert path.suffix == ".npz"
    loaded = KMeansBaseline.load(path)
    np.testing.assert_array_equal(loaded.centers, model.centers)
    assert loaded.requested_k == 5 and loaded.params["init"] == "k-means++"
    assert (loaded.assign(x) == codes).all()
    # quality of a perfect split of the blobs
    rep = q.codebook_report("km", codes, np.array(["A"] * x.shape[0]), np.ones((300, 3)), x)
    assert rep["pairwise_cosine"] > 0.9


def test_kmeans_fewer_buyers_than_k():
    x, _ = _blobs(n_per=2)
    with pytest.warns(UserWarning, match="k lowered from 256 to 10"):
        model = fit_kmeans(x, k=256, seed=1)
    assert model.k == 10 and model.requested_k == 256 and "lowered" in model.note
    assert sorted(set(model.assign(x).tolist())) == list(range(10))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        dup = fit_kmeans(np.zeros((4, 3)), k=8)
    assert dup.k == 1


def test_purity_ceilings_with_fewer_codes_than_groups():
    """A small K (chosen from a small training set) used to crash the codebook report
    ("34 groups do not fit in 16 codes"); a ceiling that cannot exist is now left out."""
    from simpersona.personas.quality import purity_ceilings, purity_ceilings_line

    rng = np.random.default_rng(0)
    strata = np.array(list("ABCD") * 50)
    bins = rng.integers(0, 3, size=(200, 3))  # strata x bins: up to 108 groups
    x = rng.normal(size=(200, 8))
    small = purity_ceilings(x, strata, bins, k=8)
    assert set(small) == {"ch_pure_strata"} and small["ch_pure_strata"] > 0
    assert "keep strata apart" in purity_ceilings_line(small)
    assert purity_ceilings(x, strata, bins, k=2) == {}
    assert "fewer codes than behaviour groups" in purity_ceilings_line({})
    assert set(purity_ceilings(x, strata, bins, k=200)) == {"ch_pure_strata", "ch_pure_strata_bins"}
    # rendered in quality_table.py, still importable from quality.py
    from simpersona.personas import quality_table

    assert purity_ceilings_line is quality_table.purity_ceilings_line
