"""Grounding stage (paper §2.3): the persona-conditioned model, trained in two stages on the
SFT datasets through the training launcher, versioned under <artifacts>/persona_model/.
Thin wrapper: the logic lives in simpersona.llm.train / simpersona.llm.launch."""

import hashlib
import json
import shutil
from pathlib import Path
from typing import Literal

import dagster as dg
import numpy as np
from pydantic import Field

from dagster_project.config_overrides import overrides_config
from dagster_project.defs.personas.assets import load_codebook
from dagster_project.record import record
from dagster_project.resources import ArtifactsResource, MLflowResource, WarehouseResource
from dagster_project.resources.training import TrainingLauncherResource
from simpersona.lake import atomic_write_text
from simpersona.llm.train_config import TrainConfig

PERSONA_MODEL = "persona_model"
SINGLE_STAGE_MODEL = "persona_model_single_stage"
MLFLOW_MAX_BYTES = 1 << 30  # bigger models are referenced by path, not copied into MLflow


TrainOverrides = overrides_config(TrainConfig, "TrainOverrides")


class PersonaModelConfig(dg.Config):
    profile: Literal["auto", "cpu", "cpu_base", "production"] = Field(
        default="auto",
        description=(
            "auto: cpu for the tiny model, cpu_base for any other base on a CPU, production "
            "on a GPU; cpu: TrainConfig.cpu() (the tiny model from scratch); cpu_base: "
            "TrainConfig.cpu_base() (a small pretrained base); production: the paper's values."
        ),
    )
    k: int = Field(
        default=0, description="Persona tokens; 0: the current persona codebook's size K."
    )
    single_stage: bool = Field(default=False, description="Ablation: skip stage 1 (App. F).")
    lora: bool = Field(default=False, description="Stage 2 with LoRA (merged on save).")
    persona_init: Literal["mean", "random", "codebook"] = Field(
        default="mean",
        description="Persona rows at start; codebook: from the current VQ-VAE codebook.",
    )
    train: TrainOverrides = Field(
        default_factory=TrainOverrides,
        description="TrainConfig fields on top of the profile (e.g. epochs: 2, lr: 0.001); "
        "unset ones keep the profile's values.",
    )


