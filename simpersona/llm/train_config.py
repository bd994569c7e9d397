"""Hyper-parameters of one SFT stage (`TrainConfig`: the paper's production values, and the
CPU profiles measured here), what a stage reports (`TrainResult`), and the precision and
DeepSpeed choices that follow from them (docs/llm.md, "Training")."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Literal

DEEPSPEED_DIR = Path(__file__).with_name("deepspeed")


@dataclass(frozen=True)
class TrainConfig:
    """Hyperparameters of one SFT stage. Defaults: the paper's production run (Qwen3-14B-Base,
    2 nodes x 8 H200): lr 1e-5 cosine, 50 warm-up steps, weight decay 0.01, effective batch
    64, max length 16,384, bf16, 1 epoch. `TrainConfig.cpu()` is the tiny model's."""

    lr: float = 1e-5
    stage1_lr: float | None = None  # stage 1's lr when set (only K rows train); else `lr`
    scheduler: str = "cosine"
    warmup_steps: int = 50
    weight_decay: float = 0.01
    effective_batch: int = 64  # per-device batch x accumulation x processes
    per_device_batch: int = 1
    max_length: int = 16384  # longer examples are dropped (and counted), never cut
    epochs: float = 1.0
    stage1_epochs: float | None = None  # stage 1's epochs when set; else `epochs`
    group_by_length: bool = True  # batches of similar length: less padding
    max_steps: int = -1  # > 0: stop after this many optimiser steps (tests, smoke runs)
    bf16: bool = True  # GPU; a CPU only with native bf16 (cpu_has_bf16), else float32
    gradient_checkpointing: bool = True  # 14B needs it; ~10x slower on the tiny model
    seed: int = 0
    device: Literal["auto", "cpu", "cuda"] = "auto"
    num_threads: int | None = None  # torch CPU threads (1 is fastest on a busy machine)
    deepspeed: str | None = None  # a config in simpersona/llm/deepspeed/ (name) or a path
    logging_steps: int = 10
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.05
    progress: bool = True  # the Trainer's tqdm bar

    @classmethod
    def cpu(cls, **overrides: Any) -> TrainConfig:
        """The tiny model on a CPU, after its pretraining on the project's corpus
        (simpersona.llm.pretrain): a far higher lr than a 14B fine-tune and several epochs
        (stage 1, which only moves K rows, one). Max length 2,048 holds every example of the
        generated shops (prompts p50 967, p95 1,744, max 1,925 tokens with a tokenizer trained
        on the traces). One torch thread: fastest when the machine is busy with the
        browser and the storefront too. Measured figures: docs/llm.md."""
        base = cls(
            lr=2e-3,
            stage1_lr=1e-2,
            stage1_epochs=1.0,
            warmup_steps=20,
            weight_decay=0.01,
            effective_batch=8,
            per_device_batch=4,
            max_length=2048,
            epochs=3.0,
            bf16=False,
            gradient_checkpointing=False,
            device="cpu",
            num_threads=1,
            logging_steps=5,
        )
        return replace(base, **overrides)

    @classmethod
    def cpu_base(cls, **overrides: Any) -> TrainConfig:
        """A small pretrained base (SmolLM2-135M-Instruct) on a CPU: a fine-tune, not the tiny
        model's training from scratch — lr 5e-5 (the pilot's: 0 → 97-100 % valid JSON on
        held-out prompts), stage 1's K rows at 1e-3, batch 1 × 4 accumulated, one epoch, bf16
        where the CPU has it natively, every core. Measured figures: docs/llm.md."""
        base = cls(
            lr=5e-5,
            stage1_lr=1e-3,
            warmup_steps=5,
            weight_decay=0.01,
            effective_batch=4,
            per_device_batch=1,
            max_length=2048,
            epochs=1.0,
            bf16=True,
            gradient_checkpointing=False,
            device="cpu",
            num_threads=None,
            logging_steps=5,
        )
        return replace(base, **overrides)

    @classmethod
    def for_profile(
        cls, profile: str, model_dir: str | os.PathLike[str] | None = None, gpu: bool = False
    ) -> TrainConfig:
        """The config of a profile name: `cpu` (the tiny model), `cpu_base` (a small
        pretrained base on a CPU), `production` (the paper's) or `auto`: production on a
        GPU, else cpu for a tiny model (its folder has tiny_config.json), else cpu_base."""
        if profile == "auto":
            tiny = model_dir is not None and (Path(model_dir) / "tiny_config.json").exists()
            profile = "production" if gpu else ("cpu" if tiny else "cpu_base")
        makers: dict[str, Callable[[], TrainConfig]] = {
            "cpu": cls.cpu,
            "cpu_base": cls.cpu_base,
            "production": cls,
        }
        if profile not in makers:
            raise ValueError(f"profile must be auto or one of {', '.join(makers)}, got {profile!r}")
        return makers[profile]()

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown TrainConfig fields: {unknown}")
        return cls(**d)


@dataclass
class TrainResult:
    """What one stage did. `train_loss`: mean over the run (the Trainer's); `final_loss`: the
    last logged value; `tokens`: tokens of the examples trained on (one epoch)."""

    stage: str
    out_dir: str
    steps: int
    train_loss: float
    final_loss: float
    seconds: float
    n_examples: int
    n_dropped: int
    tokens: int
    loss_tokens: int
    trainable_params: int
    world_size: int = 1
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def resolve_deepspeed(name: str | None) -> str | None:
    """A DeepSpeed config path: a packaged name ("zero2", "zero3.json") or a file path."""
    if not name:
        return None
    p = Path(name)
    if p.exists():
        return str(p)
    packaged = DEEPSPEED_DIR / (name if name.endswith(".json") else f"{name}.json")
    if packaged.exists():
        return str(packaged)
    raise FileNotFoundError(
        f"DeepSpeed config {name!r} not found (packaged: "
        f"{sorted(q.stem for q in DEEPSPEED_DIR.glob('*.json'))})"
    )


def cpu_has_bf16() -> bool:
    """Whether this CPU computes bfloat16 natively (AVX512-BF16 or AMX). Without it, torch
    emulates bf16 autocast: a 1,024-token SmolLM2 training step took 212 s instead of 8.3 s
    in float32 on an AVX2-only machine (docs/llm.md), so bf16 is used only where native."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return " avx512_bf16" in flags or " amx_bf16" in flags


def use_bf16(cfg: TrainConfig, gpu: bool) -> bool:
    """bf16 mixed precision: on a GPU as configured; on a CPU only where it is native."""
    return cfg.bf16 and (gpu or cpu_has_bf16())
