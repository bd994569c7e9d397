"""One progress bar for simpersona's own loops, so every bar looks and behaves the same: rich
(the CLI's console library), on stderr.

    with progress_bar(epochs, "vqvae", unit="epoch", enabled=progress) as bar:
        for epoch in range(epochs):
            ...
            bar.note(loss=f"{loss:.3f}")    # after the bar, like tqdm's set_postfix
            bar.advance()

    for row in track(rows, "intent probe", enabled=progress):
        ...

Behaviour, everywhere: `enabled=False` gives a bar that draws nothing and costs nothing. On a
terminal the bar redraws in place; anywhere else (a pipe, a log file, the captured stderr of
a Dagster run) rich draws nothing while it runs and prints the bar's final state once when it
ends, or nothing at all with `transient=True` (a bar that disappears when done). Bars nest:
an inner bar draws below the outer one on the same console.

transformers' Trainer (simpersona.llm.train) draws its own tqdm bar; `TrainConfig.progress`
switches that one on and off, and it is the only tqdm bar left.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Iterator, Sized
from contextlib import contextmanager
from typing import Any, TypeVar

T = TypeVar("T")


@functools.cache
def progress_console() -> Any:
    """The console bars draw on by default: one rich Console on stderr, shared, so bars nest
    (it follows `sys.stderr` as it is when it writes, e.g. pytest's capture)."""
    from rich.console import Console

    return Console(stderr=True)


class Bar:
    """A running bar (or, without `_progress`, one that does nothing)."""

    def __init__(self, progress: Any = None, task: Any = None) -> None:
        self._progress = progress
        self._task = task

    @property
    def enabled(self) -> bool:
        return self._progress is not None

    def advance(self, n: float = 1) -> None:
        """`n` more steps done (fractions too)."""
        if self._progress is not None:
            self._progress.advance(self._task, n)

    def update(
        self,
        *,
        description: str | None = None,
        completed: float | None = None,
        total: float | None = None,
    ) -> None:
        """A new description, position or total (a second phase over the same steps)."""
        if self._progress is not None:
            self._progress.update(
                self._task, description=description, completed=completed, total=total
            )

    def note(self, text: str = "", /, **figures: Any) -> None:
        """What is shown after the bar: `text`, or `key=value` pairs (tqdm's set_postfix)."""
        if self._progress is not None:
            parts = [text] if text else []
            parts += [f"{k}={v}" for k, v in figures.items()]
            self._progress.update(self._task, note=", ".join(parts))


@contextmanager
def progress_bar(
    total: float | None,
    description: str,
    *,
    unit: str = "",
    completed: int = 0,
    enabled: bool = True,
    transient: bool = False,
    console: Any = None,
) -> Iterator[Bar]:
    """A bar of `total` steps (None: unknown) while the block runs: description, bar, done/total
    and `unit`, elapsed and remaining time, and the bar's note. `completed`: steps already done
    (a resumed run). `console`: a rich Console to draw on (a CLI's own, so its prints go above
    the bar); default `progress_console()`."""
    if not enabled:
        yield Bar()
        return
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    columns: list[Any] = [TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn()]
    if unit:
        columns.append(TextColumn(unit))
    columns += [TimeElapsedColumn(), TimeRemainingColumn(), TextColumn("{task.fields[note]}")]
    with Progress(*columns, console=console or progress_console(), transient=transient) as progress:
        task = progress.add_task(description, total=total, completed=completed, note="")
        yield Bar(progress, task)


def track(
    items: Iterable[T],
    description: str,
    *,
    total: float | None = None,
    unit: str = "",
    enabled: bool = True,
    transient: bool = False,
    console: Any = None,
) -> Iterator[T]:
    """`items`, one at a time, with a `progress_bar` over them (`total` defaults to
    `len(items)` when it has one)."""
    if total is None and isinstance(items, Sized):
        total = len(items)
    with progress_bar(
        total, description, unit=unit, enabled=enabled, transient=transient, console=console
    ) as bar:
        for item in items:
            yield item
            bar.advance()
