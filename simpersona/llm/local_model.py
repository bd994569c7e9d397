"""A local Hugging Face causal LM answering chat requests: sampling, JSON-schema constrained
decoding (constrained.py), and batches whose shared prompt prefix is computed once
(`LocalModel.generate_batch`), run by one worker thread (`BatchEngine`). The HTTP API in
front of it is `simpersona.llm.server`."""

from __future__ import annotations

import copy
import os
import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import torch
from fastapi.responses import JSONResponse
from transformers import AutoModelForCausalLM, AutoTokenizer, DynamicCache
from transformers.cache_utils import CacheLayerMixin

from simpersona.devices import resolve_device, torch_threads
from simpersona.llm.constrained import (
    JsonConstraint,
    build_tokenizer,
    compile_schema,
)
from simpersona.llm.tiny import CHAT_TEMPLATE

DEFAULT_MAX_TOKENS = 1024  # when a request gives none (OpenAI: up to the context)
SMALL_MODEL = 50_000_000  # parameters; below this, CPU generation uses one thread
MIN_PREFIX = 16  # shared prompt tokens worth computing once for a batch (LocalModel._prefill)
PREFILL_ROWS = 4  # prompts prefilled in one forward pass


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
        self.device = resolve_device(device)
        self.tokenizer = AutoTokenizer.from_pretrained(self.path)
        torch_dtype = dtype if dtype == "auto" else getattr(torch, dtype)
        self.model = AutoModelForCausalLM.from_pretrained(self.path, dtype=torch_dtype)
        # PreTrainedModel.to all the same: transformers wraps it with functools.wraps, which
        # type checkers read as an unbound function, so it is typed through nn.Module
        cast(torch.nn.Module, self.model).to(self.device).eval()
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
        self._prefix: tuple[tuple[int, ...], DynamicCache] | None = None  # kept shared prefix
        self._last_prompt: list[int] = []

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
        req = GenRequest(prompt, max_tokens, temperature, top_p, seed, stop or [], constraint)
        return self.generate_batch([req])[0]

    @torch.inference_mode()
    def generate_batch(self, reqs: list[GenRequest]) -> list[Completion]:
        """Run `reqs` together: one batched prefill (the prompts' shared prefix computed once
        and reused, see `_prefill`), then one batched forward per token for every request
        still going; a request leaves the batch when it stops. Each request samples with its
        own settings, generator and JSON constraint, so its tokens are what it would get
        alone (up to float rounding between batch shapes)."""
        with torch_threads(self.threads):
            return self._generate_batch(reqs)

    def _generate_batch(self, reqs: list[GenRequest]) -> list[Completion]:
        n = len(reqs)
        gens = [
            torch.Generator(self.device).manual_seed(r.seed) if r.seed is not None else None
            for r in reqs
        ]
        live, cache, mask, pos, logits = self._prefill([r.prompt for r in reqs])
        valid = self.valid.to(self.device)
        ids: list[list[int]] = [[] for _ in reqs]
        texts: list[str | None] = [None] * n  # set when a stop string cut the text
        finish = ["length"] * n
        # live[row]: the request in batch row `row`, for the requests still in the batch
        step = 0
        while live:
            rows_next, tokens_next = [], []
            for row, i in enumerate(live):
                r = reqs[i]
                if step >= r.max_tokens:
                    continue
                lg = logits[row].float().masked_fill(~valid, -torch.inf)
                c = r.constraint
                if c is not None:
                    if c.done:
                        finish[i] = "stop"
                        continue
                    lg = lg.masked_fill(~c.allowed().to(self.device), -torch.inf)
                token = _sample(lg, r.temperature, r.top_p, gens[i])
                if c is not None:
                    token = c.commit(token, r.max_tokens - step)
                if token in self.eos_ids:
                    finish[i] = "stop"
                    continue
                ids[i].append(token)
                if r.stop or r.on_token is not None:
                    text = self._decode(ids[i])
                    cut = min((k for s in r.stop if (k := text.find(s)) >= 0), default=-1)
                    if cut >= 0:
                        texts[i], finish[i] = text[:cut], "stop"
                        continue
                    if r.on_token is not None:
                        r.on_token(text)
                if c is not None and c.done:
                    finish[i] = "stop"
                    continue
                if step + 1 >= r.max_tokens:
                    continue
                rows_next.append(row)
                tokens_next.append(token)
            step += 1
            if not rows_next:
                break
            if len(rows_next) < len(live):  # finished requests leave the batch
                keep = torch.tensor(rows_next, device=self.device)
                cache.batch_select_indices(keep)
                mask, pos = mask[keep], pos[keep]
                live = [live[row] for row in rows_next]
            mask = torch.cat([mask, mask.new_ones(len(live), 1)], dim=1)
            out = self.model(
                input_ids=torch.tensor(tokens_next, device=self.device)[:, None],
                attention_mask=mask,
                position_ids=pos[:, None],
                cache=cache,
                use_cache=True,
            )
            cache, logits, pos = out.cache, out.logits[:, -1], pos + 1
        results = []
        for i, r in enumerate(reqs):
            c = r.constraint
            if c is not None and finish[i] == "length" and c.complete:
                finish[i] = "stop"  # the budget ran out exactly as the JSON completed
            final = texts[i]
            if final is None:
                final = self._decode(ids[i])
            results.append(Completion(final, len(r.prompt), len(ids[i]), finish[i]))
        return results

    def _decode(self, ids: list[int]) -> str:
        # one sequence of ids decodes to one string (decode is typed for batches as well)
        return cast(str, self.tokenizer.decode(ids, skip_special_tokens=True))

    def _prefill(self, prompts: list[list[int]]):
        """(row order, cache, attention mask, next positions, last logits) of a batch of
        prompts; row r of the batch is prompt `order[r]`. Their shared prefix (the system
        prompt, the goal's start) is computed once, kept for the next batches while it still
        prefixes their prompts, and copied to every row; the rest of each prompt follows it,
        left-padded, with the pads masked out and positions counted from the prefix, so each
        row computes what it would alone. Prompts are prefilled a few at a time, shortest
        first, each group padded only to its own longest prompt; the groups' caches are then
        padded (masked zeros after the prefix) to one length for the batched decoding."""
        plen = self._shared_prefix(prompts)
        prefix = self._prefix_cache(tuple(prompts[0][:plen])) if plen else None
        order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
        suffixes = [prompts[i][plen:] for i in order]
        width = max(len(s) for s in suffixes)
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        dev = self.device
        caches, logits = [], []
        for lo in range(0, len(order), PREFILL_ROWS):
            group = suffixes[lo : lo + PREFILL_ROWS]
            w = max(len(s) for s in group)
            cache = DynamicCache()
            if prefix is not None:
                cache = copy.deepcopy(prefix)
                cache.batch_repeat_interleave(len(group))
            out = self.model(
                input_ids=torch.tensor([[pad] * (w - len(s)) + s for s in group], device=dev),
                attention_mask=torch.tensor(
                    [[1] * plen + [0] * (w - len(s)) + [1] * len(s) for s in group], device=dev
                ),
                position_ids=torch.tensor(
                    [[plen] * (w - len(s)) + list(range(plen, plen + len(s))) for s in group],
                    device=dev,
                ),
                cache=cache,
                use_cache=True,
                logits_to_keep=1,  # the vocabulary projection of the last position only
            )
            caches.append((out.cache, width - w))
            logits.append(out.logits[:, -1])
        mask = torch.tensor(
            [[1] * plen + [0] * (width - len(s)) + [1] * len(s) for s in suffixes], device=dev
        )
        nxt = torch.tensor([plen + len(s) for s in suffixes], device=dev)
        self._last_prompt = prompts[order[-1]]
        cache = _stack_caches(caches, plen, self.model.config)
        return order, cache, mask, nxt, torch.cat(logits)

    def _shared_prefix(self, prompts: list[list[int]]) -> int:
        """Tokens at the start of every prompt worth computing once: the kept prefix while it
        prefixes them all, else the longest prefix they share with each other and with the
        previous batch's last prompt (a lone request shares its system prompt with the
        previous one); 0 when that is shorter than `MIN_PREFIX`. At least one token of each
        prompt stays outside it (its logits start the reply)."""
        room = min(len(p) for p in prompts) - 1
        kept = self._prefix[0] if self._prefix is not None else ()
        if kept and len(kept) <= room and all(tuple(p[: len(kept)]) == kept for p in prompts):
            return len(kept)
        others = [*prompts, self._last_prompt] if self._last_prompt else prompts
        if len(others) < 2:
            return 0
        plen = 0
        for col in zip(*others, strict=False):
            if any(t != col[0] for t in col):
                break
            plen += 1
        plen = min(plen, room)
        return plen if plen >= MIN_PREFIX else 0

    def _prefix_cache(self, tokens: tuple[int, ...]) -> DynamicCache:
        if self._prefix is None or self._prefix[0] != tokens:
            out = self.model(
                input_ids=torch.tensor([list(tokens)], device=self.device),
                use_cache=True,
                logits_to_keep=1,
            )
            self._prefix = (tokens, out.cache)
        return self._prefix[1]


