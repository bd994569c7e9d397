"""Turning a failure into the one line a user needs.

Orchestrators wrap the exception a stage raised (Dagster re-raises it inside a step error
whose `__cause__`/`__context__` chain can loop back on itself), so printing the whole chain
says little and, with a printer that does not guard against cycles, never ends. These
helpers walk the chain once, cycle-safe, and name the error that the project's own code (or
a library it called) raised.
"""

from __future__ import annotations

from collections.abc import Iterator

# Exceptions raised by these packages are wrappers around the error worth showing.
WRAPPER_PACKAGES = ("dagster", "dagster_shared", "click", "typer")


def exception_chain(exc: BaseException) -> Iterator[BaseException]:
    """`exc`, then its causes and contexts, each once (the chain may contain a cycle)."""
    seen: set[int] = set()
    stack = [exc]
    while stack:
        e = stack.pop()
        if id(e) in seen:
            continue
        seen.add(id(e))
        yield e
        # the context first on the stack, so the explicit cause is walked first
        for nxt in (e.__context__, e.__cause__):
            if nxt is not None and id(nxt) not in seen:
                stack.append(nxt)
        user = getattr(e, "user_exception", None)  # Dagster's step errors keep it here
        if isinstance(user, BaseException) and id(user) not in seen:
            stack.append(user)


def _is_wrapper(exc: BaseException) -> bool:
    return type(exc).__module__.split(".")[0] in WRAPPER_PACKAGES


def root_error(exc: BaseException) -> BaseException:
    """The first exception in `exc`'s chain that no orchestrator raised (else `exc`)."""
    for e in exception_chain(exc):
        if not _is_wrapper(e):
            return e
    return exc


def describe(exc: BaseException, limit: int = 2_000) -> str:
    """One line, "<type>: <message>", of the root error; newlines folded, cut at `limit`."""
    root = root_error(exc)
    message = " ".join(str(root).split())
    text = f"{type(root).__name__}: {message}" if message else type(root).__name__
    return text if len(text) <= limit else text[: limit - 1] + "…"
