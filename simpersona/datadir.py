"""Where the project's data lives: `--data-dir`, else $SIMPERSONA_DATA_DIR, else ./data.

Every command resolves its folders (lake, warehouse, reports, models...) from this one root
the same way, so `SIMPERSONA_DATA_DIR=/srv/sp simpersona partitions` and `simpersona
partitions --data-dir /srv/sp` read the same lake.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

DATA_DIR_ENV = "SIMPERSONA_DATA_DIR"


def default_data_dir() -> Path:
    """$SIMPERSONA_DATA_DIR, else ./data."""
    return Path(os.environ.get(DATA_DIR_ENV) or "data")


def use_data_dir(data_dir: Path) -> Path:
    """Make `data_dir` the process's data root (the Dagster resources read it at import)."""
    os.environ[DATA_DIR_ENV] = str(data_dir)
    return data_dir


# `--data-dir`, falling back to $SIMPERSONA_DATA_DIR, then ./data
DataDirOption = Annotated[
    Path,
    typer.Option(
        "--data-dir",
        envvar=DATA_DIR_ENV,
        help="Root of the project's data (lake, warehouse, reports, models); "
        f"default ${DATA_DIR_ENV}, else ./data.",
        show_default=False,
    ),
]


def lake_or_default(lake: Path | None, data_dir: Path) -> Path:
    return lake if lake is not None else data_dir / "lake"