def _filled(layer: object) -> tuple[torch.Tensor, torch.Tensor]:
    """(keys, values) of a cache layer the prefill filled. A DynamicCache types its layers as
    any layer kind and their keys and values as optional until the first forward."""
    attention = cast(CacheLayerMixin, layer)
    return cast(torch.Tensor, attention.keys), cast(torch.Tensor, attention.values)


def _stack_caches(groups: list[tuple[DynamicCache, int]], plen: int, config: Any) -> DynamicCache:
    """One cache with the rows of every group stacked in order, each group's positions after
    the prefix (`plen`) left-padded by its given count of zeros (masked out by the caller's
    attention mask), so every row has one length."""
    if len(groups) == 1 and groups[0][1] == 0:
        return groups[0][0]

    def padded(t: torch.Tensor, n: int) -> torch.Tensor:
        if n == 0:
            return t
        gap = t.new_zeros(*t.shape[:2], n, t.shape[3])
        return torch.cat([t[:, :, :plen], gap, t[:, :, plen:]], dim=2)

    layers = []
    for i in range(len(groups[0][0].layers)):
        keys = torch.cat([padded(_filled(c.layers[i])[0], n) for c, n in groups])
        values = torch.cat([padded(_filled(c.layers[i])[1], n) for c, n in groups])
        layers.append((keys, values))
    return DynamicCache(ddp_cache_data=layers, config=config)


