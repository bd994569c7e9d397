"""The library is the library: every `simpersona` module imports without Dagster (the code
location, `dagster_project/`, imports the library, never the other way round)."""

from __future__ import annotations

import json
import subprocess
import sys

IMPORT_ALL = """
import importlib, json, pkgutil, sys
import simpersona
names = sorted(m.name for m in pkgutil.walk_packages(simpersona.__path__, "simpersona."))
pulled = {}
for name in names:
    before = {"dagster", "dagster_project"} & set(sys.modules)
    importlib.import_module(name)
    after = {"dagster", "dagster_project"} & set(sys.modules)
    if after - before:
        pulled[name] = sorted(after - before)
print(json.dumps({"modules": len(names), "pulled": pulled}))
"""


def test_importing_every_simpersona_module_leaves_dagster_out():
    done = subprocess.run(
        [sys.executable, "-c", IMPORT_ALL], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["modules"] > 100  # the walk found the package, not an empty path
    assert report["pulled"] == {}, f"modules that import Dagster: {report['pulled']}"


def test_the_program_is_the_library_commands_plus_the_pipelines():
    from dagster_project.cli import app as program
    from simpersona.cli import app as library

    lib = {c.name for c in library.registered_commands}
    prog = {c.name for c in program.registered_commands}
    assert {"generate", "import", "simulate", "train-llm", "quarantine"} <= lib
    assert not {"ingest", "backfill", "run", "demo"} & lib
    assert prog == lib | {"ingest", "backfill", "run", "demo"}


def test_versioned_artifacts_and_their_pointer(tmp_path):
    import pytest

    from simpersona.artifacts import (
        NoCurrentArtifact,
        current_folder,
        current_version,
        require_current,
        set_current,
    )

    assert current_version(tmp_path, "markov_policy") is None
    assert current_folder(tmp_path, "markov_policy") is None
    with pytest.raises(NoCurrentArtifact, match="materialize markov_policy first"):
        require_current(tmp_path, "markov_policy")
    set_current(tmp_path, "markov_policy", "abc123")
    set_current(tmp_path, "markov_policy", "def456")  # replaces, never appends
    assert current_version(tmp_path, "markov_policy") == "def456"
    assert require_current(tmp_path, "markov_policy") == (
        "def456",
        tmp_path / "markov_policy" / "def456",
    )
    assert sorted(p.name for p in (tmp_path / "markov_policy").iterdir()) == ["current.json"]


def test_one_device_resolver(recwarn):
    import pytest
    import torch

    from simpersona.devices import resolve_device

    assert resolve_device("CPU") == torch.device("cpu")
    auto = resolve_device("auto")
    assert auto.type == ("cuda" if torch.cuda.is_available() else "cpu")
    if not torch.cuda.is_available():
        assert resolve_device("cuda:1") == torch.device("cpu")
        assert "CUDA is not available" in str(recwarn.pop(UserWarning).message)
        with pytest.raises(RuntimeError, match="no CUDA device"):
            resolve_device("cuda", strict=True)


def test_the_house_keeps_its_shape():
    """Modules of one idea (no simpersona module over 500 lines) and thin assets (no asset
    body over 60 lines: load, call the library, record), as docs/architecture.md says."""
    import ast
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    long_modules = {
        str(p.relative_to(root)): n
        for p in (root / "simpersona").rglob("*.py")
        if (n := len(p.read_text(encoding="utf-8").splitlines())) > 500
    }
    assert long_modules == {}
    long_assets = {}
    for path in (root / "dagster_project").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not isinstance(node, ast.FunctionDef) or not any(
                "asset" in ast.unparse(d) for d in node.decorator_list
            ):
                continue
            body = node.body
            if isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
                body = body[1:]  # the docstring does not count
            assert node.end_lineno is not None
            lines = node.end_lineno - body[0].lineno + 1
            if lines > 60:
                long_assets[f"{path.relative_to(root)}:{node.name}"] = lines
    assert long_assets == {}


def test_the_demo_derives_its_buyer_hash_key_from_the_seed(tmp_path, monkeypatch):
    """Generated buyers only: the same seed gives the same key (reproducible hashed ids), a
    configured key or an existing key file is left alone."""
    import stat

    from dagster_project.resources import BuyerHashResource
    from dagster_project.run import seed_hash_key
    from simpersona.ingest.ingest import HASH_KEY_ENV, load_hash_key

    monkeypatch.delenv(HASH_KEY_ENV, raising=False)
    keys = []
    for run in ("a", "b"):
        res = BuyerHashResource(key_file=str(tmp_path / run / ".buyer_hash_key"))
        seed_hash_key(res, seed=7)
        assert stat.S_IMODE((tmp_path / run / ".buyer_hash_key").stat().st_mode) == 0o600
        keys.append(load_hash_key(None, res.key_file))
    assert keys[0] == keys[1]
    other = BuyerHashResource(key_file=str(tmp_path / "c" / ".buyer_hash_key"))
    seed_hash_key(other, seed=8)
    assert load_hash_key(None, other.key_file) != keys[0]
    seed_hash_key(BuyerHashResource(key_file=other.key_file), seed=7)  # an existing file wins
    assert load_hash_key(None, other.key_file) != keys[0]
    given = BuyerHashResource(key="k", key_file=str(tmp_path / "d" / ".buyer_hash_key"))
    seed_hash_key(given, seed=7)
    assert not (tmp_path / "d").exists()
