"""Event sinks: where the storefront's canonical events go.

`LakeEventSink` logs each event to a write-ahead segment before the request is answered
and writes the segments into the lake's hive layout with `Lake.write_events`, one new part
per flush (`<prefix>-<pid>-<run>-<seq>`, so no flush ever replaces another, across restarts
too), from a background thread every `flush_interval_s` seconds or as soon as `max_buffer`
events wait, and at `close()` (also registered with `atexit`); segments a killed process
left are written by the next sink on that lake. Simulated sessions then flow through the
same ingestion pipeline as real logs.

`MemoryEventSink` keeps events in memory for tests and agents.
"""

from __future__ import annotations

import atexit
import json
import logging
import os
import re
import threading
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import polars as pl

from simpersona.lake import Lake, sweep_temp_files
from simpersona.processes import process_alive
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
    """Writes events to `<lake>/events/shop=<S>/date=<D>/<part>.parquet` through a
    write-ahead log, so an acknowledged request's event survives `kill -9`.

    `emit` appends the event to the current segment `<lake>/_wal/<part>.jsonl` and hands it
    to the operating system before it returns (the request is answered after that, and the
    kernel writes its page cache out whatever becomes of the process). A flush closes the
    segment and writes it as the lake part of the same name (one atomic file per day), then
    deletes it. A segment left behind by a process that died is written when the next sink
    on the same lake starts: under the segment's own part name, so a crash between the
    Parquet write and the delete replaces the part instead of duplicating its events.
    """

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
        self.wal_dir = Path(self.lake.root) / WAL_DIR
        self._run = f"{int(time.time() * 1000):x}"
        self._seq = 0
        self._lock = threading.Lock()  # the current segment
        self._flush_lock = threading.Lock()  # one writer at a time, parts in order
        self._segment: Path | None = None
        self._fh: Any = None
        self._in_segment = 0
        # closed segments not yet in the lake, with their event counts
        self._closed_segments: dict[Path, int] = {}
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._closed = False
        self.written: list[Path] = []  # every file written, in order
        self.events_written = 0
        sweep_temp_files(self.lake.root / "events")  # parts a killed writer left half-done
        self.recovered_events = self.recover()
        self._thread: threading.Thread | None = None
        if background:
            self._thread = threading.Thread(
                target=self._loop, name="simpersona-store-event-sink", daemon=True
            )
            self._thread.start()
        atexit.register(self.close)

    # ---- EventSink ---------------------------------------------------------------------
    def emit(self, event: Event) -> None:
        line = _encode(event)
        with self._lock:
            if self._fh is None:
                self._segment = self.wal_dir / f"{self.next_part()}.jsonl"
                self.wal_dir.mkdir(parents=True, exist_ok=True)
                self._fh = open(self._segment, "ab")  # noqa: SIM115 - closed at rotation
            self._fh.write(line)
            self._fh.flush()  # in the kernel's hands before the request is answered
            self._in_segment += 1
            full = self._in_segment >= self.max_buffer
            closed = self._closed
        if closed:  # a late request after shutdown: write it at once
            self.flush()
        elif full:
            if self._thread is not None:
                self._wake.set()
            else:
                self.flush()

    @property
    def pending(self) -> int:
        """Events logged but not yet in the lake."""
        with self._lock:
            return self._in_segment + sum(self._closed_segments.values())

    def next_part(self) -> str:
        self._seq += 1
        return f"{self.part_prefix}-{os.getpid()}-{self._run}-{self._seq:06d}"

    def flush(self) -> list[Path]:
        with self._flush_lock:
            with self._lock:  # rotate: later events go to a new segment
                if self._fh is not None:
                    assert self._segment is not None  # emit sets both, flush clears both
                    self._fh.close()
                    self._closed_segments[self._segment] = self._in_segment
                    self._fh, self._segment, self._in_segment = None, None, 0
                todo = list(self._closed_segments)
            written: list[Path] = []
            for segment in todo:  # a failure leaves the segment for the next try
                files, n = self._write_segment(segment)
                with self._lock:
                    del self._closed_segments[segment]
                written += files
                self.events_written += n
            self.written.extend(written)
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

    # ---- the write-ahead log -------------------------------------------------------------
    def _write_segment(self, segment: Path) -> tuple[list[Path], int]:
        events, bad = read_segment(segment)
        if bad:
            log.warning("%s: %d unreadable line(s) skipped (cut by a crash)", segment, bad)
        files = self.lake.write_events(events_frame(events), part=segment.stem) if events else []
        segment.unlink(missing_ok=True)
        return files, len(events)

    def recover(self) -> int:
        """Write into the lake the segments that sinks of dead processes left; returns the
        number of events recovered."""
        if not self.wal_dir.is_dir():
            return 0
        total = 0
        for segment in sorted(self.wal_dir.glob("*.jsonl")):
            m = _SEGMENT_RE.search(segment.stem)
            if m is None or process_alive(int(m.group("pid"))):
                continue
            files, n = self._write_segment(segment)
            self.written.extend(files)
            total += n
        if total:
            log.warning("recovered %d storefront events from %s", total, self.wal_dir)
        return total

    # ---- background flusher --------------------------------------------------------------
    def _loop(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self.flush_interval_s)
            self._wake.clear()
            if self._stop.is_set():
                break
            try:
                self.flush()
            except Exception:  # keep serving; the segments stay for the next try
                log.exception("storefront event flush to %s failed", self.lake.root)


WAL_DIR = "_wal"
_SEGMENT_RE = re.compile(r"-(?P<pid>\d+)-(?P<run>[0-9a-f]+)-(?P<seq>\d{6})$")


def _encode(event: Event) -> bytes:
    row = {k: (v.isoformat() if isinstance(v, datetime) else v) for k, v in event.items()}
    return json.dumps(row, ensure_ascii=False, separators=(",", ":")).encode() + b"\n"


def read_segment(path: Path) -> tuple[list[Event], int]:
    """The events of a WAL segment, and the number of lines that did not parse (a line cut
    by a crash mid-write: its request was never answered)."""
    events: list[Event] = []
    bad = 0
    with open(path, "rb") as fh:
        for raw in fh:
            try:
                row = json.loads(raw)
                row["ts"] = datetime.fromisoformat(row["ts"])
            except (ValueError, KeyError, TypeError):
                bad += 1
                continue
            events.append(row)
    return events, bad
