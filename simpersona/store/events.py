"""Event sinks: where the storefront's canonical events go.

`LakeEventSink` buffers events and writes them into the lake's hive layout with
`Lake.write_events`, one new part per flush (`<prefix>-<pid>-<run>-<seq>`, so no flush ever
replaces another, across restarts too), from a background thread every `flush_interval_s`
seconds or as soon as `max_buffer` events wait, and at `close()` (also registered with
`atexit`). Simulated sessions then flow through the same ingestion pipeline as real logs.

`MemoryEventSink` keeps events in memory for tests and agents.
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
import time
from pathlib import Path
from typing import Any

import polars as pl

from simpersona.lake import Lake
from simpersona.schema import EVENTS_SCHEMA, conform

log = logging.getLogger(__name__)

Event = dict[str, Any]


def events_frame(events: list[Event]) -> pl.DataFrame:
    """Canonical events frame from event dicts (missing fields become nulls)."""
    if not events:
        return pl.DataFrame(schema=EVENTS_SCHEMA)
    cols = {name: [e.get(name) for e in events] for name in EVENTS_SCHEMA}
    return conform(pl.DataFrame(cols, schema=EVENTS_SCHEMA), "events", keep_provenance=False)


class EventSink:
    """Receives canonical events (dicts with the `EVENTS_SCHEMA` fields). Thread-safe."""

    def emit(self, event: Event) -> None:  # pragma: no cover - interface
        raise NotImplementedError

    def flush(self) -> list[Path]:
        """Write buffered events out; returns the files written (if any)."""
        return []

    def close(self) -> None:
        """Flush and stop any background work."""
        self.flush()

    def __enter__(self) -> EventSink:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class MemoryEventSink(EventSink):
    """Keeps every event in memory, in emission order."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._events: list[Event] = []

    def emit(self, event: Event) -> None:
        with self._lock:
            self._events.append(dict(event))

    @property
    def events(self) -> list[Event]:
        with self._lock:
            return list(self._events)

    def frame(self) -> pl.DataFrame:
        return events_frame(self.events)

    def clear(self) -> None:
        with self._lock:
            self._events.clear()


class LakeEventSink(EventSink):
    """Buffers events and writes them to `<lake>/events/shop=<S>/date=<D>/<part>.parquet`."""

    def __init__(
        self,
        lake_root: str | os.PathLike[str] | Lake,
        *,
        flush_interval_s: float = 10.0,
        max_buffer: int = 2000,
        part_prefix: str = "store",
        background: bool = True,
    ) -> None:
        self.lake = lake_root if isinstance(lake_root, Lake) else Lake.at(lake_root)
        self.flush_interval_s = flush_interval_s
        self.max_buffer = max_buffer
        self.part_prefix = part_prefix
        self._run = f"{int(time.time() * 1000):x}"
        self._seq = 0
        self._lock = threading.Lock()  # buffer
        self._flush_lock = threading.Lock()  # one writer at a time, parts in order
        self._buffer: list[Event] = []
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._closed = False
        self.written: list[Path] = []  # every file written, in order
        self.events_written = 0
        self._thread: threading.Thread | None = None
        if background:
            self._thread = threading.Thread(
                target=self._loop, name="simpersona-store-event-sink", daemon=True
            )
            self._thread.start()
        atexit.register(self.close)

    # ---- EventSink ---------------------------------------------------------------------
    def emit(self, event: Event) -> None:
        with self._lock:
            self._buffer.append(dict(event))
            full = len(self._buffer) >= self.max_buffer
            closed = self._closed
        if closed:  # a late request after shutdown: write it at once rather than lose it
            self.flush()
        elif full:
            if self._thread is not None:
                self._wake.set()
            else:
                self.flush()

    @property
    def pending(self) -> int:
        with self._lock:
            return len(self._buffer)

    def next_part(self) -> str:
        self._seq += 1
        return f"{self.part_prefix}-{os.getpid()}-{self._run}-{self._seq:06d}"

    def flush(self) -> list[Path]:
        with self._flush_lock:
            with self._lock:
                batch, self._buffer = self._buffer, []
            if not batch:
                return []
            try:
                written = self.lake.write_events(events_frame(batch), part=self.next_part())
            except Exception:
                # Keep the events for the next try (disk full, permissions...).
                with self._lock:
                    self._buffer[:0] = batch
                raise
            self.written.extend(written)
            self.events_written += len(batch)
            return written

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
        self._stop.set()
        self._wake.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=30)
        self.flush()
        atexit.unregister(self.close)

    # ---- background flusher --------------------------------------------------------------
    def _loop(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self.flush_interval_s)
            self._wake.clear()
            if self._stop.is_set():
                break
            try:
                self.flush()
            except Exception:  # keep serving; the events stay buffered for the next try
                log.exception("storefront event flush to %s failed", self.lake.root)
