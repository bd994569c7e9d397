"""A client for any OpenAI-compatible chat endpoint (vLLM, `simpersona serve-llm`, OpenAI).

    client = LLMClient(LLMConfig(base_url="http://127.0.0.1:8008/v1", model="tiny"))
    reply = client.chat_sync([{"role": "user", "content": "…"}], schema=GoalReply)
    reply.parsed.stage1_goal, client.usage.as_dict()

- **Retries with backoff**: the `openai` SDK retries connection errors, 408/409/429 and 5xx
  with exponential backoff and jitter (honouring Retry-After); `max_retries` sets how often.
- **Concurrency limit**: at most `concurrency` requests in flight per event loop.
- **Response cache** keyed by a hash of everything that decides the answer (model, messages,
  sampling settings, schema), in SQLite: re-materializing an asset asks nothing twice.
- **JSON output**: with `schema` (a pydantic model) the request carries a `json_schema`
  response format (guided decoding on vLLM and our server) and the reply is validated; an
  invalid reply is re-asked `json_attempts - 1` times with the validation error, then
  `LLMOutputError` names the request and the error.
- **Usage**: requests, cache hits, prompt and completion tokens, invalid replies; the assets
  put `usage.as_dict()` into their metadata and MLflow.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import sqlite3
import threading
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

Message = dict[str, str]

DEFAULT_BASE_URL = "http://127.0.0.1:8008/v1"
API_KEY_ENV = "SIMPERSONA_LLM_API_KEY"


class LLMError(RuntimeError):
    """The endpoint could not answer (after retries)."""


class LLMOutputError(LLMError):
    """The endpoint answered, but not with JSON that validates against the schema."""

    def __init__(self, message: str, content: str) -> None:
        super().__init__(message)
        self.content = content


@dataclass
class LLMConfig:
    """Where the endpoint is and how to talk to it."""

    base_url: str = DEFAULT_BASE_URL
    model: str = "simpersona-tiny"
    # The key is read from this environment variable (None: no key; local servers need none).
    api_key_env: str | None = API_KEY_ENV
    max_retries: int = 4
    timeout_s: float = 120.0
    concurrency: int = 4
    cache_path: str | None = None  # SQLite file; None: no cache
    temperature: float = 0.0
    max_tokens: int = 512
    seed: int | None = 0
    json_attempts: int = 2


@dataclass
class LLMUsage:
    """What the client asked and what it cost."""

    requests: int = 0
    cache_hits: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    invalid_replies: int = 0
    failures: int = 0

    def as_dict(self) -> dict[str, int]:
        return asdict(self)

    def add(self, other: LLMUsage) -> None:
        for k, v in asdict(other).items():
            setattr(self, k, getattr(self, k) + v)


@dataclass
class LLMReply:
    """One answer: its text, the validated object when a schema was given, and whether it
    came from the cache."""

    content: str
    parsed: BaseModel | None = None
    cached: bool = False
    prompt_tokens: int = 0
    completion_tokens: int = 0
    finish_reason: str | None = None
    key: str = ""


class ResponseCache:
    """Prompt-hash → reply, in one SQLite file (safe across threads and processes)."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        with self._connect() as con:
            con.execute("PRAGMA journal_mode=WAL")
            con.execute("CREATE TABLE IF NOT EXISTS replies (key TEXT PRIMARY KEY, reply TEXT)")

    def _connect(self) -> sqlite3.Connection:
        return sqlite3.connect(self.path, timeout=30)

    def get(self, key: str) -> dict[str, Any] | None:
        with self._lock, self._connect() as con:
            row = con.execute("SELECT reply FROM replies WHERE key = ?", (key,)).fetchone()
        return json.loads(row[0]) if row else None

    def put(self, key: str, reply: dict[str, Any]) -> None:
        with self._lock, self._connect() as con:
            con.execute(
                "INSERT OR REPLACE INTO replies (key, reply) VALUES (?, ?)",
                (key, json.dumps(reply, ensure_ascii=False)),
            )

    def __len__(self) -> int:
        with self._lock, self._connect() as con:
            return int(con.execute("SELECT COUNT(*) FROM replies").fetchone()[0])


def response_format(schema: type[BaseModel]) -> dict[str, Any]:
    """The OpenAI `json_schema` response format of a pydantic model."""
    return {
        "type": "json_schema",
        "json_schema": {"name": schema.__name__, "schema": schema.model_json_schema()},
    }


