"""Session recordings: one JSONL file per session, the raw material for SFT traces.

    {"type": "session", "key": …, "buyer_id": …, "persona": …, "goal": …, …}
    {"type": "step", "step": 1, "observation": {…}, "memory": […], "action": {…},
     "reasoning": …, "result": …, "error": …, "ms": …, "outcome": null}
    …                                              (the last step has the session's outcome)
    {"type": "outcome", "outcome": "goal_reached", "message": …, "steps": …, …}

Files are written atomically (a temporary file, then a rename), so a reader never sees half
a session. `read_recording` gives the lines back as dicts.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

from simpersona.agent.session import SessionResult
from simpersona.lake import atomic_write_text

_SAFE = re.compile(r"[^A-Za-z0-9._@:-]+")


def recording_lines(result: SessionResult, meta: dict[str, Any] | None = None) -> list[str]:
    summary = result.summary()
    head = {"type": "session", **{k: summary[k] for k in ("key", "buyer_id", "persona", "goal")}}
    head.update(meta or {})
    lines = [head]
    lines += [{"type": "step", **r.to_dict()} for r in result.records]
    lines.append({"type": "outcome", **summary})
    return [json.dumps(x, ensure_ascii=False, default=str) for x in lines]


class SessionRecorder:
    """Writes each finished session to `<directory>/<key>.jsonl`."""

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.directory = Path(directory)
        self.written: list[Path] = []

    def path_for(self, key: str) -> Path:
        return self.directory / f"{_SAFE.sub('-', key).strip('-') or 'session'}.jsonl"

    def write(self, result: SessionResult, meta: dict[str, Any] | None = None) -> Path:
        path = self.path_for(result.key)
        atomic_write_text("\n".join(recording_lines(result, meta)) + "\n", path)
        self.written.append(path)
        return path


def read_recording(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """The lines of a recording, parsed."""
    with open(path, encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]
