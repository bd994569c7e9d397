"""Running an import: read sources in a registered format, screen implausible times, write
the lake (`simpersona import`, `run_import`)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from simpersona.ingest.errors import ImporterError, MappingError
from simpersona.ingest.lake_write import write_import
from simpersona.ingest.plausible import screen_timestamps
from simpersona.ingest.registry import get_format
from simpersona.ingest.result import ImportResult, ProgressFn
from simpersona.ingest.sources import resolve_paths

DEFAULT_LAKE = Path("data/lake")


def read_import(
    fmt: str,
    paths: Sequence[str | os.PathLike[str]],
    shop_id: str | None = None,
    mapping: str | os.PathLike[str] | None = None,
    progress: ProgressFn | None = None,
) -> ImportResult:
    """Read sources of `fmt` without writing anything; events at implausible times go to
    the importer quarantine (`screen_timestamps`)."""
    form = get_format(fmt)
    files = resolve_paths(paths)
    if form.takes_mapping and mapping is None:
        raise MappingError(f"the {fmt} format needs --mapping <file.yaml>")
    if not form.takes_mapping and mapping is not None:
        raise ImporterError(f"--mapping is only used with --format generic, not {fmt!r}")
    return screen_timestamps(form.read(files, shop_id, mapping, progress))


def run_import(
    format: str,
    paths: Sequence[str | os.PathLike[str]],
    lake_root: str | os.PathLike[str] = DEFAULT_LAKE,
    shop_id: str | None = None,
    mapping: str | os.PathLike[str] | None = None,
    *,
    progress: bool = False,
) -> ImportResult:
    """Read `paths` in `format` and write events, catalog and importer quarantine into the
    lake at `lake_root`. `progress` shows a progress bar over the files (on stderr)."""
    real_title = get_format(format).is_real_title  # unknown format: before touching files
    files = resolve_paths(paths)
    if not progress:
        result = read_import(format, files, shop_id, mapping)
        write_import(result, lake_root, is_real_title=real_title)
        return result
    from simpersona.progress import progress_bar

    with progress_bar(len(files), f"reading {format}", unit="files", transient=True) as bar:

        def step(path: Path) -> None:
            bar.advance()
            bar.note(path.name)

        result = read_import(format, files, shop_id, mapping, progress=step)
        bar.update(description="writing lake", completed=0)
        bar.note()
        write_import(result, lake_root, progress=step, is_real_title=real_title)
    return result
