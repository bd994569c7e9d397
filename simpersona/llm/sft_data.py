"""The SFT examples a training stage reads: loaded and validated, measured in tokens, and
checked against the persona tokens the model has."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any


def load_examples(dataset: str | os.PathLike[str] | Sequence[dict[str, Any]]) -> list[dict]:
    """SFT rows (`{"messages": [...], ...}`) from a JSONL path or a list, validated."""
    if isinstance(dataset, str | os.PathLike):
        from simpersona.traces.dataset import read_dataset

        rows, where = read_dataset(dataset), str(dataset)
    else:
        rows, where = list(dataset), "dataset"
    if not rows:
        raise ValueError(f"{where}: no examples")
    for i, r in enumerate(rows):
        msgs = r.get("messages") if isinstance(r, dict) else None
        if not isinstance(msgs, list) or not msgs:
            raise ValueError(f"{where} row {i + 1}: no 'messages' list")
        if not any(m.get("role") == "assistant" for m in msgs):
            raise ValueError(f"{where} row {i + 1}: no assistant turn to train on")
    return rows


def example_lengths(tokenizer, rows: Sequence[dict[str, Any]]) -> list[int]:
    """Tokens of each example rendered with the chat template (what the Trainer sees)."""
    out = []
    for r in rows:
        ids = tokenizer.apply_chat_template(r["messages"], tokenize=True, return_dict=True)
        out.append(len(ids["input_ids"]))
    return out


def prompt_lengths(tokenizer, rows: Sequence[dict[str, Any]]) -> list[int]:
    """Tokens of each example's prompt (all turns before the last assistant turn, with the
    generation prompt): what the policy feeds the model at run time."""
    out = []
    for r in rows:
        msgs = r["messages"]
        last = max(i for i, m in enumerate(msgs) if m["role"] == "assistant")
        ids = tokenizer.apply_chat_template(
            msgs[:last], tokenize=True, add_generation_prompt=True, return_dict=True
        )
        out.append(len(ids["input_ids"]))
    return out


def check_tokens_in_range(rows: Sequence[dict[str, Any]], k: int, where: str) -> None:
    bad = sorted({r["token"] for r in rows if r.get("token") is not None and r["token"] >= k})
    if bad:
        raise ValueError(f"{where}: persona tokens {bad[:5]} are >= k={k}")
