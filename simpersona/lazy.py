"""Package names loaded on first use (PEP 562): a package's `__init__` lists what it exports
and from which module, and importing one light module of the package does not import the
heavy ones (torch, the browser layer) its siblings need."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any


def lazy_getattr(package: str, exports: Mapping[str, str]) -> Callable[[str], Any]:
    """A module `__getattr__` for `package`: `exports` maps each name to the module holding it
    (a full name, or one relative to `package`)."""

    def __getattr__(name: str) -> Any:
        if name not in exports:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        module = exports[name]
        return getattr(
            importlib.import_module(module if "." in module else f"{package}.{module}"), name
        )

    return __getattr__
