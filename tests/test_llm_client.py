"""The LLM path of the goal writer and the judge, for real: our client → the project's own
OpenAI-compatible server on loopback → a tiny local model. No mocked client.

The tiny model has random weights here (it is trained in the fine-tuning stage), so its goals
are schema-valid gibberish; what is tested is the path: requests, JSON schema, validation,
rule checks with template fallback, cache, usage, concurrency and errors."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from simpersona.llm.client import LLMClient, LLMConfig, LLMError
from simpersona.llm.server import serve_in_background
from simpersona.llm.tiny import build_tiny_model
from simpersona.traces.goals import GoalReply, LLMGoalWriter, is_intent_neutral
from simpersona.traces.judge import JudgeReply, LLMJudge, Required
from simpersona.traces.outline import SessionEvent, SessionOutline


@pytest.fixture(scope="module")
def endpoint(tmp_path_factory):
    path = build_tiny_model(None, tmp_path_factory.mktemp("llm") / "tiny", seed=0)
    with serve_in_background(path, threads=1) as url:
        model = httpx.get(url + "/v1/models").json()["data"][0]["id"]
        yield url + "/v1", model


def _client(endpoint, tmp_path, **kw) -> LLMClient:
    base_url, model = endpoint
    cfg = LLMConfig(
        base_url=base_url,
        model=model,
        cache_path=str(tmp_path / "cache.sqlite"),
        max_tokens=160,
        **kw,
    )
    return LLMClient(cfg)


def _outline(i: int, stratum: str) -> SessionOutline:
    return SessionOutline(
        "shop-000",
        f"b{i}",
        f"s{i}",
        (
            SessionEvent("search", search_query=f"trail shoe {i}"),
            SessionEvent("product_view", product_id="p1", product_title="Trail Shoe – Navy"),
            SessionEvent("add_to_cart", product_id="p1", product_title="Trail Shoe – Navy"),
        ),
        category="Trail Shoes",
        stratum=stratum,
    )


def test_goal_writer_llm_path_with_cache_and_usage(endpoint, tmp_path):
    client = _client(endpoint, tmp_path, concurrency=2)
    writer = LLMGoalWriter(client)
    outlines = [_outline(i, s) for i, s in enumerate("ACD")]
    goals = asyncio.run(writer.awrite_many(outlines))
    assert len(goals) == 3
    for o, g in zip(outlines, goals, strict=True):
        assert g.writer in ("llm", "llm+template")
        assert is_intent_neutral(g.stage1)  # the rules hold whatever the model wrote
        want = "buy" if o.stratum in "ABC" else "browse"
        assert g.stage2.startswith(f"You are here to {want}")
    u = client.usage
    assert u.requests >= 3 and u.cache_hits == 0
    assert u.prompt_tokens > 100 and u.completion_tokens > 0
    assert u.invalid_replies == 0  # constrained decoding: every reply validates
    # Re-materializing asks nothing: the same prompts come from the cache.
    again = LLMClient(client.config)
    goals2 = asyncio.run(LLMGoalWriter(again).awrite_many(outlines))
    assert goals2 == goals
    assert again.usage.requests == 0 and again.usage.cache_hits == 3
    assert len(again.cache) == 3


def test_reply_validates_against_schema(endpoint, tmp_path):
    client = _client(endpoint, tmp_path)
    msgs = LLMGoalWriter(client).messages(_outline(0, "B"))
    reply = client.chat_sync(msgs, schema=GoalReply)
    assert isinstance(reply.parsed, GoalReply) and not reply.cached
    assert reply.completion_tokens > 0 and reply.key
    plain = client.chat_sync([{"role": "user", "content": "Hello"}], max_tokens=8)
    assert plain.parsed is None and plain.completion_tokens <= 8


def test_llm_judge(endpoint, tmp_path):
    judge = LLMJudge(_client(endpoint, tmp_path))
    o = _outline(1, "C")
    steps = [{"step": 1, "observation": {"kind": "home"}, "action": {"action": "search"}}]
    verdict = judge.judge("You are here to buy trail shoes.", Required.of(o), steps, "other")
    assert verdict.keep is False  # a session that did not end normally is never kept
    reply = judge.client.chat_sync(judge.messages("g", Required.of(o), steps), schema=JudgeReply)
    assert isinstance(reply.parsed, JudgeReply)


def test_unreachable_endpoint_names_it(tmp_path):
    client = LLMClient(
        LLMConfig(base_url="http://127.0.0.1:9/v1", model="x", max_retries=0, timeout_s=2)
    )
    with pytest.raises(LLMError, match=r"127\.0\.0\.1:9"):
        client.chat_sync([{"role": "user", "content": "hi"}])
    assert client.usage.failures == 1 and client.usage.requests == 0