def request_key(payload: dict[str, Any]) -> str:
    """Hash of a request: everything that decides the answer, canonically serialised."""
    text = json.dumps(payload, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def parse_json_reply(content: str, schema: type[BaseModel]) -> BaseModel:
    """Validate a reply against `schema`; tolerates a Markdown code fence around the JSON."""
    text = content.strip()
    if text.startswith("```"):
        text = text.strip("`")
        text = text[text.find("{") :] if "{" in text else text
    return schema.model_validate_json(text)


class LLMClient:
    """See the module docstring. Safe to share across threads; each event loop gets its own
    connection pool and concurrency limit."""

    def __init__(self, config: LLMConfig | None = None, api_key: str | None = None) -> None:
        self.config = cfg = config or LLMConfig()
        env_key = os.environ.get(cfg.api_key_env) if cfg.api_key_env else None
        # The SDK insists on a key; local servers ignore it.
        self.api_key = api_key or env_key or "not-needed"
        self.cache = ResponseCache(cfg.cache_path) if cfg.cache_path else None
        self.usage = LLMUsage()
        self._usage_lock = threading.Lock()
        self._per_loop: dict[int, tuple[Any, Any, asyncio.Semaphore]] = {}

    # ---- plumbing -------------------------------------------------------------------------
    def _loop_state(self) -> tuple[Any, asyncio.Semaphore]:
        from openai import AsyncOpenAI

        loop = asyncio.get_running_loop()
        state = self._per_loop.get(id(loop))
        if state is None or state[0] is not loop:  # new loop (or a dead loop's reused id)
            client = AsyncOpenAI(
                base_url=self.config.base_url,
                api_key=self.api_key,
                max_retries=self.config.max_retries,
                timeout=self.config.timeout_s,
            )
            state = (loop, client, asyncio.Semaphore(self.config.concurrency))
            self._per_loop[id(loop)] = state
        return state[1], state[2]

    async def aclose(self) -> None:
        """Close this event loop's HTTP client. Call it before the loop ends (asyncio.run):
        a client left open is closed by the garbage collector on a dead loop, which logs
        "Event loop is closed"."""
        state = self._per_loop.pop(id(asyncio.get_running_loop()), None)
        if state is not None:
            await state[1].close()

    def _count(self, **deltas: int) -> None:
        with self._usage_lock:
            for k, v in deltas.items():
                setattr(self.usage, k, getattr(self.usage, k) + v)

    def payload(
        self,
        messages: Sequence[Message],
        schema: type[BaseModel] | None = None,
        temperature: float | None = None,
        max_tokens: int | None = None,
        seed: int | None = None,
    ) -> dict[str, Any]:
        """The request body (also what the cache key hashes)."""
        cfg = self.config
        body: dict[str, Any] = {
            "model": cfg.model,
            "messages": [dict(m) for m in messages],
            "temperature": cfg.temperature if temperature is None else temperature,
            "max_tokens": cfg.max_tokens if max_tokens is None else max_tokens,
        }
        seed = cfg.seed if seed is None else seed
        if seed is not None:
            body["seed"] = seed
        if schema is not None:
            body["response_format"] = response_format(schema)
        return body

    async def _post(self, body: dict[str, Any]) -> LLMReply:
        from openai import OpenAIError

        client, limit = self._loop_state()
        async with limit:
            try:
                resp = await client.chat.completions.create(**body)
            except OpenAIError as exc:
                self._count(failures=1)
                raise LLMError(
                    f"LLM request to {self.config.base_url} (model {body['model']!r}) failed "
                    f"after {self.config.max_retries} retries: {type(exc).__name__}: {exc}"
                ) from exc
        self._count(requests=1)
        usage = resp.usage
        pt = int(usage.prompt_tokens) if usage else 0
        ct = int(usage.completion_tokens) if usage else 0
        self._count(prompt_tokens=pt, completion_tokens=ct)
        choice = resp.choices[0]
        return LLMReply(
            content=choice.message.content or "",
            prompt_tokens=pt,
            completion_tokens=ct,
            finish_reason=choice.finish_reason,
        )

    # ---- API ------------------------------------------------------------------------------
    async def chat(
        self,
        messages: Sequence[Message],
        schema: type[BaseModel] | None = None,
        temperature: float | None = None,
        max_tokens: int | None = None,
        seed: int | None = None,
        response_format: dict[str, Any] | None = None,
    ) -> LLMReply:
        """One chat completion (from the cache when it holds this exact request).
        `response_format` (without `schema`) is sent as is and the reply is not validated:
        guided decoding whose result the caller checks itself."""
        body = self.payload(messages, schema, temperature, max_tokens, seed)
        if response_format is not None and schema is None:
            body["response_format"] = response_format
        key = request_key(body)
        if self.cache is not None and (hit := self.cache.get(key)) is not None:
            self._count(cache_hits=1)
            parsed = parse_json_reply(hit["content"], schema) if schema else None
            return LLMReply(
                content=hit["content"],
                parsed=parsed,
                cached=True,
                finish_reason=hit.get("finish_reason"),
                key=key,
            )
        attempts = max(1, self.config.json_attempts) if schema else 1
        ask = dict(body)
        error = ""
        for _ in range(attempts):
            reply = await self._post(ask)
            reply.key = key
            if schema is None:
                break
            try:
                reply.parsed = parse_json_reply(reply.content, schema)
                break
            except ValidationError as exc:
                self._count(invalid_replies=1)
                error = "; ".join(
                    f"{'.'.join(map(str, e['loc'])) or 'reply'}: {e['msg']}" for e in exc.errors()
                )[:500]
                # Ask again, showing the model its reply and what was wrong with it.
                ask = dict(body)
                ask["messages"] = [
                    *body["messages"],
                    {"role": "assistant", "content": reply.content},
                    {
                        "role": "user",
                        "content": f"That reply is not valid ({error}). Answer again with "
                        "one JSON object that matches the schema, nothing else.",
                    },
                ]
        else:
            assert schema is not None  # without a schema the loop breaks on the first reply
            raise LLMOutputError(
                f"LLM reply for request {key[:12]} (model {body['model']!r}) did not validate "
                f"against {schema.__name__} after {attempts} attempts: {error}",
                reply.content,
            )
        if self.cache is not None:
            self.cache.put(key, {"content": reply.content, "finish_reason": reply.finish_reason})
        return reply

    async def chat_many(
        self, requests: Sequence[dict[str, Any]], return_exceptions: bool = False
    ) -> list[LLMReply | BaseException]:
        """Many `chat(**request)` calls at once, `concurrency` in flight."""
        return list(
            await asyncio.gather(
                *(self.chat(**r) for r in requests), return_exceptions=return_exceptions
            )
        )

    def chat_sync(self, messages: Sequence[Message], **kwargs: Any) -> LLMReply:
        """`chat` from synchronous code (not from inside a running event loop)."""
        return asyncio.run(self.chat(messages, **kwargs))
