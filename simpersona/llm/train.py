"""Two-stage persona grounding (paper §2.3): stage 1 trains only the K persona-token embedding
rows of a frozen model, stage 2 fine-tunes all parameters (or LoRA), both with TRL's
SFTTrainer on the SFT datasets (one chat example per step), loss on assistant turns only.

    r1 = train_stage1("models/tiny", "sft/stage1.jsonl", "out/stage1", TrainConfig.cpu(), k=256)
    r2 = train_stage2(r1.out_dir, "sft/stage2.jsonl", "out/stage2", TrainConfig.cpu())

Every stage reads an ordinary Hugging Face model folder and writes one (adapters merged), so
`from_pretrained`, `serve-llm` and the next stage load it unchanged. The same functions run
in one CPU process and, under `deepspeed`/`torchrun`, on GPU nodes:

    python -m simpersona.llm.train --config run.json     # what simpersona.llm.launch starts
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any, Literal

from simpersona.lake import shareable
from simpersona.llm.row_delta import merge_rows, train_only_rows
from simpersona.llm.sft_data import check_tokens_in_range, example_lengths, load_examples
from simpersona.llm.train_config import (
    TrainConfig,
    TrainResult,
    resolve_deepspeed,
    use_bf16,
)

PersonaInit = Literal["mean", "random", "codebook"]


# ---- helpers -------------------------------------------------------------------------------
def _on_gpu(cfg: TrainConfig) -> bool:
    from simpersona.devices import resolve_device

    return resolve_device(cfg.device, strict=True).type == "cuda"


def _world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def _is_main() -> bool:
    return int(os.environ.get("RANK", "0")) == 0


def _init_distributed(cfg: TrainConfig, gpu: bool) -> None:
    """Under DeepSpeed on CPU, start torch.distributed on gloo before the Trainer would pick
    a backend the CPU accelerator lacks (ccl)."""
    if cfg.deepspeed and not gpu and _world_size() >= 1 and "LOCAL_RANK" in os.environ:
        import deepspeed
        import torch.distributed as dist

        if not dist.is_initialized():
            deepspeed.init_distributed(dist_backend="gloo")


def _load(model_dir: str | os.PathLike[str], gpu: bool, cfg: TrainConfig):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.integrations.deepspeed import unset_hf_deepspeed_config

    # A previous stage's ZeRO-3 config must not turn this load into a sharded zero.Init:
    # the whole model is loaded on each process and DeepSpeed shards it when training starts.
    unset_hf_deepspeed_config()

    tok = AutoTokenizer.from_pretrained(model_dir)
    tok.chat_template = training_template(tok)
    dtype = torch.bfloat16 if gpu and cfg.bf16 else torch.float32
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=dtype)
    return model, tok


def training_template(tok) -> str:
    """The chat template SFT renders examples with: the tokenizer's own with generation
    markers around the assistant's reply and end of turn (simpersona.llm.chat_template), so
    the loss covers exactly what the model writes. A folder without a template (a bare base
    such as the tiny Qwen3 before it had one) gets ChatML. A template whose turns cannot be
    reproduced with markers (Qwen3's thinking blocks change the last assistant turn) also
    falls back to ChatML — Qwen's own special tokens — and says so on stderr."""
    from simpersona.llm.chat_template import TemplateError, with_generation_markers
    from simpersona.llm.tiny import CHAT_TEMPLATE

    if not tok.chat_template:
        return CHAT_TEMPLATE
    try:
        return with_generation_markers(tok)
    except TemplateError as exc:
        print(f"chat template: {exc}; training with ChatML instead", file=sys.stderr)
        return CHAT_TEMPLATE


def _ensure_persona_tokens(
    model,
    tok,
    k: int,
    persona_init: PersonaInit,
    codebook: Any = None,
    seed: int = 0,
) -> tuple[list[int], bool]:
    """Persona ids, adding the tokens (and initialising their rows) when absent."""
    import numpy as np
    import torch

    from simpersona.llm.persona_tokens import (
        add_persona_tokens,
        init_from_codebook,
        persona_token_ids,
    )

    try:
        return persona_token_ids(tok, k), False
    except KeyError:
        pass
    torch.manual_seed(seed)
    if persona_init == "codebook":
        if codebook is None:
            raise ValueError("persona_init='codebook' needs a codebook ([K, d] array or .npy)")
        cb = np.load(codebook) if isinstance(codebook, str | os.PathLike) else np.asarray(codebook)
        ids = add_persona_tokens(model, tok, k, init="mean")
        init_from_codebook(model, ids, cb)
    else:
        ids = add_persona_tokens(model, tok, k, init=persona_init)
    return ids, True


def _sft_args(cfg: TrainConfig, out_dir: Path, lr: float, epochs: float, gpu: bool):
    from trl import SFTConfig

    world = _world_size()
    accum = max(1, round(cfg.effective_batch / (cfg.per_device_batch * world)))
    return SFTConfig(
        output_dir=str(out_dir),
        learning_rate=lr,
        lr_scheduler_type=cfg.scheduler,
        warmup_steps=cfg.warmup_steps,
        weight_decay=cfg.weight_decay,
        per_device_train_batch_size=cfg.per_device_batch,
        gradient_accumulation_steps=accum,
        num_train_epochs=epochs,
        max_steps=cfg.max_steps,
        max_length=cfg.max_length,
        packing=False,  # assistant-only loss has no effect with packing (trl#3728)
        assistant_only_loss=True,
        use_cpu=not gpu and not cfg.deepspeed,
        bf16=use_bf16(cfg, gpu),  # autocast: the weights stay float32 on a CPU
        gradient_checkpointing=cfg.gradient_checkpointing and gpu,
        seed=cfg.seed,
        data_seed=cfg.seed,
        logging_steps=cfg.logging_steps,
        save_strategy="no",
        report_to="none",
        disable_tqdm=not (cfg.progress and _is_main()),
        dataloader_num_workers=0,
        dataloader_pin_memory=gpu,
        train_sampling_strategy="group_by_length" if cfg.group_by_length else "random",
        dataset_num_proc=None,
        deepspeed=resolve_deepspeed(cfg.deepspeed),
        # plain multi-process CPU runs (torchrun) use gloo; one process must have no backend
        ddp_backend="gloo" if not gpu and world > 1 and not cfg.deepspeed else None,
    )


def _dataset(rows: Sequence[dict[str, Any]]):
    from datasets import Dataset

    return Dataset.from_list([{"messages": r["messages"]} for r in rows])


def build_trainer(
    model,
    tok,
    rows: Sequence[dict[str, Any]],
    cfg: TrainConfig,
    work_dir: str | os.PathLike[str],
    lr: float | None = None,
    epochs: float | None = None,
    gpu: bool = False,
):
    """The SFTTrainer of one stage (assistant-only loss, no packing) on the examples that fit
    `cfg.max_length`: (trainer, kept row indices, lengths of all rows in tokens). Longer
    examples are dropped, not cut: a cut example loses its assistant turn or its
    end-of-turn token."""
    from trl import SFTTrainer

    lengths = example_lengths(tok, rows)
    keep = [i for i, n in enumerate(lengths) if n <= cfg.max_length]
    if not keep:
        raise ValueError(
            f"every example is longer than max_length={cfg.max_length} (shortest "
            f"{min(lengths)} tokens)"
        )
    args = _sft_args(cfg, Path(work_dir), cfg.lr if lr is None else lr, epochs or cfg.epochs, gpu)
    data = _dataset([rows[i] for i in keep])
    trainer = SFTTrainer(model=model, args=args, train_dataset=data, processing_class=tok)
    return trainer, keep, lengths


def _fit(
    stage: str,
    model,
    tok,
    rows: list[dict],
    out_dir: Path,
    cfg: TrainConfig,
    lr: float,
    epochs: float,
    gpu: bool,
    extra: dict[str, Any],
):
    """Train one stage: (trainer, result, work folder)."""
    import torch.distributed as dist

    work = out_dir.parent / f".{out_dir.name}.trainer-{os.getpid()}"
    trainer, keep, lengths = build_trainer(model, tok, rows, cfg, work, lr, epochs, gpu)
    loss_tokens = sum(sum(1 for x in ex["labels"] if x != -100) for ex in trainer.train_dataset)
    n_train = sum(p.numel() for p in trainer.model.parameters() if p.requires_grad)
    if trainer.is_deepspeed_enabled:
        extra["deepspeed_zero_stage"] = trainer.accelerator.state.deepspeed_plugin.zero_stage
    if dist.is_available() and dist.is_initialized():
        extra["dist_backend"] = dist.get_backend()
    t0 = time.perf_counter()
    out = trainer.train()
    seconds = time.perf_counter() - t0
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    result = TrainResult(
        stage=stage,
        out_dir=str(out_dir),
        steps=int(trainer.state.global_step),
        train_loss=float(out.training_loss),
        final_loss=float(losses[-1]) if losses else float(out.training_loss),
        seconds=round(seconds, 2),
        n_examples=len(keep),
        n_dropped=len(rows) - len(keep),
        tokens=sum(lengths[i] for i in keep),
        loss_tokens=int(loss_tokens),
        trainable_params=int(n_train),
        world_size=_world_size(),
        extra={**extra, "loss_history": losses, "lr": lr, "epochs": epochs},
    )
    if not math.isfinite(result.train_loss):
        raise RuntimeError(f"{stage}: training loss is not finite ({result.train_loss})")
    return trainer, result, work


def _save(model, tok, out_dir: Path, result: TrainResult, state_dict=None) -> None:
    """Write an ordinary HF model folder atomically (temporary folder, then renamed)."""
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", suffix=".tmp", dir=out_dir.parent))
    shareable(tmp)  # mkdtemp makes it private (0o700)
    try:
        model.save_pretrained(tmp, state_dict=state_dict)
        tok.save_pretrained(tmp)
        (tmp / "train_result.json").write_text(json.dumps(result.to_dict(), indent=2) + "\n")
        if out_dir.exists():
            shutil.rmtree(out_dir)
        os.replace(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _barrier() -> None:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def _setup(cfg: TrainConfig) -> bool:
    import torch
    from transformers import set_seed

    gpu = _on_gpu(cfg)
    if cfg.num_threads and not gpu:
        torch.set_num_threads(cfg.num_threads)
    _init_distributed(cfg, gpu)
    set_seed(cfg.seed)
    return gpu


# ---- stages --------------------------------------------------------------------------------
def train_stage1(
    model_dir: str | os.PathLike[str],
    dataset: str | os.PathLike[str] | Sequence[dict[str, Any]],
    out_dir: str | os.PathLike[str],
    cfg: TrainConfig | None = None,
    k: int = 256,
    persona_init: PersonaInit = "mean",
    codebook: Any = None,
) -> TrainResult:
    """Stage 1: add the K persona tokens (if absent), freeze the backbone and train only the
    persona rows of the embedding, addressed by id (`train_only_rows`: with tied embeddings
    the lm_head reads the same trained rows; an untied lm_head gets its own trainable rows),
    merge and save an ordinary model folder to `out_dir`.

    Every other parameter stays bit-identical. Under DeepSpeed, a ZeRO-3 config is replaced
    by the packaged ZeRO-2 one: the frozen backbone has no optimizer state to shard, and
    ZeRO-3 with partially frozen embeddings is unreliable (peft#2605, #2946,
    transformers#26024)."""
    from simpersona.llm.persona_tokens import is_tied

    cfg = cfg or TrainConfig()
    if cfg.deepspeed and "zero3" in Path(resolve_deepspeed(cfg.deepspeed) or "").stem:
        cfg = replace(cfg, deepspeed="zero2")  # K rows train: nothing worth sharding
    gpu = _setup(cfg)
    rows = load_examples(dataset)
    check_tokens_in_range(rows, k, str(dataset) if isinstance(dataset, str | Path) else "data")
    model, tok = _load(model_dir, gpu, cfg)
    ids, added = _ensure_persona_tokens(model, tok, k, persona_init, codebook, cfg.seed)
    tied = is_tied(model)
    train_only_rows(model, ids)
    s1_epochs = cfg.stage1_epochs if cfg.stage1_epochs is not None else cfg.epochs
    out = Path(out_dir)
    extra = {"k": k, "persona_init": persona_init if added else "existing", "tied": tied}
    trainer, result, work = _fit(
        "stage1", model, tok, rows, out, cfg, cfg.stage1_lr or cfg.lr, s1_epochs, gpu, extra
    )
    if _is_main():
        final = trainer.accelerator.unwrap_model(trainer.model)
        merge_rows(final)
        _save(final.float() if not (gpu and cfg.bf16) else final, tok, out, result)
    _barrier()
    shutil.rmtree(work, ignore_errors=True)
    return result


def train_stage2(
    model_dir: str | os.PathLike[str],
    dataset: str | os.PathLike[str] | Sequence[dict[str, Any]],
    out_dir: str | os.PathLike[str],
    cfg: TrainConfig | None = None,
    lora: bool = False,
    k: int | None = None,
    persona_init: PersonaInit = "mean",
    codebook: Any = None,
) -> TrainResult:
    """Stage 2: fine-tune all parameters (or LoRA on every linear layer, with the persona
    rows still trainable, merged on save). Persona tokens are added when `k` is given and
    the model lacks them (the single-stage ablation). Saves an ordinary model folder."""
    cfg = cfg or TrainConfig()
    gpu = _setup(cfg)
    rows = load_examples(dataset)
    model, tok = _load(model_dir, gpu, cfg)
    added = False
    ids: list[int] = []
    if k is not None:
        check_tokens_in_range(rows, k, str(dataset) if isinstance(dataset, str | Path) else "data")
        ids, added = _ensure_persona_tokens(model, tok, k, persona_init, codebook, cfg.seed)
    zero3 = bool(cfg.deepspeed) and "zero3" in Path(resolve_deepspeed(cfg.deepspeed) or "").stem
    if lora:
        from peft import LoraConfig, get_peft_model

        if zero3:
            raise ValueError("LoRA runs under ZeRO-2 here (merging sharded adapters: peft#2946)")
        lcfg = LoraConfig(
            r=cfg.lora_r,
            lora_alpha=cfg.lora_alpha,
            lora_dropout=cfg.lora_dropout,
            target_modules="all-linear",
            task_type="CAUSAL_LM",
        )
        model = get_peft_model(model, lcfg)
        if ids:  # the persona rows keep training next to the adapters
            train_only_rows(model.get_base_model(), ids)
            for name, p in model.named_parameters():
                p.requires_grad_("lora_" in name or name.endswith(".delta"))
    out = Path(out_dir)
    extra: dict[str, Any] = {"lora": lora, "k": k, "persona_tokens_added": added}
    if added:
        extra["persona_init"] = persona_init
    trainer, result, work = _fit(
        "stage2", model, tok, rows, out, cfg, cfg.lr, cfg.epochs, gpu, extra
    )
    if zero3:
        # parameters are sharded: every rank joins the gather of one full state dict
        # (stage3_gather_16bit_weights_on_model_save), the main process writes it
        state = trainer.accelerator.get_state_dict(trainer.deepspeed)
        if _is_main():
            if not (gpu and cfg.bf16):
                state = {k: v.float() for k, v in state.items()}
            final = trainer.accelerator.unwrap_model(trainer.model)
            _save(final, tok, out, result, state_dict=state)
    elif _is_main():
        final = trainer.accelerator.unwrap_model(trainer.model)
        if lora:
            merge_rows(final.get_base_model())  # rows first: PEFT then sees the tie intact
            final = final.merge_and_unload()
        _save(final.float() if not (gpu and cfg.bf16) else final, tok, out, result)
    _barrier()
    shutil.rmtree(work, ignore_errors=True)
    return result


def train_two_stage(
    model_dir: str | os.PathLike[str],
    stage1_dataset: str | os.PathLike[str] | Sequence[dict[str, Any]],
    stage2_dataset: str | os.PathLike[str] | Sequence[dict[str, Any]],
    out_dir: str | os.PathLike[str],
    cfg: TrainConfig | None = None,
    k: int = 256,
    single_stage: bool = False,
    lora: bool = False,
    persona_init: PersonaInit = "mean",
    codebook: Any = None,
    stage2_cfg: TrainConfig | None = None,
) -> tuple[TrainResult | None, TrainResult]:
    """Stage 1 into `out_dir/stage1`, then stage 2 from it into `out_dir/stage2` (the model).
    `single_stage=True` (the ablation of App. F) skips stage 1: stage 2 starts from the base
    model with the persona tokens freshly added."""
    cfg = cfg or TrainConfig()
    out = Path(out_dir)
    r1 = None
    start: str | os.PathLike[str] = model_dir
    if not single_stage:
        r1 = train_stage1(model_dir, stage1_dataset, out / "stage1", cfg, k, persona_init, codebook)
        start = out / "stage1"
    r2 = train_stage2(
        start, stage2_dataset, out / "stage2", stage2_cfg or cfg, lora, k, persona_init, codebook
    )
    return r1, r2


# ---- the entry point every launcher starts ---------------------------------------------------
def run_from_spec(spec: dict[str, Any]) -> dict[str, Any]:
    """Run what a spec (the launcher's JSON) asks: {"stage": "stage1"|"stage2"|"two_stage",
    "model_dir", "out_dir", "dataset" (stage1/stage2) or "stage1_dataset"+"stage2_dataset",
    "k", "lora", "single_stage", "persona_init", "codebook", "config": {TrainConfig fields}}.
    Returns {stage: result dict}."""
    cfg = TrainConfig.from_dict(spec.get("config", {}))
    stage = spec.get("stage", "two_stage")
    k = spec.get("k", 256)
    common = {"persona_init": spec.get("persona_init", "mean"), "codebook": spec.get("codebook")}
    if stage == "stage1":
        r = train_stage1(spec["model_dir"], spec["dataset"], spec["out_dir"], cfg, k, **common)
        return {"stage1": r.to_dict()}
    if stage == "stage2":
        r = train_stage2(
            spec["model_dir"],
            spec["dataset"],
            spec["out_dir"],
            cfg,
            spec.get("lora", False),
            spec.get("k"),
            **common,
        )
        return {"stage2": r.to_dict()}
    if stage == "two_stage":
        r1, r2 = train_two_stage(
            spec["model_dir"],
            spec["stage1_dataset"],
            spec["stage2_dataset"],
            spec["out_dir"],
            cfg,
            k,
            spec.get("single_stage", False),
            spec.get("lora", False),
            **common,
        )
        return {**({"stage1": r1.to_dict()} if r1 else {}), "stage2": r2.to_dict()}
    raise ValueError(f"unknown stage {stage!r} (stage1, stage2, two_stage)")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m simpersona.llm.train")
    parser.add_argument("--config", required=True, help="JSON spec (see run_from_spec)")
    parser.add_argument("--result", help="write the results JSON here (main process)")
    parser.add_argument("--local_rank", "--local-rank", type=int, default=None)  # deepspeed
    args = parser.parse_args(argv)
    if args.local_rank is not None:
        os.environ.setdefault("LOCAL_RANK", str(args.local_rank))
    spec = json.loads(Path(args.config).read_text())
    results = run_from_spec(spec)
    if _is_main():
        text = json.dumps(results, indent=2)
        if args.result:
            from simpersona.lake import atomic_write_text

            atomic_write_text(text + "\n", Path(args.result))
        print(text, file=sys.stdout, flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