@dataclass
class GenRequest:
    """One completion to generate: the prompt's tokens and the sampling settings;
    `on_token` is called with the text so far after every token (streaming)."""

    prompt: list[int]
    max_tokens: int
    temperature: float = 1.0
    top_p: float = 1.0
    seed: int | None = None
    stop: list[str] = field(default_factory=list)
    constraint: JsonConstraint | None = None
    on_token: Callable[[str], object] | None = None  # its return value is ignored


class BatchEngine:
    """Runs the requests of many clients through one model in batches: a worker thread takes
    every request waiting when the model comes free (up to `max_batch`) and generates them
    together (`LocalModel.generate_batch`), so concurrent agents share each forward pass
    instead of queueing behind each other. `submit` returns a Future."""

    def __init__(self, lm: LocalModel, max_batch: int = 16, gather_s: float = 0.25) -> None:
        self.lm, self.max_batch, self.gather_s = lm, max_batch, gather_s
        self._queue: queue.Queue[tuple[GenRequest, Future]] = queue.Queue()
        self.batches = 0  # batches run, and the requests in them (for the benchmark)
        self.batched_requests = 0
        self._last_size = 0
        self._thread = threading.Thread(target=self._run, name="llm-batches", daemon=True)
        self._thread.start()

    def submit(self, req: GenRequest) -> Future:
        fut: Future = Future()
        self._queue.put((req, fut))
        return fut

    def _run(self) -> None:
        while True:
            batch = [self._queue.get()]
            # Gather briefly when several clients are about: agents answered by the last
            # batch send their next steps within moments of each other, and a batch that
            # starts without them leaves them waiting for its whole length. A lone client
            # (the last batch held one request) does not wait.
            until = time.monotonic() + (self.gather_s if self._last_size > 1 else 0.0)
            while len(batch) < self.max_batch:
                try:
                    batch.append(self._queue.get(timeout=max(0.0, until - time.monotonic())))
                except queue.Empty:
                    break
            reqs = [r for r, f in batch if f.set_running_or_notify_cancel()]
            futs = [f for _, f in batch if f.running()]
            if not reqs:
                continue
            self.batches += 1
            self.batched_requests += len(reqs)
            self._last_size = len(reqs)
            try:
                results = self.lm.generate_batch(reqs)
            except BaseException as exc:  # answered as a 500 to every request of the batch
                for f in futs:
                    f.set_exception(exc)
                continue
            for f, res in zip(futs, results, strict=True):
                f.set_result(res)
