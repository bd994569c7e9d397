"""An OpenAI-compatible chat server for any local Hugging Face causal-LM folder (the tiny
model, a trained persona model, Qwen3-14B-Base), so the agents' LLM client talks to it exactly
as to vLLM or a hosted API.

    simpersona serve-llm --model models/tiny            # http://127.0.0.1:8008/v1

    with serve_in_background("models/tiny") as base_url:
        OpenAI(base_url=base_url + "/v1", api_key="-").chat.completions.create(...)

Endpoints: GET /v1/models, POST /v1/chat/completions (n=1, no streaming; `response_format`
json_object / json_schema decode under a JSON-schema constraint, see constrained.py),
GET /health. One model, one request at a time: requests queue on a lock and run in a worker
thread, so the event loop keeps answering. Binds loopback unless told otherwise.
"""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool
from transformers import AutoModelForCausalLM, AutoTokenizer

from simpersona.llm.constrained import (
    JsonConstraint,
    ResponseFormatError,
    build_tokenizer,
    compile_schema,
    schema_of,
)
from simpersona.llm.tiny import CHAT_TEMPLATE

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8008
DEFAULT_MAX_TOKENS = 1024  # when a request gives none (OpenAI: up to the context)
SMALL_MODEL = 50_000_000  # parameters; below this, CPU generation uses one thread


