"""The OpenAI-compatible local model server, called with the openai SDK, on a fresh tiny model
(random weights: only constrained decoding makes its output JSON)."""

from __future__ import annotations

import json
import threading
from typing import Literal

import httpx
import openai
import pytest
from openai import OpenAI
from pydantic import BaseModel, Field, TypeAdapter

from simpersona.agent.actions import Action, parse_action
from simpersona.llm.server import serve_in_background
from simpersona.llm.tiny import build_tiny_model

MESSAGES = [
    {"role": "system", "content": "You are a shopper. Reply with one JSON action."},
    {"role": "user", "content": "Page: Men's Waterproof Trail Running Shoe – Navy"},
]


class Goal(BaseModel):
    goal: str
    category: str


class Mixed(BaseModel):
    name: str = Field(max_length=12)
    quantity: int = Field(ge=1, le=99)
    price: float
    in_stock: bool
    size: Literal["S", "M", "L"]
    tags: list[str] = Field(max_length=3)
    note: str | None


def json_format(name: str, schema: dict) -> dict:
    return {"type": "json_schema", "json_schema": {"name": name, "schema": schema}}


def action_schema() -> dict:
    """The agent's action union. `action` has a default in the models, hence is optional in
    their schema; a discriminated union needs it present, so it is made required here."""
    schema = TypeAdapter(Action).json_schema()
    for spec in schema["$defs"].values():
        spec["required"] = ["action", *[r for r in spec.get("required", []) if r != "action"]]
    return schema


@pytest.fixture(scope="module")
def base_url(tmp_path_factory):
    path = build_tiny_model(None, tmp_path_factory.mktemp("llm") / "tiny", seed=0)
    with serve_in_background(path, threads=1) as url:
        yield url


@pytest.fixture(scope="module")
def client(base_url):
    return OpenAI(base_url=base_url + "/v1", api_key="unused", max_retries=0, timeout=60)


def chat(client, **kwargs):
    kwargs.setdefault("messages", MESSAGES)
    return client.chat.completions.create(model="tiny", **kwargs)


def test_models_lists_the_served_model(client, base_url):
    assert [m.id for m in client.models.list().data] == ["tiny"]
    assert base_url.startswith("http://127.0.0.1:")


def test_plain_completion_returns_text_and_usage(client):
    resp = chat(client, max_tokens=16, temperature=0.8, seed=3)
    choice = resp.choices[0]
    assert resp.object == "chat.completion" and resp.model == "tiny"
    assert choice.message.role == "assistant" and isinstance(choice.message.content, str)
    assert choice.finish_reason in ("stop", "length")
    u = resp.usage
    assert 0 < u.completion_tokens <= 16 and u.prompt_tokens > 10
    assert u.total_tokens == u.prompt_tokens + u.completion_tokens
    # a seed makes sampling repeatable; max_completion_tokens is the newer name of max_tokens
    again = chat(client, max_completion_tokens=16, temperature=0.8, seed=3)
    assert again.choices[0].message.content == choice.message.content


def test_stop_sequence_cuts_the_text(client):
    full = chat(client, max_tokens=24, temperature=0).choices[0].message.content
    assert len(full) > 12
    stop = full[6:9]
    resp = chat(client, max_tokens=24, temperature=0, stop=[stop])
    assert resp.choices[0].message.content == full[: full.find(stop)]
    assert resp.choices[0].finish_reason == "stop"


@pytest.mark.parametrize("seed", range(4))
def test_json_schema_output_validates(client, seed):
    resp = chat(
        client,
        max_tokens=48,
        temperature=1.0,
        seed=seed,
        response_format=json_format("goal", Goal.model_json_schema()),
    )
    assert resp.choices[0].finish_reason == "stop"
    Goal.model_validate_json(resp.choices[0].message.content)
    resp = chat(
        client,
        max_tokens=100,
        seed=seed,
        response_format=json_format("mixed", Mixed.model_json_schema()),
    )
    assert resp.choices[0].finish_reason == "stop"
    Mixed.model_validate_json(resp.choices[0].message.content)


def test_agent_action_schema_output_parses(client):
    kinds = set()
    for seed in range(6):
        resp = chat(
            client, max_tokens=40, seed=seed, response_format=json_format("action", action_schema())
        )
        assert resp.choices[0].finish_reason == "stop"
        kinds.add(parse_action(resp.choices[0].message.content).action)
    assert len(kinds) >= 2  # the model's choice, not the constraint's


