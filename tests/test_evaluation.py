"""Evaluation functions (docs/evaluation.md): ARA pairings, separation statistics against scipy and hand
computations, instruction tasks derived from sessions (generated shop included), ablation
tables."""

from __future__ import annotations

import itertools
import math
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from scipy import stats

from simpersona.agent.session import SessionResult, StepRecord
from simpersona.evaluation.ablation import (
    error_distribution,
    error_distribution_stats,
    outcome_distribution,
    paired_error_test,
    per_shop_rates,
    token_ablation,
)
from simpersona.evaluation.ara import ARAConfig, action_rate_alignment, ara_cells, ara_value
from simpersona.evaluation.bootstrap import BootstrapConfig
from simpersona.evaluation.instruction import (
    InstructionConfig,
    TaskStep,
    derive_tasks,
    repeat_tasks,
    required_steps,
    shop_task_quota,
    task_from_outline,
    task_quotas,
    tasks_frame,
    tasks_from_sessions,
)
from simpersona.evaluation.instruction_check import (
    calibration,
    check_result,
    instruction_figures,
    instruction_table,
    score_runs,
    session_flags,
)
from simpersona.evaluation.separation import (
    agent_scores,
    cohens_d,
    gradient,
    kruskal_wallis,
    permutation_pvalue,
    purchase_funnel,
    separation_figures,
    separation_row,
    separation_table,
    welch_t,
)
from simpersona.evaluation.tables import real_buyer_outcomes, token_bins, with_sampled_tokens
from simpersona.traces.outline import SessionEvent, SessionOutline


# ---- fixtures ------------------------------------------------------------------------------
def _buyers(shop: str, token: int, spec: list[tuple[str, bool, bool]]) -> list[dict]:
    """spec: (stratum, atc, purchase) per buyer."""
    return [
        {"shop_id": shop, "buyer_id": f"{shop}-{token}-{i}", "token": token, "stratum": s,
         "atc": a, "checkout": p, "purchase": p}
        for i, (s, a, p) in enumerate(spec)
    ]  # fmt: skip


def _agents(shop: str, token: int, pairs: list[tuple[bool, bool]], policy: str = "markov"):
    return [
        {"agent_id": f"{shop}-{token}-{i}", "shop_id": shop, "policy": policy, "token": token,
         "stratum": "A", "intent": "buy", "n_actions": 5, "add_to_cart": a,
         "checkout_reached": p, "purchase": p, "outcome": "goal_reached", "error": None,
         "steps": 5, "seconds": 1.0, "self_reported_done": None}
        for i, (a, p) in enumerate(pairs)
    ]  # fmt: skip


A1, C0, D0 = ("A", True, True), ("C", True, False), ("D", False, False)


@pytest.fixture
def two_shops():
    """2 shops × 3 tokens. Real rates (ATC, PUR) and modal strata:
    s1: t0 (1, .75) A; t1 (.5, 0) C (C/D tie → C); t2 (0, 0) D.
    s2: t0 (.5, .5) A (A/D tie → A); t1 (1, 0) C; t2 (.25, 0) D.
    Agent rates: s1: t0 (1, .5), t1 (.5, 0), t2 (0, 0); s2: t0 (.5, .5), t1 (.5, 0), t2 (0, 0).
    """
    real = (
        _buyers("s1", 0, [A1, A1, A1, C0]) + _buyers("s1", 1, [C0, C0, D0, D0])
        + _buyers("s1", 2, [D0] * 4) + _buyers("s2", 0, [A1, A1, D0, D0])
        + _buyers("s2", 1, [C0] * 4) + _buyers("s2", 2, [C0, D0, D0, D0])
    )  # fmt: skip
    agents = (
        _agents("s1", 0, [(True, True), (True, False)]) + _agents("s1", 1, [(True, False),
        (False, False)]) + _agents("s1", 2, [(False, False)] * 2)
        + _agents("s2", 0, [(True, True), (False, False)]) + _agents("s2", 1, [(True, False),
        (False, False)]) + _agents("s2", 2, [(False, False)] * 2)
    )  # fmt: skip
    return pl.DataFrame(real), pl.DataFrame(agents)


# ---- ARA -----------------------------------------------------------------------------------
def test_ara_identical_rates_is_one_and_opposite_is_zero():
    assert ara_value(0.3, 0.7, 0.3, 0.7) == 1.0
    assert ara_value(1.0, 1.0, 0.0, 0.0) == 0.0
    real = pl.DataFrame(_buyers("s", 0, [A1] * 5) + _buyers("s", 1, [D0] * 5))
    same = pl.DataFrame(_agents("s", 0, [(True, True)] * 3) + _agents("s", 1, [(False, False)]))
    flip = pl.DataFrame(_agents("s", 0, [(False, False)] * 3) + _agents("s", 1, [(True, True)]))
    _, _, fig_same = action_rate_alignment(real, same)
    _, _, fig_flip = action_rate_alignment(real, flip)
    assert fig_same["ara_correct"] == 1.0
    assert fig_flip["ara_correct"] == 0.0
    # Each token's agents against the other token's buyers: opposite → 0, and flipped → 1.
    assert fig_same["ara_all_mismatch"] == 0.0 and fig_flip["ara_all_mismatch"] == 1.0


