"""An OpenAI-compatible chat server for any local Hugging Face causal-LM folder (the tiny
model, a trained persona model, Qwen3-14B-Base), so the agents' LLM client talks to it exactly
as to vLLM or a hosted API.

    simpersona serve-llm --model models/tiny            # http://127.0.0.1:8008/v1

    with serve_in_background("models/tiny") as base_url:
        OpenAI(base_url=base_url + "/v1", api_key="-").chat.completions.create(...)

Endpoints: GET /v1/models, POST /v1/chat/completions (n=1; `stream=true` answers with
server-sent events; `response_format` json_object / json_schema decode under a JSON-schema
constraint, see constrained.py), GET /health. Concurrent requests are batched: a worker
thread runs every request waiting when the model comes free in one batch, their shared prompt
prefix computed once (`BatchEngine`, `LocalModel.generate_batch`), so the event loop keeps
answering and agents share each forward pass. Binds loopback unless told otherwise.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from simpersona.llm.constrained import (
    ResponseFormatError,
    schema_of,
)
from simpersona.llm.local_model import (
    DEFAULT_MAX_TOKENS,
    APIError,
    BatchEngine,
    Completion,
    GenRequest,
    LocalModel,
    _text,
)

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8008
# ---- the HTTP API --------------------------------------------------------------------------


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow")
    role: str
    content: str | list[dict[str, Any]] | None = None


class ChatRequest(BaseModel):
    # Unknown fields (logprobs, user, metadata, …) are ignored, as most servers do.
    model_config = ConfigDict(extra="allow")
    model: str
    messages: list[ChatMessage] = Field(min_length=1)
    max_tokens: int | None = Field(default=None, ge=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, gt=0, le=1)
    seed: int | None = None
    stop: str | list[str] | None = None
    n: int | None = None
    stream: bool | None = None
    response_format: dict[str, Any] | None = None


def _prepare(lm: LocalModel, req: ChatRequest) -> GenRequest:
    """Validate a request against the model and build its generation request (tokenizing
    and compiling its JSON schema: run in a worker thread, off the event loop)."""
    if req.model not in (lm.name, str(lm.path)):
        raise APIError(
            404, f"model {req.model!r} not found; this server serves {lm.name!r}",
            param="model", code="model_not_found",
        )  # fmt: skip
    if req.n not in (None, 1):
        raise APIError(400, "only n=1 is supported", param="n")
    try:
        constraint = lm.constraint(schema_of(req.response_format))
    except ResponseFormatError as exc:
        raise APIError(400, str(exc), param="response_format") from None
    messages = [{"role": m.role, "content": _text(m.content)} for m in req.messages]
    prompt = lm.prompt_ids(messages)
    room = lm.context_length - len(prompt)
    max_tokens = req.max_completion_tokens or req.max_tokens
    if room < 1 or (max_tokens is not None and max_tokens > room):
        raise APIError(
            400,
            f"this model's maximum context length is {lm.context_length} tokens; the messages "
            f"take {len(prompt)} and max_tokens asks for {max_tokens or 1} more",
            param="messages",
            code="context_length_exceeded",
        )
    return GenRequest(
        prompt,
        max_tokens=max_tokens or min(DEFAULT_MAX_TOKENS, room),
        temperature=1.0 if req.temperature is None else req.temperature,
        top_p=1.0 if req.top_p is None else req.top_p,
        seed=req.seed,
        stop=[req.stop] if isinstance(req.stop, str) else [s for s in req.stop or [] if s],
        constraint=constraint,
    )


def _completion_body(lm: LocalModel, result: Completion, cid: str) -> dict[str, Any]:
    return {
        "id": cid,
        "object": "chat.completion",
        "created": int(time.time()),
        "model": lm.name,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": result.text},
                "logprobs": None,
                "finish_reason": result.finish_reason,
            }
        ],
        "usage": {
            "prompt_tokens": result.prompt_tokens,
            "completion_tokens": result.completion_tokens,
            "total_tokens": result.prompt_tokens + result.completion_tokens,
        },
    }


def _chunk(lm: LocalModel, cid: str, delta: dict[str, Any], finish: str | None = None) -> str:
    body = {
        "id": cid,
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": lm.name,
        "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
    }
    return f"data: {json.dumps(body, ensure_ascii=False)}\n\n"


async def _stream(engine: BatchEngine, lm: LocalModel, gen: GenRequest, cid: str):
    """Server-sent events as OpenAI streams them: a role chunk, content deltas as tokens
    come, a chunk with the finish reason, `[DONE]`. With stop strings, the last characters
    that could begin one are held back until the text settles, so no stop text is sent."""
    loop = asyncio.get_running_loop()
    texts: asyncio.Queue[str] = asyncio.Queue()
    hold = max((len(s) for s in gen.stop), default=1) - 1
    gen.on_token = lambda text: loop.call_soon_threadsafe(texts.put_nowait, text)
    fut = asyncio.wrap_future(engine.submit(gen))
    yield _chunk(lm, cid, {"role": "assistant", "content": ""})
    sent = 0
    while not (fut.done() and texts.empty()):
        getter = asyncio.ensure_future(texts.get())
        done, _ = await asyncio.wait({getter, fut}, return_when=asyncio.FIRST_COMPLETED)
        if getter not in done:
            getter.cancel()
            continue
        text = getter.result()
        safe = len(text) - hold
        if safe > sent:
            yield _chunk(lm, cid, {"content": text[sent:safe]})
            sent = safe
    result = fut.result()
    if len(result.text) > sent:
        yield _chunk(lm, cid, {"content": result.text[sent:]})
    yield _chunk(lm, cid, {}, result.finish_reason)
    yield "data: [DONE]\n\n"


def create_app(lm: LocalModel, max_batch: int = 16) -> FastAPI:
    """The FastAPI app serving `lm`; concurrent requests are batched (`BatchEngine`)."""
    app = FastAPI(title="SimPersona local LLM", docs_url=None, redoc_url=None)
    engine = BatchEngine(lm, max_batch)
    app.state.engine = engine

    @app.exception_handler(APIError)
    async def api_error(_: Request, exc: APIError) -> JSONResponse:
        return exc.response()

    @app.exception_handler(RequestValidationError)
    async def bad_request(_: Request, exc: RequestValidationError) -> JSONResponse:
        err: dict[str, Any] = (
            exc.errors()[0] if exc.errors() else {"loc": (), "msg": "invalid request"}
        )
        loc = ".".join(str(x) for x in err["loc"] if x != "body")
        return APIError(400, f"{loc}: {err['msg']}" if loc else err["msg"], param=loc).response()

    @app.get("/health")
    async def health() -> dict[str, Any]:
        return {"status": "ok", "batches": engine.batches, "requests": engine.batched_requests}

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        card = {"id": lm.name, "object": "model", "created": lm.created, "owned_by": "local"}
        return {"object": "list", "data": [{**card, "max_model_len": lm.context_length}]}

    @app.post("/v1/chat/completions", response_model=None)
    async def chat_completions(req: ChatRequest) -> dict[str, Any] | StreamingResponse:
        gen = await run_in_threadpool(_prepare, lm, req)
        cid = f"chatcmpl-{uuid.uuid4().hex}"
        if req.stream:
            return StreamingResponse(_stream(engine, lm, gen, cid), media_type="text/event-stream")
        result = await asyncio.wrap_future(engine.submit(gen))
        return _completion_body(lm, result, cid)

    return app


@contextmanager
def serve_in_background(
    model_path: str | os.PathLike[str],
    host: str = DEFAULT_HOST,
    port: int = 0,
    **model_kwargs: Any,
) -> Iterator[str]:
    """Load the model, serve it with uvicorn in a thread (port 0 = a free port) and yield the
    base URL (append /v1 for the OpenAI SDK) once /v1/models answers; stop on exit."""
    import httpx

    from simpersona.store.server import run_in_thread

    app = create_app(LocalModel(model_path, **model_kwargs))
    base_url, stop = run_in_thread(app, port=port, host=host, name="llm")
    try:
        httpx.get(base_url + "/v1/models", timeout=10).raise_for_status()
        yield base_url
    finally:
        stop()
