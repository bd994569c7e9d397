"""Versioned artifact folders and the pointer to the current one.

    <root>/<name>/<version>/…        one folder per version (content-hashed by its writer)
    <root>/<name>/current.json       {"version": "<version>"}: what readers use

Models and fitted artifacts (feature transform, codebook, persona model, Markov policy,
persona cards) are published this way, so a reader never sees a half-written version and
an older version stays on disk for runs that recorded it.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from simpersona.lake import atomic_write_text

POINTER = "current.json"


class NoCurrentArtifact(FileNotFoundError):
    """No version of an artifact has been published yet."""


def pointer_path(root: str | os.PathLike[str], name: str) -> Path:
    return Path(root) / name / POINTER


def set_current(root: str | os.PathLike[str], name: str, version: str) -> Path:
    """Point `name` at `version` (atomically: readers see the old or the new pointer)."""
    return atomic_write_text(json.dumps({"version": version}), pointer_path(root, name))


def current_version(root: str | os.PathLike[str], name: str) -> str | None:
    """The current version of `name`, or None when none was published."""
    pointer = pointer_path(root, name)
    if not pointer.exists():
        return None
    return str(json.loads(pointer.read_text())["version"])


def current_folder(root: str | os.PathLike[str], name: str) -> Path | None:
    """The current version's folder of `name`, or None when none was published."""
    version = current_version(root, name)
    return None if version is None else Path(root) / name / version


def require_current(root: str | os.PathLike[str], name: str) -> tuple[str, Path]:
    """(version, folder) of `name`; NoCurrentArtifact, naming the asset, when there is none."""
    version = current_version(root, name)
    if version is None:
        raise NoCurrentArtifact(f"no current {name}: materialize {name} first")
    return version, Path(root) / name / version


def staging_folder(root: str | os.PathLike[str], name: str, version: str) -> Path:
    """An empty folder to write `version` of `name` into before `publish` moves it in place
    (".tmp-<version>-<pid>": the temp-file sweep recognises it)."""
    tmp = Path(root) / name / f".tmp-{version}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    return tmp


def publish(root: str | os.PathLike[str], name: str, version: str, staged: Path) -> Path:
    """Move a staged folder to <root>/<name>/<version> (an earlier folder of the same
    content-hashed version is replaced) and point `name` at it; returns the folder."""
    folder = Path(root) / name / version
    shutil.rmtree(folder, ignore_errors=True)
    os.replace(staged, folder)
    set_current(root, name, version)
    return folder