def test_ara_pairings_by_hand(two_shops):
    real, agents = two_shops
    cfg = ARAConfig(min_real=1)
    cells, table, fig = action_rate_alignment(real, agents, cfg)
    assert cells.height == 6
    got = {(r["shop_id"], r["token"]): r for r in cells.iter_rows(named=True)}
    # Strata: modal stratum of the token's buyers on that shop, ties to the earlier letter.
    assert [got[("s1", t)]["stratum"] for t in range(3)] == ["A", "C", "D"]
    assert [got[("s2", t)]["stratum"] for t in range(3)] == ["A", "C", "D"]
    # Correct: s1 t0 = .5·(1 − 0) + .5·(1 − .25) = .875; s2 t1 = .5·.5 + .5·1 = .75.
    assert got[("s1", 0)]["ara_correct"] == pytest.approx(0.875)
    assert got[("s2", 1)]["ara_correct"] == pytest.approx(0.75)
    assert got[("s2", 2)]["ara_correct"] == pytest.approx(0.875)
    # All-mismatch, s1 t0 agents (1, .5) vs t1 (.5, 0): .5·.5 + .5·.5 = .5; vs t2 (0, 0):
    # .5·0 + .5·.5 = .25 → mean .375.
    assert got[("s1", 0)]["ara_all"] == pytest.approx(0.375)
    assert got[("s1", 0)]["n_mismatch"] == 2
    # s2 t2 agents (0, 0) vs t0 (.5, .5): .5; vs t1 (1, 0): .5·0 + .5·1 = .5 → .5.
    assert got[("s2", 2)]["ara_all"] == pytest.approx(0.5)
    # s1 t1 agents (.5, 0) vs t0 (1, .75): .5·.5 + .5·.25 = .375; vs t2 (0,0): .75 → .5625.
    assert got[("s1", 1)]["ara_all"] == pytest.approx(0.5625)
    # Per stratum: A (.875 + 1)/2, C (1 + .75)/2, D (1 + .875)/2; stratified = their mean.
    rows = {r["stratum"]: r for r in table.iter_rows(named=True)}
    assert rows["A"]["ara_correct"] == pytest.approx(0.9375)
    assert rows["C"]["ara_correct"] == pytest.approx(0.875)
    assert rows["D"]["ara_correct"] == pytest.approx(0.9375)
    assert fig["ara_correct"] == pytest.approx((0.9375 + 0.875 + 0.9375) / 3)
    assert "B" not in rows  # no cells → no row, and not in the stratified mean
    strat_all = np.mean([rows[s]["ara_all"] for s in "ACD"])
    assert fig["ara_all_mismatch"] == pytest.approx(strat_all)
    assert fig["ara_correct"] > fig["ara_all_mismatch"]


def test_ara_random_mismatch_is_seeded_and_a_real_other_token(two_shops):
    real, agents = two_shops
    a = ara_cells(real, agents, ARAConfig(min_real=1, seed=7))
    b = ara_cells(real, agents, ARAConfig(min_real=1, seed=7))
    assert a.equals(b)
    assert (a["rand_token"] != a["token"]).all()
    rates = {(r["shop_id"], r["token"]): (r["atc_real"], r["pur_real"]) for r in
             a.iter_rows(named=True)}  # fmt: skip
    for r in a.iter_rows(named=True):
        ar, pr = rates[(r["shop_id"], r["rand_token"])]
        assert r["ara_rand"] == pytest.approx(ara_value(ar, pr, r["atc_agent"], r["pur_agent"]))
    draws = {
        tuple(ara_cells(real, agents, ARAConfig(min_real=1, seed=s))["rand_token"].to_list())
        for s in range(12)
    }
    assert len(draws) > 1  # the seed matters


def test_ara_thresholds_checkout_variant_and_nopersona(two_shops):
    real, agents = two_shops
    assert ara_cells(real, agents, ARAConfig(min_real=5)).height == 0
    _, table, fig = action_rate_alignment(real, agents, ARAConfig(min_real=5))
    assert math.isnan(fig["ara_correct"]) and fig["ara_cells"] == 0
    assert ara_cells(real, agents, ARAConfig(min_real=1, min_agents=3)).height == 0
    # PUR from checkouts: the agents' checkout_reached against the buyers' checkout flag.
    ag = agents.with_columns(pl.lit(False).alias("purchase"))
    c = ara_cells(real, ag, ARAConfig(min_real=1, pur="checkout"))
    assert c.filter((pl.col("shop_id") == "s1") & (pl.col("token") == 0))["pur_agent"][0] == 0.5
    # No-persona agents carry no token; the sampled token pairs them.
    nop = agents.with_columns(
        pl.col("token").alias("sampled_token"), pl.lit(None, pl.Int64).alias("token")
    )
    assert ara_cells(real, nop, ARAConfig(min_real=1)).height == 6
    # ... recovered from the counterpart buyer the agent stands for.
    nop2 = agents.with_columns(
        pl.lit(None, pl.Int64).alias("token"),
        (pl.col("shop_id") + "-" + pl.col("token").cast(pl.Utf8) + "-0").alias(
            "counterpart_buyer_id"
        ),
    )
    filled = with_sampled_tokens(nop2, real)
    assert filled["sampled_token"].to_list() == agents["token"].to_list()
    assert ara_cells(real, filled, ARAConfig(min_real=1)).equals(
        ara_cells(real, agents, ARAConfig(min_real=1))
    )
    with pytest.raises(ValueError, match="agent results: missing column"):
        ara_cells(real, agents.drop("add_to_cart"))


def test_ara_within_stratum_variant(two_shops):
    real, agents = two_shops
    cells = ara_cells(real, agents, ARAConfig(min_real=1, stratum_of="agent"))
    # Every agent says stratum A: cells only where the token has A buyers (s1 t0, s2 t0).
    assert sorted(zip(cells["shop_id"], cells["token"], strict=True)) == [("s1", 0), ("s2", 0)]
    assert cells["n_mismatch"].to_list() == [0, 0]  # no other token has A buyers there


def test_real_buyer_outcomes_and_token_bins():
    assign = pl.DataFrame({
        "shop_id": ["s"] * 5, "buyer_id": list("abcde"), "token": [1, 1, 1, 2, 2],
        "stratum": ["A", "C", "D", "D", "D"], "engagement_bin": [0, 2, 2, 1, 0],
        "exploration_bin": [1, 1, 0, 2, 2], "purchase_bin": [2, 1, 0, 0, 1]})  # fmt: skip
    feats = pl.DataFrame({
        "shop_id": ["s"] * 5, "buyer_id": list("abcde"), "atc_sessions": [2, 1, 0, 0, 0],
        "checkout_sessions": [1, 0, 0, 0, 0], "purchase_sessions": [1, 0, 0, 0, 0]})  # fmt: skip
    real = real_buyer_outcomes(assign, feats)
    assert real.sort("buyer_id")["atc"].to_list() == [True, True, False, False, False]
    assert real.sort("buyer_id")["purchase"].to_list() == [True, False, False, False, False]
    with pytest.raises(ValueError, match="no buyer features.*buyer 'e'"):
        real_buyer_outcomes(assign, feats.head(4))
    bins = token_bins(assign)
    t1 = bins.filter(pl.col("token") == 1).row(0, named=True)
    assert (t1["engagement_bin"], t1["exploration_bin"], t1["n_buyers"]) == (2, 1, 3)
    t2 = bins.filter(pl.col("token") == 2).row(0, named=True)
    assert (t2["engagement_bin"], t2["purchase_bin"]) == (0, 0)  # ties → the lower bin


