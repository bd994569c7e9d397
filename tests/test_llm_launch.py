"""The grounding launcher (simpersona.llm.launch): the DeepSpeed path for real on CPU (gloo,
ZeRO-2 stage 1 and ZeRO-3 stage 2, the config family of the GPU nodes), a local subprocess,
and the multi-node command lines documented in docs/llm.md."""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from simpersona.llm.launch import LaunchConfig, LaunchError, build_argv, launch, prepare_spec
from simpersona.llm.persona_tokens import persona_token_ids
from simpersona.llm.tiny import build_tiny_model
from simpersona.llm.train_config import DEEPSPEED_DIR, resolve_deepspeed
from tests.test_llm_train import USED, K, _examples

DOCS = Path(__file__).resolve().parents[1] / "docs" / "llm.md"
SPEC = Path("runs/grounding/spec.json")
RESULT = Path("runs/grounding/result.json")
CONFIG = {
    "max_steps": 2,
    "effective_batch": 2,
    "per_device_batch": 2,
    "warmup_steps": 0,
    "max_length": 2048,
    "device": "cpu",
    "bf16": False,
    "gradient_checkpointing": False,
    "num_threads": 1,
    "lr": 1e-3,
    "stage1_lr": 1e-2,
    "progress": False,
}


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("launch")
    base = build_tiny_model(None, root / "tiny", seed=0)
    path = root / "sft.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in _examples(6)))
    return root, base, path


def _documented(prefix: str) -> list[str]:
    """The command in docs/llm.md that starts with `prefix` (a `\\`-continued block)."""
    text = DOCS.read_text().replace("\\\n", " ")
    lines = [ln.strip() for ln in text.splitlines() if ln.strip().startswith(prefix)]
    assert lines, f"docs/llm.md has no command starting {prefix!r}"
    return shlex.split(lines[0])


def test_two_node_deepspeed_argv_is_documented():
    cfg = LaunchConfig(
        mode="deepspeed", hostfile="hostfile", nodes=2, num_gpus=8, master_addr="node-0"
    )
    argv = build_argv(SPEC, cfg, RESULT)
    assert Path(argv[0]).name == "deepspeed"
    assert ["deepspeed", *argv[1:]] == _documented("deepspeed --hostfile")
    i = argv.index("--module")
    assert argv[i + 1 : i + 3] == ["simpersona.llm.train", "--config"]


def test_torchrun_argv_is_documented():
    cfg = LaunchConfig(mode="torchrun", nodes=2, num_gpus=8, node_rank=0, master_addr="node-0")
    argv = build_argv(SPEC, cfg, RESULT)
    assert ["torchrun", *argv[1:]] == _documented("torchrun --nnodes")


def test_spec_gets_the_deepspeed_config():
    spec = prepare_spec({"stage": "stage2", "config": {}}, LaunchConfig(mode="deepspeed"))
    assert spec["config"]["deepspeed"] == "zero3"
    ds = json.loads(Path(resolve_deepspeed("zero3")).read_text())
    assert ds["zero_optimization"]["stage"] == 3 and ds["bf16"]["enabled"] == "auto"
    assert ds["zero_optimization"]["stage3_gather_16bit_weights_on_model_save"] is True
    assert json.loads((DEEPSPEED_DIR / "zero2.json").read_text())["zero_optimization"]["stage"] == 2
    with pytest.raises(ValueError, match="needs mode 'deepspeed'"):
        prepare_spec({"config": {"deepspeed": "zero2"}}, LaunchConfig(mode="local"))
    with pytest.raises(FileNotFoundError, match="zero2"):
        resolve_deepspeed("zero9")


@pytest.mark.slow
def test_deepspeed_on_cpu_runs_both_stages(data):
    """`deepspeed --module simpersona.llm.train` on this CPU: stage 1 under ZeRO-2 (a ZeRO-3
    config is swapped for it), stage 2 under ZeRO-3, gloo, through the GPU launcher."""
    root, base, path = data
    spec = {
        "stage": "two_stage",
        "model_dir": str(base),
        "stage1_dataset": str(path),
        "stage2_dataset": str(path),
        "out_dir": str(root / "ds"),
        "k": K,
        "config": CONFIG,
    }
    lines: list[str] = []
    cfg = LaunchConfig(mode="deepspeed", num_gpus=1, master_port=29517, deepspeed_config="zero3")
    result = launch(spec, root / "ds_work", cfg, log=lines.append)
    assert lines[0].startswith("$ ") and "--module simpersona.llm.train" in lines[0]
    s1, s2 = result["stage1"], result["stage2"]
    assert s1["extra"]["deepspeed_zero_stage"] == 2 and s2["extra"]["deepspeed_zero_stage"] == 3
    assert s1["extra"]["dist_backend"] == s2["extra"]["dist_backend"] == "gloo"
    assert s1["steps"] == s2["steps"] == 2 and s1["world_size"] == 1
    # stage 1 under DeepSpeed moved the persona rows and nothing else
    tok = AutoTokenizer.from_pretrained(root / "ds" / "stage1")
    ids = persona_token_ids(tok, K)
    m0 = AutoModelForCausalLM.from_pretrained(base)
    m1 = AutoModelForCausalLM.from_pretrained(root / "ds" / "stage1")
    m2 = AutoModelForCausalLM.from_pretrained(root / "ds" / "stage2")
    w0, w1 = m0.model.embed_tokens.weight, m1.model.embed_tokens.weight
    n_old = w0.shape[0] if w0.shape[0] <= min(ids) else min(ids)
    assert torch.equal(w1[:n_old], w0[:n_old])
    assert torch.equal(m1.model.layers[0].mlp.up_proj.weight, m0.model.layers[0].mlp.up_proj.weight)
    used = torch.tensor([ids[t] for t in USED])
    assert not torch.equal(m1.model.embed_tokens.weight[used], m2.model.embed_tokens.weight[used])
    # stage 2 under ZeRO-3: gathered, saved whole, backbone changed
    assert not torch.equal(
        m2.model.layers[0].mlp.up_proj.weight, m1.model.layers[0].mlp.up_proj.weight
    )
    assert (root / "ds_work" / "train.log").read_text().count("exits successfully") == 1


