"""Goals, replay, judge and SFT datasets on generated shops: a real storefront on
loopback, a real headless Chromium, the replay teacher. One replay batch per module."""

from __future__ import annotations

import json
import re
from collections import Counter

import polars as pl
import pytest

from simpersona.agent.actions import parse_action
from simpersona.agent.prompt import SYSTEM_PROMPT
from simpersona.features.enrich import enrich_sessions
from simpersona.ingest.sessionize import sessionize
from simpersona.store import MemoryEventSink, StoreCatalog
from simpersona.synth import GeneratorConfig, generate_lake
from simpersona.traces.build import replay_shop, select_outlines, trajectory_record
from simpersona.traces.dataset import build_dataset, read_dataset, select_sessions
from simpersona.traces.goals import TemplateGoalWriter, intent_words, is_intent_neutral
from simpersona.traces.judge import Required, judge_rules
from simpersona.traces.outline import CategoryIndex, SessionEvent, SessionOutline
from simpersona.traces.replay import ReplayConfig
from tests.conftest import read_lake_table, require_chromium

SHOP = "shop-000"
PERSONA = re.compile(r"<\|persona_\d+\|>")


@pytest.fixture(scope="module")
def shop(tmp_path_factory):
    root = tmp_path_factory.mktemp("traces") / "lake"
    generate_lake(
        root,
        GeneratorConfig(n_shops=1, n_buyers=400, seed=3),
        ground_truth_path=root.parent / "truth.parquet",
        progress=False,
    )
    events = sessionize(read_lake_table(root, "events").drop("shop", "date", strict=False))
    products, collections = read_lake_table(root, "products"), read_lake_table(root, "collections")
    sessions = enrich_sessions(events, products, collections)
    return root, sessions, CategoryIndex.from_frames(products, collections)


@pytest.fixture(scope="module")
def outlines(shop):
    """20 sessions of 3+ events, every funnel depth in (strata by the session's own depth);
    persona tokens assigned round-robin so the dataset has several."""
    _, sessions, cats = shop
    picked = select_outlines(sessions.filter(pl.col("n_events") >= 3), None, cats)
    by_stratum: dict[str, list[SessionOutline]] = {}
    for o in picked:
        by_stratum.setdefault(o.stratum, []).append(o)
    chosen: list[SessionOutline] = []
    while len(chosen) < 20 and any(by_stratum.values()):
        for s in sorted(by_stratum):
            if by_stratum[s] and len(chosen) < 20:
                chosen.append(by_stratum[s].pop(0))
    return [SessionOutline(**{**o.__dict__, "token": i % 5}) for i, o in enumerate(chosen)]


@pytest.fixture(scope="module")
def replayed(shop, outlines):
    require_chromium()
    root, _, _ = shop
    writer = TemplateGoalWriter()
    items = [(o, writer.write(o)) for o in outlines]
    sink = MemoryEventSink()
    trajs = replay_shop(StoreCatalog.from_lake(root, SHOP), items, ReplayConfig(), sink=sink)
    return trajs, sink


# ---- goals ---------------------------------------------------------------------------------
def test_template_goals_keep_structure_and_intent(shop):
    _, sessions, cats = shop
    outlines = select_outlines(sessions, None, cats)
    assert len(outlines) >= 50
    writer = TemplateGoalWriter()
    for o in outlines:
        g = writer.write(o)
        assert g.stage1.startswith("You are interested in "), g.stage1
        assert is_intent_neutral(g.stage1), (g.stage1, intent_words(g.stage1))
        want = "buy" if o.stratum in ("A", "B", "C") else "browse"
        assert g.stage2.startswith(f"You are here to {want} "), (o.stratum, g.stage2)
        for q in o.searches[:3]:
            assert q in g.stage1 and q in g.stage2
        if o.carted:
            assert "cart" in g.stage2
        if o.purchased:
            assert "place the order" in g.stage2
        assert writer.write(o) == g  # deterministic


def test_intent_words_are_caught():
    for text in ("Buy a tent", "add it to your cart", "go to checkout", "browsing", "ordered"):
        assert not is_intent_neutral(text)
    assert is_intent_neutral("You are interested in boots. Compare “Border Boot” and “X”.")


# ---- replay -------------------------------------------------------------------------------
@pytest.mark.browser
def test_replay_reproduces_original_event_order(replayed):
    """The store's own log of each replayed session equals what the teacher planned, and the
    planned steps replay every original event, in the original order."""
    trajs, sink = replayed
    assert len(trajs) == 20
    log: dict[str, list[str]] = {}
    for e in sink.events:
        log.setdefault(e["buyer_id"], []).append(e["event_type"])
    depths = Counter(t.outline.stratum for t in trajs)
    assert {"A", "C", "D"} <= set(depths), depths
    exact, missed = 0, []
    for t in trajs:
        original = [e.event_type for e in t.outline.events]
        store = log.get(t.result.buyer_id, [])
        assert store == t.log.expected_events(), (t.outline.session_id, original, store)
        assert t.log.replayed == sorted(t.log.replayed)  # original order
        # Events the teacher replayed (not detours) have the original types.
        replayed_types = [s.expect[0] for s in t.log.steps if s.target is not None and s.expect]
        assert replayed_types == [original[i] for i in t.log.replayed]
        if t.log.replayed == list(range(len(original))):
            exact += 1
        else:  # why: the events given up and the failed actions, for the failure message
            errors = [r.error for r in t.result.records if r.error]
            missed.append((t.outline.session_id, t.log.skipped, t.result.outcome, errors))
    assert exact >= 18, f"only {exact}/20 sessions replayed every original event: {missed}"