# ---- separation statistics -------------------------------------------------------------------
def test_cohens_d_welch_and_kruskal_by_hand():
    assert cohens_d([1, 2, 3], [4, 5, 6]) == pytest.approx(3.0)
    # Unequal sizes: high var = (4 + 0 + 1 + 1) / 3 = 2; pooled var = (2·1 + 3·2) / 5 = 1.6.
    assert cohens_d([1, 2, 3], [2, 4, 5, 5]) == pytest.approx((4 - 2) / math.sqrt(1.6))
    low, high = [1.0, 2.0, 4.0, 3.5], [3.0, 6.0, 5.5, 7.0, 9.0]
    t, p = welch_t(low, high)
    m1, m2, v1, v2 = np.mean(low), np.mean(high), np.var(low, ddof=1), np.var(high, ddof=1)
    se2 = v1 / 4 + v2 / 5
    t_hand = (m2 - m1) / math.sqrt(se2)
    df = se2**2 / ((v1 / 4) ** 2 / 3 + (v2 / 5) ** 2 / 4)
    assert t == pytest.approx(t_hand)
    assert p == pytest.approx(2 * stats.t.sf(abs(t_hand), df))
    assert p == pytest.approx(stats.ttest_ind(high, low, equal_var=False).pvalue)
    groups = [[1.0, 4.0, 2.5], [3.0, 6.0], [5.0, 8.0, 7.0, 9.0]]  # no ties
    h, pk = kruskal_wallis(groups)
    allv = np.concatenate(groups)
    ranks = stats.rankdata(allv)
    n, idx, acc = len(allv), 0, 0.0
    for g in groups:
        acc += ranks[idx : idx + len(g)].sum() ** 2 / len(g)
        idx += len(g)
    h_hand = 12 / (n * (n + 1)) * acc - 3 * (n + 1)
    assert h == pytest.approx(h_hand)
    assert pk == pytest.approx(stats.chi2.sf(h_hand, 2))
    assert (h, pk) == pytest.approx(tuple(stats.kruskal(*groups)))


def test_permutation_p_close_to_exact_and_scipy():
    bins = np.array([0, 0, 0, 1, 1, 1, 2, 2, 2])
    scores = np.array([0.5, 1.2, 0.1, 1.0, 2.2, 0.7, 2.0, 1.9, 3.1])
    obs = abs(gradient(scores, bins))
    perms = np.array(list(itertools.permutations(scores)))  # all 9! = 362,880 orderings
    xc = bins - bins.mean()
    exact = np.mean(np.abs((perms - scores.mean()) @ xc / (xc @ xc)) >= obs - 1e-12)
    p = permutation_pvalue(scores, bins, n_resamples=10_000, seed=1)
    assert 0 < exact < 0.05
    assert p == pytest.approx(exact, abs=0.006)  # MC error of 10,000 shuffles ~0.0015
    sp = stats.permutation_test(
        (scores,), lambda y: gradient(y, bins), permutation_type="pairings",
        n_resamples=10_000, random_state=1,
    ).pvalue  # fmt: skip
    assert p == pytest.approx(sp, abs=0.006)
    assert permutation_pvalue(scores, bins, 2_000, seed=3) == permutation_pvalue(
        scores, bins, 2_000, seed=3
    )
    assert math.isnan(permutation_pvalue(np.ones(9), bins))


def test_degenerate_inputs_give_nan_with_a_reason():
    bins = np.array([0, 0, 1, 1])
    row = separation_row("purchase", np.array([1.0, 2.0, 3.0, 4.0]), bins)
    assert math.isnan(row["cohens_d"]) and math.isnan(row["welch_t"])
    assert "no agents in the High bin" in row["reason"]
    assert not math.isnan(row["kw_h"])  # Low vs Medium still tested
    flat = separation_row("engagement", np.array([3.0] * 6), np.array([0, 0, 1, 1, 2, 2]))
    assert math.isnan(flat["cohens_d"]) and math.isnan(flat["kw_p"])
    assert math.isnan(flat["perm_p"]) and "zero variance" in flat["reason"]
    empty = separation_row("exploration", np.array([]), np.array([], dtype=int))
    assert "no agents" in empty["reason"] and math.isnan(empty["perm_p"])


def _binned_agents(n: int = 300, seed: int = 0) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Tokens 0–5, purchase bin = token // 2; conversion rises with the bin."""
    rng = np.random.default_rng(seed)
    tok = rng.integers(0, 6, n)
    pbin = tok // 2
    atc = rng.random(n) < np.array([0.02, 0.35, 0.8])[pbin]
    co = atc & (rng.random(n) < np.array([0.2, 0.4, 0.6])[pbin])
    agents = pl.DataFrame({
        "agent_id": [f"a{i}" for i in range(n)], "shop_id": "s", "policy": "markov",
        "token": tok, "stratum": "A", "n_actions": rng.poisson(3 + pbin),
        "add_to_cart": atc, "checkout_reached": co, "purchase": co & (rng.random(n) < 0.8),
        "outcome": "goal_reached"})  # fmt: skip
    bins = pl.DataFrame(
        {
            "token": range(6),
            "engagement_bin": [0, 0, 1, 1, 2, 2],
            "exploration_bin": [0] * 6,
            "purchase_bin": [0, 0, 1, 1, 2, 2],
        }
    )
    return agents, bins


