"""JSON-schema constrained decoding for the local model server, within a token budget.

The token masks come from llguidance (the Rust engine behind guidance, also used by vLLM,
SGLang and llama.cpp): full JSON Schema ($ref, anyOf/oneOf, enum/const, string lengths,
numeric ranges, arrays), any HF fast tokenizer, ~µs per mask, no dependencies. Checked on
transformers 5.23 / CPU against the alternatives: lm-format-enforcer's transformers
integration does not import under transformers 5 (`transformers.tokenization_utils` is gone);
xgrammar works but requires triton (~0.7 GB) on Linux even on CPU and allows unbounded
whitespace by default; outlines pulls in far more than we need.

A grammar alone does not end the output: an untrained model keeps writing inside a string
forever. So `JsonConstraint` adds a budget guard. `closing_cost` plays a deterministic
"closer" on a copy of the parser state (close the string, close brackets, take forced
tokens, else the smallest allowed token id) and counts the tokens until the JSON is complete.
A sampled token is kept only if the JSON can still be closed in the tokens left after it;
otherwise the closer's token is taken instead. By induction the closer's path always fits,
so if it fits at the start (a few tokens for most schemas) the output is complete, valid
JSON within max_tokens; if not even that fits, generation ends with finish_reason "length".
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, TypeGuard, cast

import llguidance
import llguidance.hf
import numpy as np
import torch
from transformers import PreTrainedTokenizerBase, PreTrainedTokenizerFast

if TYPE_CHECKING:  # a TypedDict of llguidance's stubs only (not importable at run time)
    from llguidance._lib import JsonCompileOptions

# json.dumps' default separators: constrained output then looks like the SFT traces (written
# with json.dumps) and like what Qwen models write anyway. No other whitespace is allowed, so a
# model cannot stall in a run of spaces.
JSON_OPTIONS: JsonCompileOptions = {
    "item_separator": ", ",
    "key_separator": ": ",
    "whitespace_flexible": False,
}
MAX_CLOSING = 512  # a closer longer than this counts as "cannot close"


class ResponseFormatError(ValueError):
    """A response_format the server can't honour (shown to the client as a 400)."""


def schema_of(response_format: dict[str, Any] | None) -> dict[str, Any] | None:
    """The JSON schema an OpenAI `response_format` asks for; None for plain text."""
    if response_format is None:
        return None
    kind = response_format.get("type")
    if kind == "text":
        return None
    if kind == "json_object":
        return {"type": "object"}
    if kind == "json_schema":
        spec = response_format.get("json_schema")
        schema = spec.get("schema") if isinstance(spec, dict) else None
        if not isinstance(schema, dict):
            raise ResponseFormatError(
                "response_format json_schema needs {'json_schema': {'name': ..., 'schema': {...}}}"
            )
        return schema
    raise ResponseFormatError(
        f"unknown response_format type {kind!r}; expected 'text', 'json_object' or 'json_schema'"
    )


def build_tokenizer(tokenizer: PreTrainedTokenizerBase, n_vocab: int) -> llguidance.LLTokenizer:
    """llguidance's view of an HF fast tokenizer with `n_vocab` logits (the model's padded
    vocabulary: ids past the tokenizer are never allowed). Build once per model (~1 s for a
    150 k vocabulary)."""
    # a fast tokenizer (what AutoTokenizer loads for the served models); llguidance reads
    # the underlying `tokenizers` one
    fast = cast(PreTrainedTokenizerFast, tokenizer)
    return llguidance.hf.from_tokenizer(fast, n_vocab=n_vocab)


def compile_schema(schema: dict[str, Any], lltok: llguidance.LLTokenizer) -> str:
    """The llguidance grammar of `schema`; ResponseFormatError when it is not usable."""
    try:
        grammar = llguidance.LLMatcher.grammar_from_json_schema(schema, defaults=JSON_OPTIONS)
    except ValueError as exc:
        raise ResponseFormatError(f"invalid JSON schema: {exc}") from None
    is_error, messages = llguidance.LLMatcher.validate_grammar_with_warnings(grammar, lltok)
    if is_error:
        raise ResponseFormatError(f"unsupported JSON schema: {messages[0]}")
    return grammar


class JsonConstraint:
    """Masks and budget guard for one completion; see the module docstring."""

    def __init__(self, lltok: llguidance.LLTokenizer, grammar: str, n_vocab: int) -> None:
        self.matcher = llguidance.LLMatcher(lltok, grammar, log_level=0)
        if self.matcher.is_error():
            raise ResponseFormatError(f"unsupported JSON schema: {self.matcher.get_error()}")
        self.n_vocab = n_vocab
        self.eos = lltok.eos_token
        one = {c: t[0] for c in '"}]#' if len(t := lltok.tokenize_str(c)) == 1}
        self.quote, self.probe = one.get('"'), one.get("#")
        self.brackets = [one[c] for c in "}]" if c in one]

    @property
    def done(self) -> bool:
        """The JSON is complete and nothing but end-of-sequence may follow."""
        return self.matcher.is_stopped()

    @property
    def complete(self) -> bool:
        """The text so far is a complete value of the schema."""
        return self.matcher.is_accepting()

    def allowed(self) -> torch.Tensor:
        """Boolean mask over the vocabulary of the tokens the grammar allows next."""
        bits = np.frombuffer(self.matcher.compute_bitmask(), dtype=np.uint8)
        mask = np.unpackbits(bits, bitorder="little")[: self.n_vocab].astype(bool)
        return torch.from_numpy(mask)

    def _valid(self, token: int | None) -> TypeGuard[int]:
        return token is not None and self.matcher.validate_tokens([token]) == 1

    def _closer_token(self) -> int:
        """The next token on the way to the end: close the open string, else close brackets,
        else the forced tokens, else the smallest allowed id (byte tokens come first in BPE
        vocabularies, so one character a step, and `"` before digits and letters)."""
        # '#' is allowed inside a free string and never outside one: that tells a closing
        # quote from an opening one, and keeps us from writing '}' into a string as text.
        if self._valid(self.probe):
            if self._valid(self.quote):
                return self.quote
        else:
            for t in self.brackets:
                if self._valid(t):
                    return t
        forced = self.matcher.compute_ff_tokens()
        if forced:
            return forced[0]
        allowed = np.flatnonzero(self.allowed().numpy())
        allowed = allowed[allowed != self.eos]
        if len(allowed) == 0:
            raise RuntimeError("grammar allows no token")  # cannot happen for JSON schemas
        return int(allowed[0])

    def closing_cost(self, limit: int = MAX_CLOSING) -> int:
        """Tokens the closer needs to complete the JSON from here (limit + 1 if more)."""
        m = self.matcher
        n = 0
        while not m.is_accepting() and n <= limit:
            if not m.consume_token(self._closer_token()):
                break
            n += 1
        if n:
            m.rollback(n)
        return n

    def commit(self, token: int, remaining: int) -> int:
        """Consume the sampled `token` if the JSON can still be closed in the `remaining - 1`
        tokens after it, else the closer's token. Returns the token consumed."""
        m = self.matcher
        if token == self.eos and m.is_accepting():
            return token
        # validate first: consuming a disallowed token would put the matcher in an error
        # state it never leaves
        if m.validate_tokens([token]) == 1 and m.consume_token(token):
            if self.closing_cost(remaining - 1) <= remaining - 1:
                return token
            m.rollback(1)
        token = self._closer_token()
        m.consume_token(token)
        return token