class APIError(Exception):
    """An error answered as OpenAI does: {"error": {"message", "type", "param", "code"}}."""

    def __init__(
        self,
        status: int,
        message: str,
        type: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status, self.message, self.type, self.param, self.code = (
            status,
            message,
            type,
            param,
            code,
        )

    def response(self) -> JSONResponse:
        body = {"message": self.message, "type": self.type, "param": self.param, "code": self.code}
        return JSONResponse({"error": body}, status_code=self.status)


@dataclass(frozen=True)
class Completion:
    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str  # "stop" | "length"


def _device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def _sample(
    logits: torch.Tensor, temperature: float, top_p: float, gen: torch.Generator | None
) -> int:
    if temperature == 0:
        return int(torch.argmax(logits))
    probs = torch.softmax(logits / temperature, dim=-1)
    if top_p < 1.0:  # nucleus: the smallest set of tokens whose probability reaches top_p
        p, idx = torch.sort(probs, descending=True)
        keep = torch.cumsum(p, 0) - p < top_p
        probs = torch.zeros_like(probs).scatter_(0, idx[keep], p[keep])
    return int(torch.multinomial(probs, 1, generator=gen))


def _text(content: Any) -> str:
    """Message content as text: a string, or the text parts of a content list."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = [p.get("text", "") for p in content if isinstance(p, dict)]
        if all(isinstance(p, dict) and p.get("type") == "text" for p in content):
            return "".join(parts)
    raise APIError(400, "message content must be a string or a list of text parts", "messages")


@contextmanager
def _torch_threads(n: int | None) -> Iterator[None]:
    """torch's intra-op threads set to `n` for the block (process-wide, hence restored)."""
    old = torch.get_num_threads()
    if n:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        if n:
            torch.set_num_threads(old)


class LocalModel:
    """A causal LM and its tokenizer, loaded once, generating one chat completion at a time."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        device: str = "auto",
        dtype: str = "auto",
        name: str | None = None,
        max_model_len: int | None = None,
        threads: int | None = None,
    ) -> None:
        self.path = Path(path)
        # CPU threads for generation (None: one for a small model on CPU, else torch's default).
        # The tiny model decodes a token in ~3 ms on one thread but took 10-100 ms on two
        # while another process held the cores (2-core machine).
        self.threads = threads
        self.name = name or self.path.name
        self.device = _device(device)
        self.tokenizer = AutoTokenizer.from_pretrained(self.path)
        torch_dtype = dtype if dtype == "auto" else getattr(torch, dtype)
        self.model = AutoModelForCausalLM.from_pretrained(self.path, dtype=torch_dtype)
        self.model.to(self.device).eval()
        if not self.tokenizer.chat_template:  # a bare base model: ChatML, what we train with
            self.tokenizer.chat_template = CHAT_TEMPLATE
        cfg = self.model.config
        self.context_length = max_model_len or int(
            getattr(cfg, "max_position_embeddings", 0) or self.tokenizer.model_max_length
        )
        self.n_vocab = int(self.model.get_output_embeddings().weight.shape[0])
        eos = self.model.generation_config.eos_token_id
        eos = [eos] if isinstance(eos, int) else list(eos or [])
        self.eos_ids = set(eos) | {self.tokenizer.eos_token_id} - {None}
        # Rows past the tokenizer (vocabulary padding) are never real tokens.
        self.valid = torch.zeros(self.n_vocab, dtype=torch.bool)
        self.valid[: len(self.tokenizer)] = True
        self.lltok = build_tokenizer(self.tokenizer, self.n_vocab)
        n_params = sum(p.numel() for p in self.model.parameters())
        if threads is None and self.device.type == "cpu" and n_params < SMALL_MODEL:
            self.threads = 1  # small matrices gain nothing from threads, and lose under load
        self.created = int(time.time())

    def prompt_ids(self, messages: list[dict[str, str]]) -> list[int]:
        text = self.tokenizer.apply_chat_template(
            messages, tokenize=False, add_generation_prompt=True
        )
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def constraint(self, schema: dict[str, Any] | None) -> JsonConstraint | None:
        if schema is None:
            return None
        return JsonConstraint(self.lltok, compile_schema(schema, self.lltok), self.n_vocab)

    @torch.inference_mode()
    def generate(
        self,
        prompt: list[int],
        max_tokens: int,
        temperature: float = 1.0,
        top_p: float = 1.0,
        seed: int | None = None,
        stop: list[str] | None = None,
        constraint: JsonConstraint | None = None,
    ) -> Completion:
        """Sample up to `max_tokens` tokens after `prompt` (KV-cached, one token a step)."""
        with _torch_threads(self.threads):
            return self._generate(prompt, max_tokens, temperature, top_p, seed, stop, constraint)

    def _generate(
        self,
        prompt: list[int],
        max_tokens: int,
        temperature: float,
        top_p: float,
        seed: int | None,
        stop: list[str] | None,
        constraint: JsonConstraint | None,
    ) -> Completion:
        gen = None
        if seed is not None:
            gen = torch.Generator(self.device).manual_seed(seed)
        out = self.model(input_ids=torch.tensor([prompt], device=self.device), use_cache=True)
        past, logits = out.past_key_values, out.logits[0, -1]
        valid = self.valid.to(self.device)
        ids: list[int] = []
        text, finish = "", "length"
        for step in range(max_tokens):
            logits = logits.float().masked_fill(~valid, -torch.inf)
            if constraint is not None:
                if constraint.done:
                    finish = "stop"
                    break
                logits = logits.masked_fill(~constraint.allowed().to(self.device), -torch.inf)
            token = _sample(logits, temperature, top_p, gen)
            if constraint is not None:
                token = constraint.commit(token, max_tokens - step)
            if token in self.eos_ids:
                finish = "stop"
                break
            ids.append(token)
            if stop:
                text = self.tokenizer.decode(ids, skip_special_tokens=True)
                cut = min((i for s in stop if (i := text.find(s)) >= 0), default=-1)
                if cut >= 0:
                    text, finish = text[:cut], "stop"
                    break
            if constraint is not None and constraint.done:
                finish = "stop"
                break
            out = self.model(
                input_ids=torch.tensor([[token]], device=self.device),
                past_key_values=past,
                use_cache=True,
            )
            past, logits = out.past_key_values, out.logits[0, -1]
        if constraint is not None and finish == "length" and constraint.complete:
            finish = "stop"  # the budget ran out exactly as the JSON completed
        if finish != "stop" or not stop:
            text = self.tokenizer.decode(ids, skip_special_tokens=True)
        return Completion(text, len(prompt), len(ids), finish)


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


def _complete(lm: LocalModel, req: ChatRequest) -> dict[str, Any]:
    """Validate a request against the model and run it (called in the worker thread)."""
    if req.model not in (lm.name, str(lm.path)):
        raise APIError(
            404, f"model {req.model!r} not found; this server serves {lm.name!r}",
            param="model", code="model_not_found",
        )  # fmt: skip
    if req.n not in (None, 1):
        raise APIError(400, "only n=1 is supported", param="n")
    if req.stream:
        raise APIError(400, "streaming is not supported", param="stream")
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
    stop = [req.stop] if isinstance(req.stop, str) else [s for s in req.stop or [] if s]
    result = lm.generate(
        prompt,
        max_tokens=max_tokens or min(DEFAULT_MAX_TOKENS, room),
        temperature=1.0 if req.temperature is None else req.temperature,
        top_p=1.0 if req.top_p is None else req.top_p,
        seed=req.seed,
        stop=stop,
        constraint=constraint,
    )
    return {
        "id": f"chatcmpl-{uuid.uuid4().hex}",
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


def create_app(lm: LocalModel) -> FastAPI:
    """The FastAPI app serving `lm`."""
    app = FastAPI(title="SimPersona local LLM", docs_url=None, redoc_url=None)
    lock = asyncio.Lock()  # one generation at a time: one model, no batching

    @app.exception_handler(APIError)
    async def api_error(_: Request, exc: APIError) -> JSONResponse:
        return exc.response()

    @app.exception_handler(RequestValidationError)
    async def bad_request(_: Request, exc: RequestValidationError) -> JSONResponse:
        err = exc.errors()[0] if exc.errors() else {"loc": (), "msg": "invalid request"}
        loc = ".".join(str(x) for x in err["loc"] if x != "body")
        return APIError(400, f"{loc}: {err['msg']}" if loc else err["msg"], param=loc).response()

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        card = {"id": lm.name, "object": "model", "created": lm.created, "owned_by": "local"}
        return {"object": "list", "data": [{**card, "max_model_len": lm.context_length}]}

    @app.post("/v1/chat/completions")
    async def chat_completions(req: ChatRequest) -> dict[str, Any]:
        async with lock:
            return await run_in_threadpool(_complete, lm, req)

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