def test_separation_table_and_funnel():
    agents, bins = _binned_agents()
    table = separation_table(agents, bins)
    rows = {r["head"]: r for r in table.iter_rows(named=True)}
    pur = rows["purchase"]
    assert pur["mean_low"] < pur["mean_medium"] < pur["mean_high"]
    assert pur["cohens_d"] > 1.5 and pur["perm_p"] < 0.001 and pur["kw_p"] < 1e-6
    s = agent_scores(agents).join(bins, on="token")
    lo = s.filter(pl.col("purchase_bin") == 0)["purchase_score"].to_numpy()
    hi = s.filter(pl.col("purchase_bin") == 2)["purchase_score"].to_numpy()
    assert pur["cohens_d"] == pytest.approx(cohens_d(lo, hi))
    assert pur["welch_p"] == pytest.approx(stats.ttest_ind(hi, lo, equal_var=False).pvalue)
    assert rows["engagement"]["cohens_d"] > 0
    assert "no exploration columns" in rows["exploration"]["reason"]
    funnel = purchase_funnel(agents, bins)
    assert funnel["purchase_bin"].to_list() == ["Low", "Medium", "High"]
    high = s.filter(pl.col("purchase_bin") == 2)
    assert funnel["atc_rate"][2] == pytest.approx(high["add_to_cart"].mean())
    assert funnel["checkout_rate"][2] == pytest.approx(high["checkout_reached"].mean())
    figs = separation_figures(table, funnel)
    assert figs["purchase_cohens_d"] == pur["cohens_d"] and "funnel_atc_rate_high" in figs
    # Exploration from the agent's counts when the runner records them.
    ex = agents.with_columns(n_product_views=pl.col("n_actions"), n_searches=pl.lit(1),
                             n_collection_views=pl.lit(0))  # fmt: skip
    assert (
        separation_table(ex, bins.with_columns(exploration_bin=pl.col("purchase_bin")))["reason"][2]
        is None
    )


# ---- instruction following ------------------------------------------------------------------
def _ev(t: str, pid: str | None = None, q: str | None = None, col: str | None = None,
        n: int | None = None):  # fmt: skip
    return SessionEvent(t, product_id=pid, product_title=f"Title {pid}" if pid else None,
                        search_query=q, collection_id=col, collection_title=col,
                        quantity=n)  # fmt: skip


def _outline(sid: str, events: list[SessionEvent]) -> SessionOutline:
    return SessionOutline("shop", f"b-{sid}", sid, tuple(events), stratum="A", token=3)


def _sessions() -> list[SessionOutline]:
    cart = [_ev("page_view"), _ev("search", q="red shoes"), _ev("product_view", "p1"),
            _ev("add_to_cart", "p1")]  # fmt: skip
    checkout = [
        _ev("collection_view", col="Shoes"),
        _ev("product_view", "p2"),
        _ev("product_view", "p2"),
        _ev("add_to_cart", "p2"),
        _ev("checkout_started"),
    ]
    purchase = [
        _ev("search", q="hat"),
        _ev("product_view", "p3"),
        _ev("add_to_cart", "p3"),
        _ev("checkout_started"),
        _ev("checkout_completed"),
        _ev("product_view", "p9"),
    ]
    short = [_ev("product_view", "p4"), _ev("add_to_cart", "p4")]
    long = [e for i in range(15) for e in (_ev("product_view", f"q{i}"), _ev("search", q=f"s{i}"))]
    long += [_ev("add_to_cart", "q14")]
    browse = [_ev("search", q="x"), _ev("product_view", "p5"), _ev("product_view", "p6")]
    return [
        _outline("cart", cart),
        _outline("co", checkout),
        _outline("pur", purchase),
        _outline("short", short),
        _outline("long", long),
        _outline("browse", browse),
    ]


def test_tasks_from_outlines():
    tasks = derive_tasks(_sessions())
    assert [t.kind for t in tasks] == ["cart", "checkout", "purchase"]
    cart, co, pur = tasks
    assert cart.steps == ('Search for "red shoes"', 'View the product "Title p1"',
                          'Add "Title p1" to the cart')  # fmt: skip
    assert co.n_actions == 4  # the repeated product view counts once
    assert pur.steps[-1].startswith("Complete the purchase") and pur.n_actions == 5
    assert all(3 <= t.n_actions <= 27 for t in tasks)
    assert cart.product_id == "p1" and cart.target == "add_to_cart"
    assert cart.goal().target == "browse"  # the agent ends it itself: a self-report
    g = cart.goal(stop_at_target=True)
    assert (g.target, g.product_id) == ("add_to_cart", "p1")
    assert pur.goal(stop_at_target=True).target == "purchase"
    assert co.goal(stop_at_target=True).target == "browse"
    assert "1. Search for" in cart.text and cart.text.endswith("Then end the session.")
    assert task_from_outline(_sessions()[3]) is None  # 2 steps
    assert task_from_outline(_sessions()[4]) is None  # 31 steps
    assert task_from_outline(_sessions()[4], max_actions=40).n_actions == 31
    assert tasks_frame(tasks)["n_actions"].to_list() == [3, 4, 5]
    # The steps as data, in the task's order: what the checker looks for.
    assert cart.required == (
        TaskStep("search", search_query="red shoes"),
        TaskStep("product_view", product_id="p1"),
        TaskStep("add_to_cart", product_id="p1", quantity=1),
    )
    assert [s.kind for s in pur.required] == [
        "search", "product_view", "add_to_cart", "checkout_started", "checkout_completed"]  # fmt: skip
    assert co.required[0] == TaskStep("collection_view", collection_id="Shoes")
    assert all(len(t.required) == t.n_actions for t in tasks) and cart.quantity == 1
    frame = tasks_frame(tasks)
    assert frame["required_steps"].list.len().to_list() == [3, 4, 5]
    assert frame["required_steps"][0][2]["quantity"] == 1


def test_required_steps_name_quantities_and_stay_feasible():
    events = [
        _ev("search", q="Red  Shoes"),
        _ev("remove_from_cart", "p0"),  # carted in an earlier session: not doable here
        _ev("product_view", "p1"),
        _ev("add_to_cart", "p1", n=1),
        _ev("add_to_cart", "p1", n=2),  # consecutive adds of one product: one step, 3 units
        _ev("product_view", "p2"),
        _ev("add_to_cart", "p2", n=2),
        _ev("remove_from_cart", "p2", n=1),
        _ev("add_to_cart", "p1", n=150),  # capped by the store's 99 per line
    ]
    steps, labels, cart = required_steps(events)
    assert [s.kind for s in steps] == ["search", "product_view", "add_to_cart", "product_view",
                                       "add_to_cart", "remove_from_cart", "add_to_cart"]  # fmt: skip
    assert labels[2] == 'Add 3 × "Title p1" to the cart'
    assert labels[4] == 'Add 2 × "Title p2" to the cart'
    assert labels[5] == 'Remove 1 × "Title p2" from the cart'  # one of two stays in the cart
    assert steps[6].quantity == 96 and cart == {"p1": 99, "p2": 1}
    t = task_from_outline(_outline("q", events))
    assert t is not None and t.kind == "cart" and t.product_id == "p1" and t.quantity == 99
    assert 'Add 3 × "Title p1" to the cart' in t.text and "Title p0" not in t.text
    _, labels, _ = required_steps([_ev("add_to_cart", "p3"), _ev("remove_from_cart", "p3")])
    assert labels == ['Add "Title p3" to the cart', 'Remove "Title p3" from the cart']
    # A checkout the store would refuse (the cart is empty by then) gives no task.
    empty = [_ev("product_view", "p1"), _ev("add_to_cart", "p1"), _ev("remove_from_cart", "p1"),
             _ev("checkout_started")]  # fmt: skip
    assert required_steps(empty) is None and task_from_outline(_outline("e", empty)) is None