@pytest.mark.browser
def test_judge_keeps_complete_replays(replayed):
    trajs, _ = replayed
    kept = [t for t in trajs if t.verdict.keep]
    assert len(kept) >= 18
    for t in kept:
        assert t.result.outcome == "goal_reached"
    # Dropping a required search from a kept trajectory makes the judge reject it.
    t = next(t for t in kept if t.outline.searches)
    steps = [s for s in t.steps if (s.get("action") or {}).get("action") != "search"]
    steps = [
        {**s, "observation": {**s["observation"], "kind": "other"}}
        if s["observation"]["kind"] == "search"
        else s
        for s in steps
    ]
    verdict = judge_rules(Required.of(t.outline), steps, "goal_reached")
    assert not verdict.keep and any("search" in m for m in verdict.missing)
    assert not judge_rules(Required.of(t.outline), t.steps, "steps_limit").keep


# ---- datasets -----------------------------------------------------------------------------
@pytest.mark.browser
def test_sft_datasets_validate(replayed, tmp_path):
    trajs, _ = replayed
    records = [trajectory_record(t) for t in trajs]
    s1 = build_dataset(records, "stage1", tmp_path / "sft_stage1.jsonl", max_sessions=12)
    s2 = build_dataset(records, "stage2", tmp_path / "sft_stage2.jsonl", max_sessions=12)
    assert s1.sessions == s2.sessions == 12
    rows2 = read_dataset(tmp_path / "sft_stage2.jsonl")
    twins = [r for r in rows2 if r["goal_kind"] == "intent_counterfactual"]
    assert s1.examples > 12 and s2.examples == s1.examples + len(twins)
    assert twins, "no goal product page among 12 sessions"
    taught = {(r["session_id"], r["step"]): r for r in rows2 if r["goal_kind"] == "intent"}
    for t in twins:
        # the same page, history and token as a taught step, under the other intent
        src = taught[(t["session_id"], t["step"])]
        user, src_user = t["messages"][1]["content"], src["messages"][1]["content"]
        intent = re.match(r"Goal: You are here to (buy|browse) ", user).group(1)
        other = re.match(r"Goal: You are here to (buy|browse) ", src_user).group(1)
        assert intent != other and user.split("\n", 1)[1] == src_user.split("\n", 1)[1]
        reply = json.loads(t["messages"][2]["content"])
        assert reply["reasoning"].startswith(f"I am here to {intent}. ")
        assert reply["action"] == ("add_to_cart" if intent == "buy" else "end_session")
        assert json.loads(src["messages"][2]["content"])["action"] != reply["action"]
    # Round-robin: all 5 tokens in use are represented, none twice before all once.
    counts = s1.sessions_by_token
    assert len(counts) == 5 and max(counts.values()) - min(counts.values()) <= 1
    for stage, path in (("stage1", s1), ("stage2", s2)):
        rows = read_dataset(tmp_path / f"sft_{stage}.jsonl")
        assert len(rows) == path.examples
        for ex in rows:
            roles = [m["role"] for m in ex["messages"]]
            assert roles == ["system", "user", "assistant"]
            system, user, assistant = (m["content"] for m in ex["messages"])
            assert system == SYSTEM_PROMPT
            action = parse_action(json.loads(assistant))  # a valid JSON action
            assert json.loads(assistant)["reasoning"]
            assert action.action
            # The persona token only in the profile field.
            assert not PERSONA.search(system) and not PERSONA.search(assistant)
            profile = [ln for ln in user.splitlines() if ln.startswith("Buyer profile: ")]
            assert profile == [f"Buyer profile: <|persona_{ex['token']}|>"]
            assert len(PERSONA.findall(user)) == 1
            goal = user.splitlines()[0]
            assert goal.startswith("Goal: ")
            reasoning = json.loads(assistant)["reasoning"]
            if stage == "stage1":
                assert is_intent_neutral(goal), goal
                assert not reasoning.startswith("I am here to")
            else:
                intent = re.match(r"Goal: You are here to (buy|browse) ", goal).group(1)
                # the reply opens with the goal's own intent
                assert reasoning.startswith(f"I am here to {intent}. "), reasoning


def test_select_sessions_round_robin():
    recs = [
        {"keep": True, "token": t, "shop_id": "s", "session_id": f"{t}-{i}"}
        for t, n in ((1, 10), (2, 1), (3, 3))
        for i in range(n)
    ] + [{"keep": False, "token": 4, "shop_id": "s", "session_id": "x"}]
    chosen = select_sessions(recs, max_sessions=5, seed=1)
    assert Counter(r["token"] for r in chosen) == {1: 2, 2: 1, 3: 2}
    assert select_sessions(recs, max_sessions=5, seed=1) == chosen


def test_outline_of_events():
    o = SessionOutline(
        "s",
        "b",
        "x",
        (
            SessionEvent("search", search_query="tent"),
            SessionEvent("product_view", product_id="p1", product_title="A"),
            SessionEvent("product_view", product_id="p2", product_title="B"),
            SessionEvent("add_to_cart", product_id="p2", product_title="B"),
            SessionEvent("checkout_started"),
        ),
        category="Tents",
        stratum="B",
    )
    assert o.compared and o.checkout_started and not o.purchased
    r = Required.of(o)
    assert r.searches == ("tent",) and r.products == ("p1", "p2") and r.carted == ("p2",)
    assert r.checkout and not r.purchase
