"""What the local services the tests and the third-party stores start need: a free loopback
port and the PostgreSQL server binaries (Debian's postgresql package)."""

from __future__ import annotations

import glob
import shutil
import socket
from pathlib import Path


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now (the OS picks it)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def postgres_bin_dir() -> Path | None:
    """The newest /usr/lib/postgresql/<v>/bin with initdb and pg_ctl, else the PATH's; None
    when PostgreSQL's server binaries are not installed (`make postgres`)."""
    dirs = sorted(
        glob.glob("/usr/lib/postgresql/*/bin"),
        key=lambda d: int(Path(d).parent.name) if Path(d).parent.name.isdigit() else 0,
    )
    for d in reversed(dirs):
        if (Path(d) / "initdb").exists() and (Path(d) / "pg_ctl").exists():
            return Path(d)
    initdb = shutil.which("initdb")
    if initdb and shutil.which("pg_ctl"):
        return Path(initdb).parent
    return None
