"""Pretraining the tiny base model on the project's own corpus (causal LM over every token).

    stats = pretrain_base(model, tokenizer, texts, PretrainConfig(steps=400))

Why: the paper fine-tunes Qwen3-14B-Base, which has read the web. The tiny default model
starts from random weights, and SFT with assistant-only loss gives it ~30 supervised tokens
per example (the JSON action) against ~1,000 of page it never learns to read. Measured on
357 stage-2 examples: after both stages it wrote the same reply for every prompt. So the
tiny base reads our corpus first, the way a real base model read its own: next-token loss on
every token of the rendered traces (pages, goals, JSON actions). Persona tokens are removed
from this text: they do not exist before stage 1, which adds and grounds them.

nanoGPT-style loop: the corpus is one token stream (documents joined by <|endoftext|>),
batches are random windows of `block_size` tokens, AdamW with warm-up and cosine decay.
"""

from __future__ import annotations

import math
import os
import re
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import Any, cast

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from simpersona.progress import progress_bar

PERSONA_MARKER = re.compile(r"<\|persona_\d+\|>")
MIN_BLOCK = 16  # shortest training window worth a step
DOC_SEPARATOR = "<|endoftext|>"  # as in Qwen's pretraining; <|im_end|> ends turns inside


@dataclass(frozen=True)
class PretrainConfig:
    """Defaults: the tiny model on 2 CPU cores, ~0.6 s per step (8 × 1,024 tokens)."""

    steps: int = 400
    block_size: int = 1024  # covers a page observation plus its reply
    batch_size: int = 8
    lr: float = 3e-3  # random init, 877 K parameters: far above a fine-tune's
    min_lr_ratio: float = 0.1
    warmup_steps: int = 30
    weight_decay: float = 0.01
    grad_clip: float = 1.0
    seed: int = 0
    log_every: int = 25
    # torch CPU threads; None: every core this process may use (an earlier stage in the same
    # process may have left torch at 1 thread, which halves the speed on 2 cores)
    num_threads: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def corpus_stream(tokenizer: PreTrainedTokenizerBase, texts: Iterable[str]) -> torch.Tensor:
    """All texts as one 1-D id stream, each followed by <|endoftext|>; persona markers
    removed. Duplicate texts (stage-1 and stage-2 share most pages) are kept once."""
    # one token in, one id (or None) out; a list of tokens would give a list
    sep = cast("int | None", tokenizer.convert_tokens_to_ids(DOC_SEPARATOR))
    if sep is None or sep == tokenizer.unk_token_id:
        sep = tokenizer.eos_token_id if tokenizer.eos_token_id is not None else 0
    seen: set[str] = set()
    ids: list[int] = []
    for text in texts:
        text = PERSONA_MARKER.sub("", text)
        if not text or text in seen:
            continue
        seen.add(text)
        ids.extend(tokenizer(text, add_special_tokens=False)["input_ids"])
        ids.append(sep)
    return torch.tensor(ids, dtype=torch.long)


def lr_at(step: int, cfg: PretrainConfig) -> float:
    """Linear warm-up, then cosine decay to `min_lr_ratio` · lr."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    progress = (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps)
    floor = cfg.lr * cfg.min_lr_ratio
    return floor + 0.5 * (cfg.lr - floor) * (1 + math.cos(math.pi * min(1.0, progress)))


def pretrain_base(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    texts: Iterable[str],
    cfg: PretrainConfig | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Train `model` in place on `texts` (causal LM, every token); returns the figures:
    steps, tokens in the corpus and seen, seconds, first/last loss and the loss history."""
    cfg = cfg or PretrainConfig()
    stream = corpus_stream(tokenizer, texts)
    if stream.numel() < MIN_BLOCK:
        raise ValueError(
            f"pretraining corpus has {stream.numel()} tokens; at least {MIN_BLOCK} are needed"
        )
    block = min(cfg.block_size, stream.numel())  # a corpus shorter than one block: shorter
    threads_before = torch.get_num_threads()
    torch.set_num_threads(cfg.num_threads or len(os.sched_getaffinity(0)))
    try:
        return _pretrain(model, stream, block, cfg, progress)
    finally:
        torch.set_num_threads(threads_before)


def _pretrain(
    model: PreTrainedModel, stream: torch.Tensor, block: int, cfg: PretrainConfig, progress: bool
) -> dict[str, Any]:
    gen = torch.Generator().manual_seed(cfg.seed)
    torch.manual_seed(cfg.seed)
    decay = [p for p in model.parameters() if p.ndim >= 2]  # matrices; not norms, biases
    no_decay = [p for p in model.parameters() if p.ndim < 2]
    groups: list[dict[str, Any]] = [
        {"params": decay, "weight_decay": cfg.weight_decay},
        {"params": no_decay},
    ]
    opt = torch.optim.AdamW(
        groups,
        lr=cfg.lr,
        betas=(0.9, 0.95),
    )
    model.train()
    offsets = torch.arange(block)
    history: list[tuple[int, float]] = []
    t0 = time.perf_counter()
    running = None
    with progress_bar(cfg.steps, "pretrain tiny base", unit="steps", enabled=progress) as bar:
        for step in range(cfg.steps):
            starts = torch.randint(0, stream.numel() - block + 1, (cfg.batch_size,), generator=gen)
            x = stream[starts[:, None] + offsets]  # (B, T): HF shifts the labels inside
            for group in opt.param_groups:
                group["lr"] = lr_at(step, cfg)
            loss = model(input_ids=x, labels=x).loss
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            opt.step()
            value = float(loss.detach())
            running = value if running is None else 0.9 * running + 0.1 * value
            if step == 0 or (step + 1) % cfg.log_every == 0 or step == cfg.steps - 1:
                history.append((step + 1, round(value, 4)))
            bar.advance()
            bar.note(loss=f"{running:.3f}")
    model.eval()
    return {
        "steps": cfg.steps,
        "corpus_tokens": int(stream.numel()),
        "tokens_seen": cfg.steps * cfg.batch_size * block,
        "seconds": round(time.perf_counter() - t0, 1),
        "loss_first": history[0][1],
        "loss_last": history[-1][1],
        "loss_history": history,
        "config": cfg.to_dict(),
    }
