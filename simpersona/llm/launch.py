"""Start the grounding run (simpersona.llm.train) in one of four ways, always the same entry
point with the same JSON spec:

    local       python -m simpersona.llm.train --config spec.json      (a subprocess, CPU/GPU)
    inprocess   run_from_spec(spec) in this process                     (tests, notebooks)
    deepspeed   deepspeed --hostfile H --num_nodes N --num_gpus G --master_port P
                    --module simpersona.llm.train --config spec.json   (multi-node GPU)
    torchrun    torchrun --nnodes N --nproc_per_node G --node_rank R
                    --master_addr A --master_port P -m simpersona.llm.train --config spec.json

    result = launch(spec, "runs/grounding", LaunchConfig(mode="deepspeed", hostfile="hosts"))

`build_argv` returns the command as a list, so what runs on the cluster is testable here.
DeepSpeed runs on CPU too (gloo; the tests run ZeRO-2 stage 1 and ZeRO-3 stage 2 this way).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from simpersona.lake import atomic_write_text

Mode = Literal["local", "inprocess", "deepspeed", "torchrun"]
ENTRY_MODULE = "simpersona.llm.train"
TORCH_EXTENSIONS_DIR = Path.home() / ".cache" / "simpersona" / "torch_extensions"


@dataclass(frozen=True)
class LaunchConfig:
    """How to start training. `deepspeed_config` is a packaged name (zero2, zero3) or a path;
    it is written into the spec's TrainConfig for the deepspeed mode (and torchrun, when
    set). Stage 1 always runs under ZeRO-2 (see train_stage1)."""

    mode: Mode = "local"
    hostfile: str | None = None  # MPI-style "host slots=8" lines (deepspeed)
    nodes: int | None = None  # --num_nodes / --nnodes
    num_gpus: int | None = None  # per node: --num_gpus / --nproc_per_node
    node_rank: int | None = None  # torchrun: this node's rank (run once per node)
    master_addr: str | None = None
    master_port: int = 29500
    deepspeed_config: str | None = "zero3"
    launcher: str | None = None  # deepspeed's multi-node backend: pdsh (default), openmpi, slurm…
    python: str = sys.executable
    env: dict[str, str] = field(default_factory=dict)
    timeout_s: float | None = None


def _exe(name: str, python: str) -> str:
    """`name` beside the interpreter (the venv's deepspeed/torchrun), else on PATH."""
    beside = Path(python).parent / name
    return str(beside) if beside.exists() else (shutil.which(name) or name)


def build_argv(spec_path: str | os.PathLike[str], cfg: LaunchConfig, result_path=None) -> list[str]:
    """The command line that runs the training entry point with `spec_path`."""
    tail = ["--config", str(spec_path)]
    if result_path is not None:
        tail += ["--result", str(result_path)]
    if cfg.mode == "local":
        return [cfg.python, "-m", ENTRY_MODULE, *tail]
    if cfg.mode == "deepspeed":
        argv = [_exe("deepspeed", cfg.python)]
        if cfg.hostfile:
            argv += ["--hostfile", str(cfg.hostfile)]
        if cfg.nodes is not None:
            argv += ["--num_nodes", str(cfg.nodes)]
        if cfg.num_gpus is not None:
            argv += ["--num_gpus", str(cfg.num_gpus)]
        if cfg.master_addr:
            argv += ["--master_addr", cfg.master_addr]
        argv += ["--master_port", str(cfg.master_port)]
        if cfg.launcher:
            argv += ["--launcher", cfg.launcher]
        return [*argv, "--module", ENTRY_MODULE, *tail]
    if cfg.mode == "torchrun":
        argv = [_exe("torchrun", cfg.python), "--nnodes", str(cfg.nodes or 1)]
        argv += ["--nproc_per_node", str(cfg.num_gpus or 1)]
        if cfg.node_rank is not None:
            argv += ["--node_rank", str(cfg.node_rank)]
        argv += ["--master_addr", cfg.master_addr or "127.0.0.1"]
        argv += ["--master_port", str(cfg.master_port)]
        return [*argv, "-m", ENTRY_MODULE, *tail]
    raise ValueError(f"no command line for mode {cfg.mode!r} (local, deepspeed, torchrun)")


def prepare_spec(spec: dict[str, Any], cfg: LaunchConfig) -> dict[str, Any]:
    """The spec with the launcher's DeepSpeed config filled in (deepspeed mode; torchrun
    when `deepspeed_config` is set and the spec has none)."""
    spec = json.loads(json.dumps(spec))  # a deep copy that must be JSON anyway
    conf = spec.setdefault("config", {})
    if cfg.mode == "deepspeed" and not conf.get("deepspeed"):
        conf["deepspeed"] = cfg.deepspeed_config or "zero2"
    if cfg.mode in ("local", "inprocess") and conf.get("deepspeed"):
        raise ValueError("a DeepSpeed config needs mode 'deepspeed' (or torchrun)")
    return spec


def launch_env(cfg: LaunchConfig) -> dict[str, str]:
    """The child's environment: a cached TORCH_EXTENSIONS_DIR (DeepSpeed compiles a shm op
    with g++ on first use, ~48 s, then reuses it), unbuffered output, the caller's extras."""
    env = dict(os.environ)
    env.setdefault("TORCH_EXTENSIONS_DIR", str(TORCH_EXTENSIONS_DIR))
    env["PYTHONUNBUFFERED"] = "1"
    env.setdefault("TOKENIZERS_PARALLELISM", "false")
    env.update(cfg.env)
    Path(env["TORCH_EXTENSIONS_DIR"]).mkdir(parents=True, exist_ok=True)
    clear_stale_build_locks(env["TORCH_EXTENSIONS_DIR"])
    return env


# A build of the shm op takes ~1 minute here; a `lock` older than this was left by a builder
# that was killed (torch's FileBaton never expires it: every later launch waits forever).
STALE_BUILD_LOCK_S = 600.0


def clear_stale_build_locks(
    extensions_dir: str | os.PathLike[str], max_age_s: float = STALE_BUILD_LOCK_S
) -> list[Path]:
    """Remove `<extensions_dir>/<op>/lock` files older than `max_age_s`; returns them."""
    import time

    removed = []
    for lock in Path(extensions_dir).glob("*/lock"):
        try:
            if time.time() - lock.stat().st_mtime > max_age_s:
                lock.unlink()
                removed.append(lock)
        except FileNotFoundError:  # its builder finished meanwhile
            continue
    return removed


class LaunchError(RuntimeError):
    pass


def launch(
    spec: dict[str, Any],
    work_dir: str | os.PathLike[str],
    cfg: LaunchConfig | None = None,
    log: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Write the spec to `work_dir/spec.json`, run the entry point as `cfg.mode` says, stream
    its output to `log` (and `work_dir/train.log`), and return its results
    ({"stage1": {...}, "stage2": {...}}: TrainResult dicts). Raises LaunchError with the
    command and the output's last lines when the run fails."""
    cfg = cfg or LaunchConfig()
    work = Path(work_dir)
    work.mkdir(parents=True, exist_ok=True)
    spec = prepare_spec(spec, cfg)
    spec_path, result_path = work / "spec.json", work / "result.json"
    atomic_write_text(json.dumps(spec, indent=2) + "\n", spec_path)
    result_path.unlink(missing_ok=True)
    if cfg.mode == "inprocess":
        from simpersona.llm.train import run_from_spec

        results = run_from_spec(spec)
        atomic_write_text(json.dumps(results, indent=2) + "\n", result_path)
        return results

    argv = build_argv(spec_path, cfg, result_path)
    say = log or (lambda line: print(line, flush=True))
    say("$ " + " ".join(argv))
    tail: deque[str] = deque(maxlen=40)
    t0 = time.perf_counter()
    with (work / "train.log").open("w", encoding="utf-8") as fh:
        proc = subprocess.Popen(
            argv,
            env=launch_env(cfg),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            bufsize=1,
        )
        assert proc.stdout is not None
        for line in proc.stdout:
            fh.write(line)
            line = line.rstrip("\n")
            tail.append(line)
            if line and "\r" not in line:  # progress bars stay in the log file
                say(line)
            if cfg.timeout_s and time.perf_counter() - t0 > cfg.timeout_s:
                proc.kill()
                break
        rc = proc.wait()
    if rc != 0 or not result_path.exists():
        raise LaunchError(
            f"training failed (exit {rc}): {' '.join(argv)}\n"
            f"log: {work / 'train.log'}\n" + "\n".join(tail)
        )
    return json.loads(result_path.read_text())
