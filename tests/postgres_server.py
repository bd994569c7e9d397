"""A throw-away PostgreSQL server from Debian's package, on loopback, for the deployment tests.

initdb into a fresh folder, pg_ctl start on 127.0.0.1 and a free port (the Unix socket in the
same folder), password authentication over TCP; `stop()` shuts it down and removes the folder.
Under root the server runs as the `postgres` system user (initdb refuses root).
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pytest

from scripts.local_services import free_port as _free_port
from scripts.local_services import postgres_bin_dir

INSTALL_HINT = (
    "PostgreSQL server binaries (initdb, pg_ctl) not found under /usr/lib/postgresql/*/bin or "
    "on PATH. Run `make postgres` (apt-get install postgresql; `make setup` does it too)."
)


@dataclass
class PostgresServer:
    bin_dir: Path
    base: Path
    port: int
    user: str = "simpersona"
    password: str = "pg-test-secret"
    host: str = "127.0.0.1"
    run_as: str | None = None

    @property
    def data_dir(self) -> Path:
        return self.base / "data"

    def _run(self, *args: str) -> subprocess.CompletedProcess:
        kwargs = {"user": self.run_as, "group": self.run_as} if self.run_as else {}
        out = subprocess.run(
            list(args), capture_output=True, text=True, timeout=120, cwd=self.base, **kwargs
        )
        if out.returncode != 0:
            log = self.base / "server.log"
            tail = log.read_text()[-3000:] if log.exists() else ""
            raise RuntimeError(f"{args[0]} failed ({out.returncode}): {out.stderr}\n{tail}")
        return out

    def start(self) -> PostgresServer:
        pwfile = self.base / "pwfile"
        pwfile.write_text(self.password + "\n")
        if self.run_as:
            entry = pwd.getpwnam(self.run_as)
            for p in (self.base, pwfile):
                os.chown(p, entry.pw_uid, entry.pw_gid)
        self._run(
            str(self.bin_dir / "initdb"),
            "-D",
            str(self.data_dir),
            "-U",
            self.user,
            f"--pwfile={pwfile}",
            "--auth-local=trust",
            "--auth-host=scram-sha-256",
            "--encoding=UTF8",
            "--no-sync",
        )
        opts = f"-k {self.base} -h {self.host} -p {self.port} -c fsync=off"
        self._run(
            str(self.bin_dir / "pg_ctl"),
            "-D",
            str(self.data_dir),
            "-l",
            str(self.base / "server.log"),
            "-o",
            opts,
            "-w",
            "-t",
            "60",
            "start",
        )
        return self

    def stop(self) -> None:
        try:
            if (self.data_dir / "postmaster.pid").exists():
                self._run(
                    str(self.bin_dir / "pg_ctl"),
                    "-D",
                    str(self.data_dir),
                    "-m",
                    "fast",
                    "-w",
                    "stop",
                )
        finally:
            shutil.rmtree(self.base, ignore_errors=True)

    def connect(self, dbname: str = "postgres"):
        import psycopg2

        return psycopg2.connect(
            host=self.host, port=self.port, user=self.user, password=self.password, dbname=dbname
        )

    def create_database(self, name: str) -> str:
        con = self.connect()
        try:
            con.autocommit = True
            with con.cursor() as cur:
                cur.execute(f'CREATE DATABASE "{name}"')
        finally:
            con.close()
        return name

    def env(self, dbname: str) -> dict[str, str]:
        """The DAGSTER_POSTGRES_* variables docker/dagster.yaml reads, pointing here."""
        return {
            "DAGSTER_POSTGRES_HOST": self.host,
            "DAGSTER_POSTGRES_PORT": str(self.port),
            "DAGSTER_POSTGRES_USER": self.user,
            "DAGSTER_POSTGRES_PASSWORD": self.password,
            "DAGSTER_POSTGRES_DB": dbname,
        }


def start_postgres() -> PostgresServer:
    """Start a server or fail the test with how to install PostgreSQL (never skip)."""
    bin_dir = postgres_bin_dir()
    if bin_dir is None:
        pytest.fail(INSTALL_HINT, pytrace=False)
    run_as = None
    if os.geteuid() == 0:
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            pytest.fail(
                "running as root, and there is no `postgres` system user to run the server "
                "(initdb refuses root): " + INSTALL_HINT,
                pytrace=False,
            )
        run_as = "postgres"
    # A short path under /tmp: the Unix socket path must stay under ~100 characters, and the
    # `postgres` user must be able to reach it (pytest's tmp_path is private to root).
    base = Path(tempfile.mkdtemp(prefix="simpersona-pg-"))
    server = PostgresServer(bin_dir=bin_dir, base=base, port=_free_port(), run_as=run_as)
    try:
        return server.start()
    except Exception:
        server.stop()
        raise