@pytest.fixture(scope="module")
def generated_sessions(tmp_path_factory):
    from simpersona.features.enrich import enrich_sessions
    from simpersona.ingest.sessionize import sessionize
    from simpersona.synth import GeneratorConfig, generate_lake

    root = tmp_path_factory.mktemp("evaluation") / "lake"
    generate_lake(
        root, GeneratorConfig(n_shops=1, n_buyers=1000, seed=5), root.parent / "truth.parquet",
        progress=False,
    )  # fmt: skip

    def read(t: str) -> pl.DataFrame:
        return pl.read_parquet(str(Path(root) / t / "**" / "*.parquet"), hive_partitioning=False)

    events = sessionize(read("events").drop("shop", "date", strict=False))
    return enrich_sessions(events, read("products"), read("collections"))


def test_tasks_from_generated_sessions_are_deterministic(generated_sessions):
    cfg = InstructionConfig(n_tasks=20, seed=0)
    a = tasks_from_sessions(generated_sessions, cfg)
    b = tasks_from_sessions(generated_sessions.sample(fraction=1.0, shuffle=True, seed=4), cfg)
    assert len(a) == 20
    assert [t.to_dict() for t in a] == [t.to_dict() for t in b]  # input order does not matter
    assert all(3 <= t.n_actions <= 27 for t in a)
    assert {t.kind for t in a} == {"cart", "checkout", "purchase"}
    assert all(t.product_id for t in a)
    c = tasks_from_sessions(generated_sessions, InstructionConfig(n_tasks=20, seed=1))
    assert [t.task_id for t in c] != [t.task_id for t in a]  # the seed picks other sessions
    reps = repeat_tasks(a, 10)
    assert len(reps) == 200 and reps == repeat_tasks(a, 10)
    assert len({s for _, _, s in reps}) == 200
    # Every task is doable: a run that does exactly its steps passes the checker.
    for t in a:
        assert len(t.required) == t.n_actions and t.quantity >= 1
        assert check_result(t, {"event_trace": _trace(t.required)})["success"], t.text


def _event(step: TaskStep) -> dict:
    """The storefront event a step gives (the shape of `event_trace` entries)."""
    return {"event_type": step.kind, "product_id": step.product_id,
            "collection_id": step.collection_id, "search_query": step.search_query,
            "quantity": step.quantity}  # fmt: skip


def _trace(steps, page_views: bool = False) -> list[dict]:
    out = []
    for s in steps:
        if page_views:
            out.append({"event_type": "page_view"})
        out.append(_event(s))
    return out


def _runs(tasks, with_trace: bool = True):
    """Per task 4 runs: (add_to_cart, checkout, purchase, claimed); a run's trace does the
    task's steps up to where it stopped (no carting: no add steps)."""
    plan = {
        "cart": [(1, 0, 0, 1), (1, 0, 0, 1), (0, 0, 0, 1), (0, 0, 0, 0)],
        "checkout": [(1, 1, 0, 1), (1, 0, 0, 1), (1, 0, 0, 0), (0, 0, 0, 0)],
        "purchase": [(1, 1, 1, 1), (1, 1, 0, 1), (1, 1, 0, 0), (1, 0, 0, 1)],
    }
    rows = []
    for t in tasks:
        for i, (a, c, p, claim) in enumerate(plan[t.kind]):
            allowed = {"add_to_cart": a, "remove_from_cart": a, "checkout_started": c,
                       "checkout_completed": p}  # fmt: skip
            row = {
                "task_id": t.task_id,
                "add_to_cart": bool(a),
                "checkout_reached": bool(c),
                "purchase": bool(p),
                "self_reported_done": bool(claim),
                "steps": 10 + i,
                "carted_product_ids": [t.product_id] if a else [],
            }
            if with_trace:
                row["event_trace"] = _trace(s for s in t.required if allowed.get(s.kind, 1))
            rows.append(row)
    return pl.DataFrame(rows)  # fmt: skip


def test_instruction_scores_and_calibration():
    tasks = derive_tasks(_sessions())
    scored = score_runs(tasks, _runs(tasks))
    assert scored.height == 12 and not scored["trace_missing"].any()
    for c in ("success", "path_ok", "product_ok", "quantity_ok", "end_ok", "task_id",
              "task_kind"):  # fmt: skip
        assert c in scored.columns and scored[c].null_count() == 0, c
    table = {r["task_kind"]: r for r in instruction_table(scored).iter_rows(named=True)}
    assert table["cart"]["success"] == 0.5
    assert table["checkout"]["success"] == 0.25
    assert table["purchase"]["success"] == 0.25
    assert table["purchase"]["reached_checkout"] == 0.75
    assert table["all"]["runs"] == 12 and table["all"]["avg_steps"] == 11.5
    # Runs that stopped early miss the later steps: path_ok fails with them.
    assert table["cart"]["path_ok"] == 0.5 and table["purchase"]["path_ok"] == 0.25
    assert table["checkout"]["product_ok"] == 0.75 and table["all"]["trace_missing"] == 0
    cal = calibration(scored)
    # Claims: 8 of 12; successful claims: cart 2, checkout 1, purchase 1 → precision 4/8.
    assert cal["claimed"] == pytest.approx(8 / 12)
    assert cal["precision"] == pytest.approx(0.5)
    assert cal["recall"] == pytest.approx(4 / 4)
    assert cal["over_claim"] == pytest.approx(4 / 12)
    figs = instruction_figures(scored)
    assert figs["instruction_cart_success"] == 0.5
    assert figs["instruction_checkout_success"] == 0.25
    assert figs["instruction_purchase_success"] == 0.25
    assert figs["instruction_purchase_checkout"] == 0.75
    assert figs["instruction_self_reported"] == pytest.approx(8 / 12)
    assert figs["instruction_path_ok"] == pytest.approx(4 / 12)
    assert figs["instruction_end_ok"] == pytest.approx(4 / 12)
    assert figs["instruction_trace_missing"] == 0.0
    with pytest.raises(ValueError, match="not among the tasks"):
        score_runs(tasks, _runs(tasks).with_columns(pl.lit("nope").alias("task_id")))


