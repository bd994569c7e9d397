"""Run reports: `data/reports/<run>/summary.json` with flat keys, `latest` pointing to the newest."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from simpersona.lake import atomic_write_text


def new_report_dir(reports_root: str | os.PathLike[str], name: str | None = None) -> Path:
    """Create `<reports_root>/<name>` (default: a UTC timestamp) and point `latest` at it."""
    root = Path(reports_root)
    name = name or time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    run_dir = root / name
    run_dir.mkdir(parents=True, exist_ok=True)
    latest = root / "latest"
    tmp = root / f".latest.{os.getpid()}"
    tmp.unlink(missing_ok=True)
    tmp.symlink_to(name, target_is_directory=True)
    os.replace(tmp, latest)  # atomic switch of the symlink
    return run_dir


def update_summary(run_dir: str | os.PathLike[str], figures: Mapping[str, Any]) -> Path:
    """Merge flat `figures` into `<run_dir>/summary.json` (later stages add their keys)."""
    path = Path(run_dir) / "summary.json"
    summary: dict[str, Any] = json.loads(path.read_text()) if path.exists() else {}
    for k, v in figures.items():
        if isinstance(v, Mapping):
            raise TypeError(f"summary keys are flat; {k!r} holds a mapping")
        summary[k] = v
    return atomic_write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n", path)


def read_summary(run_dir: str | os.PathLike[str]) -> dict[str, Any]:
    path = Path(run_dir) / "summary.json"
    return json.loads(path.read_text()) if path.exists() else {}
