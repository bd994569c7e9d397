"""Source files: which files an import reads, and the lake part each one's rows go to."""

from __future__ import annotations

import glob
import hashlib
import os
from collections.abc import Iterable
from pathlib import Path

from simpersona.ingest.errors import ImporterError

SOURCE_SUFFIXES: tuple[str, ...] = (".csv", ".csv.gz", ".tsv", ".txt", ".parquet")


def source_stem(path: Path) -> str:
    """The lake part name of a source file: its name without `.csv`, `.csv.gz`, `.parquet`."""
    name = path.name
    for suffix in sorted(SOURCE_SUFFIXES, key=len, reverse=True):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return path.stem


def lake_part(path: Path) -> str:
    """The lake file name (without `.parquet`) of a source file's events and importer
    quarantine: its stem and a hash of its absolute path. Re-importing the same file
    replaces its part; `a/events.csv` and then `b/events.csv` get parts of their own."""
    where = hashlib.blake2b(str(path.resolve()).encode(), digest_size=4).hexdigest()
    return f"{source_stem(path)}-{where}"


def resolve_paths(items: Iterable[str | os.PathLike[str]]) -> list[Path]:
    """Expand folders (their CSV/Parquet files, not recursive) and globs into a sorted,
    de-duplicated file list. Raises ImporterError for a missing path or an empty result."""
    out: list[Path] = []
    for item in items:
        p = Path(item)
        if p.is_dir():
            found = sorted(
                f
                for f in p.iterdir()
                if f.is_file()
                and not f.name.startswith(".")
                and f.name.lower().endswith(SOURCE_SUFFIXES)
            )
            if not found:
                raise ImporterError(
                    f"folder has no source files ({', '.join(SOURCE_SUFFIXES)})", file=p
                )
            out.extend(found)
        elif p.exists():
            out.append(p)
        elif glob.has_magic(str(item)):
            found = sorted(Path(f) for f in glob.glob(str(item)) if Path(f).is_file())
            if not found:
                raise ImporterError("no file matches this pattern", file=str(item))
            out.extend(found)
        else:
            raise ImporterError("no such file or folder", file=p)
    seen: set[Path] = set()
    files = []
    for f in out:
        key = f.resolve()
        if key not in seen:
            seen.add(key)
            files.append(f)
    if not files:
        raise ImporterError("no source files given")
    stems: dict[str, Path] = {}
    for f in files:
        stem = source_stem(f)
        if stem in stems:
            raise ImporterError(
                f"two source files share the name {stem!r} ({stems[stem]} and {f}); the lake "
                "names its files after the source, so rename one",
                file=f,
            )
        stems[stem] = f
    return files