@pytest.mark.slow
def test_local_subprocess_and_failure_is_named(data, tmp_path):
    root, base, path = data
    spec = {
        "stage": "stage2",
        "model_dir": str(base),
        "dataset": str(path),
        "out_dir": str(tmp_path / "s2"),
        "k": K,
        "config": CONFIG,
    }
    result = launch(spec, tmp_path / "work", LaunchConfig(mode="local"), log=lambda _: None)
    assert result["stage2"]["steps"] == 2 and (tmp_path / "s2" / "config.json").exists()
    assert json.loads((tmp_path / "work" / "result.json").read_text()) == result
    bad = {**spec, "dataset": str(tmp_path / "missing.jsonl")}
    with pytest.raises(LaunchError, match=re.escape("missing.jsonl")):
        launch(bad, tmp_path / "work_bad", LaunchConfig(mode="local"), log=lambda _: None)


@pytest.mark.slow
def test_persona_model_asset_trains_registers_and_logs(data, tmp_path):
    """The Dagster asset: both stages through the launcher resource, the model under
    persona_model/<version>/ with a current pointer, figures in metadata and MLflow."""
    import dagster as dg
    from mlflow.tracking import MlflowClient

    from dagster_project.defs.grounding.assets import persona_model
    from dagster_project.resources import ArtifactsResource, MLflowResource, WarehouseResource
    from dagster_project.resources.training import TrainingLauncherResource

    _, _, path = data
    sft = tmp_path / "warehouse" / "sft"
    sft.mkdir(parents=True)
    for stage in ("stage1", "stage2"):
        (sft / f"{stage}.jsonl").write_text(path.read_text())
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    resources = {
        "warehouse": WarehouseResource(
            root=str(tmp_path / "warehouse"), duckdb_path=str(tmp_path / "w.duckdb")
        ),
        "artifacts": ArtifactsResource(root=str(tmp_path / "artifacts")),
        "mlflow": MLflowResource(tracking_uri=uri, artifact_root=str(tmp_path / "mlartifacts")),
        "training": TrainingLauncherResource(
            mode="inprocess",
            base_model="tiny",
            tiny_model_dir=str(tmp_path / "tiny"),
            tiny_pretrain_steps=3,
        ),
    }
    overrides = {k: v for k, v in CONFIG.items() if k not in ("device", "bf16", "num_threads")}
    run_config = {"ops": {"persona_model": {"config": {"k": K, "train": overrides}}}}
    with dg.instance_for_test() as instance:
        res = dg.materialize(
            [persona_model], resources=resources, run_config=run_config, instance=instance
        )
    assert res.success
    meta = {
        k: v.value
        for k, v in res.asset_materializations_for_node("persona_model")[0].metadata.items()
    }
    assert meta["stage1_steps"] == meta["stage2_steps"] == 2
    # the tiny base read the SFT texts first (3 causal-LM steps), its figures recorded
    assert meta["pretrain_steps"] == 3 and meta["pretrain_corpus_tokens"] > 1_000
    assert meta["pretrain_loss_last"] < meta["pretrain_loss_first"]
    assert (
        meta["stage1_seconds"] > 0 and meta["stage2_seconds"] > 0 and meta["stage2_examples"] == 6
    )
    root = tmp_path / "artifacts" / "persona_model"
    version = json.loads((root / "current.json").read_text())["version"]
    folder = root / version
    assert meta["version"] == version and meta["path"] == str(folder)
    model = AutoModelForCausalLM.from_pretrained(folder)  # what the policy loads
    assert persona_token_ids(AutoTokenizer.from_pretrained(folder), K)[0] < model.config.vocab_size
    assert (tmp_path / "tiny" / "config.json").exists()  # the tiny base, built on first use
    assert not list(root.glob(".run-*"))
    run = MlflowClient(tracking_uri=uri).get_run(meta["mlflow_run_id"])
    assert run.data.metrics["stage2_steps"] == 2 and run.data.params["k"] == str(K)
    assert run.data.tags["model_path"] == str(folder)
    files = {
        f.path
        for f in MlflowClient(tracking_uri=uri).list_artifacts(run.info.run_id, "persona_model")
    }
    assert "persona_model/model.safetensors" in files


def test_a_killed_builders_lock_does_not_hang_later_launches(tmp_path):
    """A launch killed while DeepSpeed compiled its shm op left `<op>/lock` behind, and every
    later launch waited for it for ever (torch's FileBaton never expires it)."""
    import os
    import time

    from simpersona.llm.launch import STALE_BUILD_LOCK_S, launch_env

    ext = tmp_path / "ext"
    stale, fresh = ext / "deepspeed_shm_comm" / "lock", ext / "other_op" / "lock"
    for lock in (stale, fresh):
        lock.parent.mkdir(parents=True)
        lock.touch()
    old = time.time() - STALE_BUILD_LOCK_S - 60
    os.utime(stale, (old, old))
    env = launch_env(LaunchConfig(mode="local", env={"TORCH_EXTENSIONS_DIR": str(ext)}))
    assert env["TORCH_EXTENSIONS_DIR"] == str(ext)
    assert not stale.exists() and fresh.exists()  # a build may still hold the fresh one