def _cart_task():
    """search "Red Shoes" → collection c1 → view p1 → add 2 × p1 (two adds of 1)."""
    t = task_from_outline(_outline("two", [
        _ev("search", q="Red Shoes"), _ev("collection_view", col="c1"),
        _ev("product_view", "p1"), _ev("add_to_cart", "p1", n=1), _ev("add_to_cart", "p1", n=1),
    ]))  # fmt: skip
    assert t is not None and t.kind == "cart" and t.quantity == 2
    assert t.steps[-1] == 'Add 2 × "Title p1" to the cart'
    return t


def _e(kind: str, pid: str | None = None, q: str | None = None, col: str | None = None,
       n: int | None = None) -> dict:  # fmt: skip
    return {"event_type": kind, "product_id": pid, "collection_id": col, "search_query": q,
            "quantity": n}  # fmt: skip


def _check(task, trace):
    return check_result(task, {"event_trace": trace})


def test_checker_passes_the_path_with_extra_steps():
    t = _cart_task()
    exact = _trace(t.required)
    assert _check(t, exact) == {
        "success": True, "end_ok": True, "path_ok": True, "product_ok": True,
        "quantity_ok": True, "steps_matched": 4, "added_to_cart": True,
        "reached_checkout": False, "purchased": False, "trace_missing": False,
    }  # fmt: skip
    # Detours, page views, a differently written query, two adds of 1 instead of one of 2.
    detour = [_e("page_view"), _e("search", q="hats"), _e("search", q="  red   SHOES "),
              _e("product_view", "p7"), _e("collection_view", col="c1"), _e("page_view"),
              _e("collection_view", col="c2"), _e("product_view", "p1"),
              _e("add_to_cart", "p1", n=1), _e("product_view", "p1"),
              _e("add_to_cart", "p1", n=1)]  # fmt: skip
    r = _check(t, detour)
    assert r["success"] and r["path_ok"] and r["quantity_ok"]


def test_checker_fails_a_different_path_to_the_same_end_state():
    t = _cart_task()
    # Straight to the product: the right product, quantity and end state, not the path.
    shortcut = [_e("product_view", "p1"), _e("add_to_cart", "p1", n=2)]
    r = _check(t, shortcut)
    assert r["end_ok"] and r["product_ok"] and r["quantity_ok"]
    assert not r["path_ok"] and not r["success"] and r["steps_matched"] == 0
    # The steps out of order (collection before search): not the path either.
    swapped = [_e("collection_view", col="c1"), _e("search", q="red shoes"),
               _e("product_view", "p1"), _e("add_to_cart", "p1", n=2)]  # fmt: skip
    r = _check(t, swapped)
    assert not r["path_ok"] and not r["success"] and r["steps_matched"] == 1  # search only
    # Another collection, same name elsewhere: ids are compared exactly.
    other = [_e("search", q="red shoes"), _e("collection_view", col="C1"),
             _e("product_view", "p1"), _e("add_to_cart", "p1", n=2)]  # fmt: skip
    assert not _check(t, other)["path_ok"]


def test_checker_fails_the_wrong_quantity_or_product():
    t = _cart_task()
    head = [_e("search", q="Red Shoes"), _e("collection_view", col="c1"), _e("product_view", "p1")]
    one = _check(t, [*head, _e("add_to_cart", "p1", n=1)])
    assert one["path_ok"] and one["product_ok"] and not one["quantity_ok"]
    assert not one["success"]
    three = _check(t, [*head, _e("add_to_cart", "p1", n=3)])
    assert not three["quantity_ok"] and not three["success"]
    # Right amount added, then one taken out again: the cart the session ends with counts.
    back = _check(t, [*head, _e("add_to_cart", "p1", n=2), _e("remove_from_cart", "p1", n=1)])
    assert back["path_ok"] and not back["quantity_ok"] and not back["success"]
    wrong = _check(t, [*head, _e("add_to_cart", "p2", n=2)])
    assert wrong["end_ok"] and not wrong["product_ok"] and not wrong["path_ok"]
    assert not wrong["success"]
    assert not _check(t, head)["end_ok"]  # nothing carted


def test_checker_judges_checkout_and_purchase_carts_when_they_were_reached():
    pur = task_from_outline(_outline("p", [
        _ev("search", q="hat"), _ev("product_view", "p3"), _ev("add_to_cart", "p3", n=2),
        _ev("checkout_started"), _ev("checkout_completed"),
    ]))  # fmt: skip
    assert pur is not None and pur.kind == "purchase" and pur.quantity == 2
    bought_one = [_e("search", q="hat"), _e("product_view", "p3"), _e("add_to_cart", "p3", n=1),
                  _e("checkout_started"), _e("checkout_completed"),
                  _e("add_to_cart", "p3", n=1)]  # fmt: skip
    r = _check(pur, bought_one)
    assert r["path_ok"] and r["end_ok"] and not r["quantity_ok"] and not r["success"]
    ok = [*bought_one[:2], _e("add_to_cart", "p3", n=2), *bought_one[3:5]]
    assert _check(pur, ok)["success"]
    # Stopping at checkout: the checkout is reached, the purchase (and its step) is not.
    r = _check(pur, ok[:-1])
    assert r["reached_checkout"] and not r["end_ok"] and not r["path_ok"]