def test_json_object_and_greedy(client):
    resp = chat(client, max_tokens=32, temperature=0, response_format={"type": "json_object"})
    assert isinstance(json.loads(resp.choices[0].message.content), dict)


def test_budget_too_small_for_the_json_ends_with_length(client):
    resp = chat(
        client, max_tokens=3, seed=0, response_format=json_format("goal", Goal.model_json_schema())
    )
    assert resp.choices[0].finish_reason == "length"
    assert resp.usage.completion_tokens == 3


def test_bad_requests_are_openai_errors(client, base_url):
    with pytest.raises(openai.BadRequestError, match="only n=1"):
        chat(client, n=2, max_tokens=4)
    with pytest.raises(openai.BadRequestError, match="unknown response_format type"):
        chat(client, max_tokens=4, response_format={"type": "grammar"})
    with pytest.raises(openai.BadRequestError, match="json_schema needs"):
        chat(client, max_tokens=4, response_format={"type": "json_schema", "json_schema": {}})
    with pytest.raises(openai.BadRequestError, match="maximum context length"):
        chat(client, max_tokens=5000)
    with pytest.raises(openai.BadRequestError, match="maximum context length"):
        chat(client, max_tokens=4, messages=[{"role": "user", "content": "shoe " * 5000}])
    with pytest.raises(openai.NotFoundError, match="not found"):
        client.chat.completions.create(model="gpt-4o", messages=MESSAGES, max_tokens=4)
    r = httpx.post(base_url + "/v1/chat/completions", json={"model": "tiny", "messages": []})
    assert r.status_code == 400
    assert set(r.json()["error"]) >= {"message", "type"}
    assert r.json()["error"]["type"] == "invalid_request_error"


def test_concurrent_requests_are_batched_and_each_gets_its_own_answer(client, base_url):
    """Requests sent at once share batches, and each answer is the one it gets alone: the
    greedy texts match the sequential ones, the guided ones validate."""
    questions = [f"Page: product {i} – Trail Shoe {i}, size {40 + i}" for i in range(6)]

    def ask(q: str, **kw):
        msgs = [MESSAGES[0], {"role": "user", "content": q}]
        return chat(client, messages=msgs, max_tokens=20, temperature=0, **kw)

    alone = [ask(q).choices[0].message.content for q in questions]
    engine_stats = httpx.get(base_url + "/health").json()
    assert engine_stats["status"] == "ok"
    together: dict[int, str] = {}
    guided: dict[int, str] = {}

    def call(i: int) -> None:
        together[i] = ask(questions[i]).choices[0].message.content
        fmt = json_format("g", Goal.model_json_schema())
        guided[i] = ask(questions[i], response_format=fmt, seed=i).choices[0].message.content

    threads = [threading.Thread(target=call, args=(i,)) for i in range(len(questions))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert [together[i] for i in range(len(questions))] == alone
    for text in guided.values():
        Goal.model_validate_json(text)
    stats = httpx.get(base_url + "/health").json()
    assert stats["requests"] > stats["batches"]  # some requests shared a batch


def test_streaming_sends_the_same_text_as_deltas(client):
    full = chat(client, max_tokens=24, temperature=0)
    stream = client.chat.completions.create(
        model="tiny", messages=MESSAGES, max_tokens=24, temperature=0, stream=True
    )
    chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks)
    assert text == full.choices[0].message.content
    assert chunks[-1].choices[0].finish_reason == full.choices[0].finish_reason
    # With a stop string, no character of it is ever sent.
    stop = full.choices[0].message.content[8:11]
    cut = chat(client, max_tokens=24, temperature=0, stop=[stop]).choices[0].message.content
    parts = client.chat.completions.create(
        model="tiny", messages=MESSAGES, max_tokens=24, temperature=0, stream=True, stop=[stop]
    )
    assert "".join(c.choices[0].delta.content or "" for c in parts) == cut


def test_concurrent_guided_requests_all_validate(client):
    results: list[str] = []

    def call(seed: int) -> None:
        resp = chat(
            client,
            max_tokens=32,
            seed=seed,
            response_format=json_format("g", Goal.model_json_schema()),
        )
        results.append(resp.choices[0].message.content)

    threads = [threading.Thread(target=call, args=(s,)) for s in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert len(results) == 3
    for text in results:
        Goal.model_validate_json(text)
