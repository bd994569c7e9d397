"""Real third-party shops on loopback, for the tests and `benchmarks/bench_live_store.py`:
each `<name>.py` installs one (packages only) and serves it with a seeded catalogue.
`load_shop(name)` returns an instance of its launcher class."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
LAUNCHERS = {"oscar": "OscarShop", "evershop": "EverShopShop"}


def load_shop(name: str, root: Path | None = None) -> Any:
    """The launcher of shop `name` (see LAUNCHERS): install(), start() -> URL, stop(), orders()."""
    if name not in LAUNCHERS:
        raise ValueError(f"unknown shop {name!r}; one of {', '.join(LAUNCHERS)}")
    spec = importlib.util.spec_from_file_location(f"shops_{name}", HERE / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return getattr(module, LAUNCHERS[name])(root)