def test_rows_without_an_event_trace_are_flagged():
    tasks = derive_tasks(_sessions())
    old = score_runs(tasks, _runs(tasks, with_trace=False))
    assert old["trace_missing"].all()
    assert old["path_ok"].null_count() == old.height == old["quantity_ok"].null_count()
    # Success on the end state (and the carted product the row lists), never the path.
    table = {r["task_kind"]: r for r in instruction_table(old).iter_rows(named=True)}
    assert table["cart"]["success"] == 0.5 and table["checkout"]["success"] == 0.25
    assert math.isnan(table["all"]["path_ok"]) and table["all"]["trace_missing"] == 12
    assert instruction_figures(old)["instruction_trace_missing"] == 1.0
    cart = tasks[0]
    assert not check_result(cart, {"add_to_cart": True, "carted_product_ids": ["zz"]})["success"]
    r = check_result(cart, {"add_to_cart": True})
    assert r["success"] and r["trace_missing"] and r["product_ok"] is None
    # A results table mixing old rows (null trace) and new ones: each flagged on its own.
    from simpersona.agent.population import results_frame

    rows = _runs(tasks).to_dicts()
    rows[0].pop("event_trace")
    mixed = score_runs(tasks, results_frame([{**r, "agent_id": str(i)} for i, r in
                                             enumerate(rows)]))  # fmt: skip
    assert mixed["trace_missing"].sum() == 1
    # A table scored before these columns existed: its runs count as checked on the end
    # state, the rates it lacks are NaN.
    legacy = old.drop("path_ok", "quantity_ok", "trace_missing")
    t = instruction_table(legacy).filter(pl.col("task_kind") == "all").row(0, named=True)
    assert t["trace_missing"] == 12 and math.isnan(t["quantity_ok"])


def test_task_quota_split_over_the_evaluation_shops():
    shops = ["s3", "s1", "s2"]
    quotas = task_quotas(70, shops)
    assert quotas == {"s1": 24, "s2": 23, "s3": 23} and sum(quotas.values()) == 70
    assert task_quotas(70, list(reversed(shops))) == quotas  # the listing order is irrelevant
    for n, m in itertools.product((0, 1, 2, 69, 70, 71), (1, 2, 3, 4, 7)):
        split = [f"e{i}" for i in range(m)]
        q = task_quotas(n, split)
        assert sum(q.values()) == n and max(q.values()) - min(q.values()) <= 1
        assert [shop_task_quota(n, s, split) for s in sorted(split)] == list(q.values())
    with pytest.raises(ValueError, match="not an evaluation shop"):
        shop_task_quota(70, "train-shop", shops)
    assert shop_task_quota(70, "train-shop", shops, eval_shops_only=False) == 24
    assert shop_task_quota(70, "s9", [], eval_shops_only=False) == 70
    with pytest.raises(ValueError, match="not an evaluation shop"):
        shop_task_quota(70, "s1", [])
    # The shop's tasks: its quota, always the same ones.
    tasks = derive_tasks(_sessions(), InstructionConfig(n_tasks=quotas["s3"]))
    assert len(tasks) == 3  # only three sessions give a task: fewer than the quota


def _rec(step, kind, cart, pid=None, action=None, error=None):
    facts = {"cart_count": str(cart), **({"product_id": pid} if pid else {})}
    return StepRecord(step, {"kind": kind, "facts": facts, "url": ""}, [], action, None, None,
                      "", error, 1.0)  # fmt: skip


def test_session_flags_from_a_session_result():
    recs = [
        _rec(1, "home", 0, action={"action": "search", "query": "hat"}),
        _rec(2, "product", 0, "p3", action={"action": "add_to_cart", "quantity": 1}),
        _rec(3, "product", 1, "p3", action={"action": "click", "id": "checkout"}),
        _rec(4, "checkout", 1, action={"action": "end_session", "reason": "done"}),
    ]
    res = SessionResult("k", "b", "goal_reached", "agent ended: done", 4, 3.0,
                        "http://127.0.0.1:8000/checkout", records=recs)  # fmt: skip
    f = session_flags(res)
    assert f["add_to_cart"] and f["carted_product_ids"] == ["p3"]
    assert f["checkout_reached"] and not f["purchase"] and f["self_reported_done"]
    recs2 = recs[:2]
    res2 = SessionResult("k", "b", "steps_limit", "30 steps", 2, 3.0, "http://127.0.0.1/x",
                         records=[recs2[0]])  # fmt: skip
    f2 = session_flags(res2)
    assert not f2["add_to_cart"] and not f2["checkout_reached"] and not f2["self_reported_done"]


# ---- ablations -------------------------------------------------------------------------------
def _outcomes(shop_outcomes: dict[str, list[str]], n_actions: int = 5) -> pl.DataFrame:
    rows = [
        {"shop_id": s, "outcome": o, "add_to_cart": o == "goal_reached",
         "checkout_reached": False, "n_actions": n_actions}
        for s, outs in shop_outcomes.items() for o in outs
    ]  # fmt: skip
    return pl.DataFrame(rows)


def test_outcome_and_error_distributions():
    two = _outcomes({"a": ["goal_reached"] * 9 + ["other"], "b": ["goal_reached"] * 6 +
                     ["steps_limit"] * 3 + ["crash"], "c": ["goal_reached"] * 10})  # fmt: skip
    one = _outcomes({"a": ["goal_reached"] * 2 + ["other"] * 8, "b": ["goal_reached"] * 10,
                     "c": ["goal_reached"] * 9 + ["time_limit"]})  # fmt: skip
    t7 = outcome_distribution({"two_stage": two, "single_stage": one})
    assert t7["outcome"].to_list()[0] == "goal_reached"
    assert t7["two_stage_count"].to_list() == [25, 3, 0, 1, 1]
    assert t7["single_stage_share"][3] == pytest.approx(8 / 30)
    st = error_distribution_stats(one)
    assert st["max_error"] == pytest.approx(0.8) and st["min_error"] == 0.0
    assert st["mean_error"] == pytest.approx(0.3)
    assert st["std_error"] == pytest.approx(np.std([0.8, 0.0, 0.1], ddof=1))
    assert st["shops_error_above_50"] == 1 and st["shops_error_below_10"] == 1
    assert st["min_goal_reached"] == pytest.approx(0.2) and st["max_other"] == pytest.approx(0.8)
    t8 = error_distribution({"two_stage": two, "single_stage": one})
    assert t8.columns == ["statistic", "two_stage", "single_stage"]
    assert per_shop_rates(two)["error_rate"].to_list() == pytest.approx([0.1, 0.4, 0.0])
    t, p = paired_error_test(two, one)
    assert p == pytest.approx(stats.ttest_rel([0.1, 0.4, 0.0], [0.8, 0.0, 0.1]).pvalue)
    with pytest.raises(ValueError, match="unknown outcome"):
        outcome_distribution({"x": _outcomes({"a": ["exploded"]})})