def _model_version(folder: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(folder.glob("*.safetensors")):
        with p.open("rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()[:12]


def _max_token(paths: list[Path]) -> int | None:
    """The largest persona token in SFT chat datasets (a "token" field per example)."""
    top = None
    for path in paths:
        with open(path, encoding="utf-8") as fh:
            for line in fh:
                t = json.loads(line).get("token")
                if t is not None and (top is None or int(t) > top):
                    top = int(t)
    return top


def _folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def _persona_model_asset(name: str, single_stage: bool | None, description: str):
    """One persona-model asset under <artifacts>/<name>/; `single_stage` None follows the
    config's `single_stage`."""

    @dg.asset(
        name=name,
        group_name="grounding",
        deps=["sft_stage1", "sft_stage2"],
        kinds={"pytorch", "deepspeed", "mlflow"},
        description=description,
    )
    def _asset(
        context: dg.AssetExecutionContext,
        config: PersonaModelConfig,
        warehouse: WarehouseResource,
        artifacts: ArtifactsResource,
        mlflow: MLflowResource,
        training: TrainingLauncherResource,
    ) -> dg.MaterializeResult:
        one_stage = config.single_stage if single_stage is None else single_stage
        return _train_persona_model(
            context, config, warehouse, artifacts, mlflow, training, name, one_stage
        )

    return _asset


persona_model = _persona_model_asset(
    PERSONA_MODEL,
    None,
    "The persona-grounded LLM: persona tokens added, stage 1 trains only their embedding "
    "rows (backbone frozen), stage 2 all parameters, loss on assistant turns; an ordinary "
    "HF model folder, versioned by content, the current one in persona_model/current.json.",
)
persona_model_single_stage = _persona_model_asset(
    SINGLE_STAGE_MODEL,
    True,
    "The single-stage ablation (App. F, Tables 7–8): the same data, base and budget as "
    "persona_model without stage 1 (persona rows start from their init and train only in "
    "stage 2 with everything else); run beside it as the `llm_single` policy on the same "
    "agents. Current one in persona_model_single_stage/current.json.",
)


def _profile(profile: str, training: TrainingLauncherResource):
    """The TrainConfig of a profile name ("auto": by the base and the device)."""
    import torch

    if profile == "auto":
        gpu = torch.cuda.is_available() or training.mode in ("deepspeed", "torchrun")
        profile = "production" if gpu else ("cpu" if training.uses_tiny() else "cpu_base")
    return TrainConfig.for_profile(profile)


def _train_persona_model(
    context: dg.AssetExecutionContext,
    config: PersonaModelConfig,
    warehouse: WarehouseResource,
    artifacts: ArtifactsResource,
    mlflow: MLflowResource,
    training: TrainingLauncherResource,
    name: str,
    single_stage: bool,
) -> dg.MaterializeResult:
    """Train, version and record one persona model under <artifacts>/<name>/."""
    wh = warehouse.warehouse()
    s1, s2 = wh.root / "sft" / "stage1.jsonl", wh.root / "sft" / "stage2.jsonl"
    for p in (s1, s2):
        if not p.exists():
            raise dg.Failure(f"{p} is missing: materialize sft_stage1 and sft_stage2 first")
    try:
        overrides = config.train.model_dump(exclude_none=True)
        base_cfg = _profile(config.profile, training)
        cfg = TrainConfig.from_dict({**base_cfg.to_dict(), **overrides})
    except (TypeError, ValueError) as exc:
        raise dg.Failure(f"invalid train config: {exc}") from exc
    base = training.base_model_path([s1, s2])
    root = artifacts.path(name)
    work = root / f".run-{context.run.run_id[:8]}"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    codebook_path, codebook_version = None, None
    k = config.k
    if config.persona_init == "codebook" or not k:
        codebook_version, vqvae, _ = load_codebook(artifacts)
        k = k or vqvae.config.codebook_size
    # K now depends on the data: SFT examples labelled by an earlier codebook may carry
    # tokens this one does not have
    top = _max_token([s1, s2])
    if top is not None and top >= k:
        raise dg.Failure(
            f"the SFT datasets use persona token {top}, but the persona model gets {k} "
            "tokens (the current codebook's K): re-materialize replayed_traces, sft_stage1 "
            "and sft_stage2 with the current codebook"
        )
    if config.persona_init == "codebook":
        codebook = vqvae.codebook.embed.detach().cpu().numpy()
        if codebook.shape[0] != k:
            raise dg.Failure(f"codebook has {codebook.shape[0]} codes, k is {k}")
        codebook_path = work / "codebook.npy"
        np.save(codebook_path, codebook)
    spec = {
        "stage": "two_stage",
        "model_dir": str(base),
        "stage1_dataset": str(s1),
        "stage2_dataset": str(s2),
        "out_dir": str(work / "out"),
        "k": k,
        "single_stage": single_stage,
        "lora": config.lora,
        "persona_init": config.persona_init,
        "codebook": str(codebook_path) if codebook_path else None,
        "config": cfg.to_dict(),
    }
    results = training.train(spec, work, log=context.log.info)
    r1, r2 = results.get("stage1"), results["stage2"]

    model_dir = work / "out" / "stage2"
    version = _model_version(model_dir)
    folder = root / version
    meta = {
        "version": version,
        "base_model": str(base),
        "datasets": {"stage1": str(s1), "stage2": str(s2)},
        "codebook_version": codebook_version,
        "launcher": {"mode": training.mode, "deepspeed_config": training.deepspeed_config},
        "spec": spec,
        "results": results,
    }
    atomic_write_text(json.dumps(meta, indent=2, default=str) + "\n", model_dir / "grounding.json")
    if r1 is not None:
        shutil.move(str(work / "out" / "stage1"), model_dir / "stage1")
    folder = artifacts.publish(name, version, model_dir)  # same weights hash: replaced
    shutil.rmtree(work, ignore_errors=True)

    figures = {
        "stage1_seconds": r1["seconds"] if r1 else 0.0,
        "stage2_seconds": r2["seconds"],
        "stage1_steps": r1["steps"] if r1 else 0,
        "stage2_steps": r2["steps"],
        "stage1_train_loss": r1["train_loss"] if r1 else None,
        "stage1_final_loss": r1["final_loss"] if r1 else None,
        "stage2_train_loss": r2["train_loss"],
        "stage2_final_loss": r2["final_loss"],
        "stage1_examples": r1["n_examples"] if r1 else 0,
        "stage2_examples": r2["n_examples"],
        "dropped_examples": (r1["n_dropped"] if r1 else 0) + r2["n_dropped"],
        "stage2_tokens": r2["tokens"],
        "stage2_trainable_params": r2["trainable_params"],
        **training.pretrain_figures(base),
    }
    numeric = {k: v for k, v in figures.items() if v is not None}

    def log_more(run) -> None:
        for stage, r in (("stage1", r1), ("stage2", r2)):
            for step, loss in enumerate((r or {}).get("extra", {}).get("loss_history", [])):
                run.log_metrics({f"{stage}_loss": loss}, step=step)
        if _folder_bytes(folder) <= MLFLOW_MAX_BYTES:
            run.client.log_artifacts(run.run_id, str(folder), name)
        run.set_tags({"model_path": str(folder)})

    return record(
        context,
        mlflow,
        numeric,
        tags={f"{name}.version": version},
        params={
            **{k: v for k, v in spec.items() if k != "config"},
            **{f"train.{k}": v for k, v in cfg.to_dict().items()},
            "base_model": str(base),
            "launcher_mode": training.mode,
        },
        log=log_more,
        metadata={
            "version": version,
            "base_model": dg.MetadataValue.path(str(base)),
            "base_model_name": training.base_model_name(),
            "single_stage": single_stage,
            "lora": config.lora,
            "persona_init": config.persona_init,
            "k": k,
        },
        path=folder,
    )
