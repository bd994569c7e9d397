"""Typer-ready commands: `simpersona serve-llm` and `simpersona build-tiny-llm`.

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

    from simpersona.llm.server import LocalModel, create_app

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
) -> None:
    """Build the embedded tiny Qwen3 (random weights, BPE tokenizer trained on the corpus,
    ChatML template) into --out; serve it with serve-llm or fine-tune it."""
    from simpersona.llm.tiny import TinyModelConfig, build_tiny_model, count_parameters

    config = TinyModelConfig(
        vocab_size=vocab_size,
        hidden_size=hidden_size,
        intermediate_size=3 * hidden_size,
        num_hidden_layers=layers,
        head_dim=hidden_size // TinyModelConfig.num_attention_heads,
        tie_word_embeddings=not untied,
    )
    texts = _read_corpus(corpus) if corpus is not None else None
    path = build_tiny_model(texts, out, config=config, seed=seed)

    from transformers import AutoModelForCausalLM, AutoTokenizer

    n_params = count_parameters(AutoModelForCausalLM.from_pretrained(path))
    n_vocab = len(AutoTokenizer.from_pretrained(path))
    typer.echo(f"wrote {path}: {n_params:,} parameters, {n_vocab:,} tokens")