def test_token_ablation_table():
    with_tok = _outcomes({"a": ["goal_reached"] * 9 + ["crash"], "b": ["goal_reached"] * 10},
                         n_actions=11)  # fmt: skip
    no_tok = _outcomes({"a": ["goal_reached"] * 7 + ["crash"] * 3, "b": ["goal_reached"] * 9 +
                        ["crash"]}, n_actions=9)  # fmt: skip
    t = {r["metric"]: r for r in token_ablation(with_tok, no_tok).iter_rows(named=True)}
    assert t["crashes"]["with_token"] == 1 and t["crashes"]["no_token"] == 4
    assert t["crash_share"]["ratio"] == pytest.approx(0.25)
    assert t["atc_events"]["with_token"] == 19 and t["atc_events"]["no_token"] == 16
    assert t["actions_per_session_ok"]["ratio"] == pytest.approx(11 / 9)
    assert t["shops_higher_crash"]["no_token"] == 2 and t["shops_higher_crash"]["with_token"] == 0


def test_valid_json_and_valid_action_rates_count_different_failures():
    from simpersona.evaluation.suite import _valid_action_rate, _valid_json_rate

    agents = pl.DataFrame(
        {"steps": [3, 2, 5], "invalid_actions": [2, 0, 1], "malformed_replies": [1, None, 0]}
    )
    assert _valid_action_rate(agents) == pytest.approx(1 - 3 / 10)
    assert _valid_json_rate(agents) == pytest.approx(1 - 1 / 10)  # a row from before the column
    assert math.isnan(_valid_json_rate(agents.head(0)))


def test_evaluate_pairs_policies_and_opens_with_a_verdict(tmp_path):
    """Two policies on the same agents (the token's rates vs one shop-wide rate): paired
    intervals of the token effect, the summary keys, the three verdict sentences, and a
    paper table that says why a figure was not measured."""
    from simpersona.evaluation.report import paper_comparison, render_report
    from simpersona.evaluation.suite import evaluate
    from tests.test_bootstrap import _real_and_agents

    real, with_tok, without = _real_and_agents()
    rename = lambda df, p: df.with_columns(  # noqa: E731
        pl.lit(p).alias("policy"),
        pl.col("agent_id").str.replace(r"-with(out)?-", f"-{p}-"),
        pl.col("agent_id").alias("counterpart_buyer_id"),
    )
    # Token-less agents stand for the buyer of the same token (their counterpart).
    buyer_of = {(r["shop_id"], r["token"]): r["buyer_id"] for r in real.iter_rows(named=True)}
    markov = rename(with_tok, "markov")
    notoken = rename(without, "markov_notoken").with_columns(
        pl.Series("counterpart_buyer_id",
                  [buyer_of[(s, t)] for s, t in zip(without["shop_id"], without["token"],
                                                      strict=True)]),
        pl.lit(None, dtype=pl.Int64).alias("token"),
    )  # fmt: skip
    markov = markov.with_columns(
        pl.Series("counterpart_buyer_id", notoken["counterpart_buyer_id"].to_list())
    )
    for df in (markov, notoken):
        assert "steps" not in df.columns
    agents = pl.concat(
        [d.with_columns(pl.lit(5).alias("steps"), pl.lit("").alias("intent"), pl.lit(None,
         dtype=pl.String).alias("error"), pl.lit(1.0).alias("seconds"), pl.lit(None,
         dtype=pl.Boolean).alias("self_reported_done")) for d in (markov, notoken)],
        how="diagonal_relaxed",
    )  # fmt: skip
    bins = pl.DataFrame(
        {"token": list(range(6)), "engagement_bin": [2, 2, 1, 1, 0, 0],
         "exploration_bin": [1] * 6, "purchase_bin": [2, 2, 1, 1, 0, 0]}
    )  # fmt: skip
    ev = evaluate(real, real, agents, bins=bins, boot=BootstrapConfig(n_resamples=200))
    f = ev.figures
    assert f["verdict_token_effect_markov"] == "yes" and f["verdict_token_effect"] == "yes"
    gap = ev.intervals["ara_correct_gap_markov_markov_notoken"]
    assert gap.estimate == pytest.approx(f["ara_correct_markov"] - f["ara_correct_markov_notoken"])
    head = ev.headline(["markov", "markov_notoken"])
    for key in ("ara_diff_markov", "ara_diff_markov_ci_low", "ara_diff_markov_ci_high",
                "purchase_cohens_d_markov_ci_low", "purchase_cohens_d_markov_ci_high",
                "ara_correct_gap_markov_markov_notoken_ci_low", "verdict_token_effect"):  # fmt: skip
        assert head[key] is not None, key
    assert head["ara_diff_markov_ci_low"] > 0.05
    assert not ev.notes  # training bins were given: nothing in-sample to confess
    verdict = ev.verdict({})
    assert len(verdict) == 3
    assert verdict[0].startswith("Do persona tokens change behaviour") and "**yes**" in verdict[0]
    assert "paired agents" in verdict[0] and "95 % CI" in verdict[0]
    assert "markov: **yes**" in verdict[1]
    assert "not measured" in verdict[2]
    rec = {"n_stores_heldout": 4, "js_mean_heldout": 0.02, "js_mean_heldout_ci_low": 0.01,
           "js_mean_heldout_ci_high": 0.03, "buyers_heldout": 900}  # fmt: skip
    assert "mean JS divergence 0.0200 (95 % CI 0.0100 to 0.0300; 4 held-out" in ev.verdict(rec)[2]
    comp = paper_comparison(ev.figures)
    cart = comp.filter(pl.col("figure") == "cart tasks → added to cart").row(0, named=True)
    assert cart["note"].startswith("not measured, because no instruction-following runs")
    ara = comp.filter(pl.col("figure") == "stratified ARA, correct").row(0, named=True)
    assert ara["note"] == "" and ara["markov"] != "—"
    html, md = render_report(ev.figures, ev.tables, {}, {}, tmp_path, verdict=verdict)
    page = html.read_text()
    assert page.index("id='verdict'") < page.index("id='paper-vs-ours'")
    assert "<strong>yes</strong>" in page and "## Verdict" in md.read_text()
    # Without training-shop bins the separation figures are in-sample, and the report says so.
    binned = real.join(bins, on="token")
    assert evaluate(real, binned, agents.filter(pl.col("policy") == "markov"),
                    boot=BootstrapConfig(n_resamples=20)).notes  # fmt: skip
