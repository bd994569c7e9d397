"""EverShop (npm @evershop/evershop, Node + PostgreSQL) as a throw-away test shop.

install(): `npm ci` from the pinned package-lock.json in scripts/shops/evershop/ into <root>/app,
seed a deterministic catalogue into a fresh PostgreSQL cluster (core migrations + 18 products in
3 categories, 2 shipping methods, cash on delivery), `evershop build` (webpack, ~1-2 min), then
keep the stopped cluster as <root>/pgdata-template.

start(): copy the template cluster into a temp folder, run PostgreSQL on a Unix socket there
only (no TCP; as the `postgres` user when running as root), start `evershop start` bound to
127.0.0.1:PORT (a --import preload forces loopback), wait for HTTP 200 on "/".

Usage: python -m scripts.shops.evershop install | serve [--port N]
Stdlib only at module level; psycopg2 is imported lazily (orders()/products() fall back to psql).
"""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

from scripts.local_services import free_port as _free_port
from scripts.local_services import postgres_bin_dir


def _pg_bin() -> Path:
    found = postgres_bin_dir()
    if found is None:
        raise RuntimeError(
            "PostgreSQL server binaries (initdb, pg_ctl) not found; apt-get install postgresql"
        )
    return found


HERE = Path(__file__).resolve().parent / "evershop"
EVERSHOP_VERSION = "2.2.1"
DB_NAME = "evershop"
DB_USER = "evershop"
# Files copied from scripts/shops/evershop/ into <root>/app (source name -> destination name).
APP_FILES = {
    "package.json": "package.json",
    "package-lock.json": "package-lock.json",
    "config-default.json": "config/default.json",
    "seed.mjs": "seed.mjs",
    "catalogue.json": "catalogue.json",
    "loopback.mjs": "loopback.mjs",
}


def _tail(text: str | bytes | None, n: int = 3000) -> str:
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    return (text or "")[-n:]


class EverShopShop:
    name = "evershop"
    software = f"@evershop/evershop {EVERSHOP_VERSION} (npm) + PostgreSQL"

    def __init__(self, root: Path | None = None):
        base = os.environ.get("SIMPERSONA_SHOPS_DIR") or os.path.expanduser(
            "~/.cache/simpersona/shops"
        )
        self.root = Path(root) if root else Path(base) / self.name
        self.app = self.root / "app"
        self.template = self.root / "pgdata-template"
        self.marker = self.root / "installed.json"
        self.run_as = "postgres" if os.geteuid() == 0 else None
        self._tmp: Path | None = None
        self._server: subprocess.Popen | None = None
        self._log = None
        self.port: int | None = None
        self.base_url: str | None = None
        self.start_seconds: float | None = None

    # ------------------------------------------------------------------ helpers
    def _run(self, args, *, cwd=None, env=None, user=None, timeout=1800, what=None) -> str:
        kw = {"user": user, "group": user} if user else {}
        try:
            out = subprocess.run(
                [str(a) for a in args],
                cwd=cwd,
                env=env,
                capture_output=True,
                text=True,
                timeout=timeout,
                **kw,
            )
        except subprocess.TimeoutExpired as e:
            raise RuntimeError(
                f"{what or args[0]} timed out after {timeout}s\n{_tail(e.stdout)}{_tail(e.stderr)}"
            ) from None
        if out.returncode != 0:
            raise RuntimeError(
                f"{what or args[0]} failed (exit {out.returncode}):\n{_tail(out.stdout + out.stderr)}"
            )
        return out.stdout

    def _chown(self, path: Path) -> None:
        if self.run_as:
            e = pwd.getpwnam(self.run_as)
            os.chown(path, e.pw_uid, e.pw_gid)

    def _pg_start(self, data: Path, sock: Path) -> None:
        self._run(
            [
                _pg_bin() / "pg_ctl",
                "-D",
                data,
                "-l",
                sock / "postgres.log",
                "-w",
                "-t",
                "60",
                "-o",
                f"-k {sock} -c listen_addresses='' -c fsync=off -c full_page_writes=off",
                "start",
            ],
            cwd=sock,
            user=self.run_as,
            timeout=90,
            what="pg_ctl start",
        )

    def _pg_stop(self, data: Path, sock: Path | None = None) -> None:
        if (data / "postmaster.pid").exists():
            subprocess.run(
                [str(_pg_bin() / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop"],
                capture_output=True,
                timeout=60,
                cwd=str(sock or data.parent),
                **({"user": self.run_as, "group": self.run_as} if self.run_as else {}),
            )

    def _node_env(self, sock: Path, port: int | None = None) -> dict:
        env = dict(os.environ)
        for k in list(env):
            if k.startswith(("DB_", "NODE_CONFIG")) or k in (
                "NODE_OPTIONS",
                "PORT",
                "EVERSHOP_HOME_URL",
            ):
                env.pop(k)
        env.update(
            DB_HOST=str(sock),
            DB_PORT="5432",
            DB_NAME=DB_NAME,
            DB_USER=DB_USER,
            DB_PASSWORD="",
            DB_SSLMODE="disable",
            NO_COLOR="1",
            FORCE_COLOR="0",
        )
        if port:
            env.update(
                PORT=str(port),
                EVERSHOP_HOME_URL=f"http://127.0.0.1:{port}",
                NODE_OPTIONS=f"--import={(self.app / 'loopback.mjs').as_uri()}",
            )
        return env

    # ------------------------------------------------------------------ install
    def installed(self) -> bool:
        try:
            info = json.loads(self.marker.read_text())
        except (OSError, ValueError):
            return False
        return (
            info.get("version") == EVERSHOP_VERSION
            and (self.template / "PG_VERSION").exists()
            and (self.app / ".evershop" / "build").is_dir()
        )

    def install(self) -> None:
        if self.installed():
            print(f"==> {self.name} already installed in {self.root}", flush=True)
            return
        if not shutil.which("node") or not shutil.which("npm"):
            raise RuntimeError("node and npm are required (Node >= 20)")
        _pg_bin()
        times = {}
        self.root.mkdir(parents=True, exist_ok=True)
        (self.app / "config").mkdir(parents=True, exist_ok=True)
        for src, dst in APP_FILES.items():
            shutil.copyfile(HERE / src, self.app / dst)

        t = time.monotonic()
        print(f"==> npm ci @evershop/evershop@{EVERSHOP_VERSION} into {self.app}", flush=True)
        self._run(
            ["npm", "ci", "--no-audit", "--no-fund", "--loglevel=error"],
            cwd=self.app,
            timeout=1800,
            what="npm ci",
        )
        times["npm ci"] = time.monotonic() - t

        work = Path(tempfile.mkdtemp(prefix="evershop-install-"))
        self._chown(work)
        data = work / "data"
        try:
            t = time.monotonic()
            print("==> initdb + migrations + seed catalogue", flush=True)
            self._run(
                [
                    _pg_bin() / "initdb",
                    "-D",
                    data,
                    "-U",
                    DB_USER,
                    "--auth=trust",
                    "--encoding=UTF8",
                    "--locale=C",
                    "--no-sync",
                ],
                cwd=work,
                user=self.run_as,
                timeout=120,
                what="initdb",
            )
            self._pg_start(data, work)
            self._run(
                [_pg_bin() / "createdb", "-h", work, "-U", DB_USER, DB_NAME],
                timeout=60,
                what="createdb",
            )
            self._run(
                ["node", "seed.mjs"],
                cwd=self.app,
                env=self._node_env(work),
                timeout=600,
                what="seed.mjs",
            )
            times["db seed"] = time.monotonic() - t

            t = time.monotonic()
            print("==> evershop build (webpack; a minute or two)", flush=True)
            log = self._run(
                ["node", "node_modules/@evershop/evershop/dist/bin/evershop.js", "build"],
                cwd=self.app,
                env=self._node_env(work),
                timeout=1800,
                what="evershop build",
            )
            if (
                not (self.app / ".evershop" / "build").is_dir()
                or "Compiled successfully" not in log
            ):
                raise RuntimeError(f"evershop build produced no build:\n{_tail(log)}")
            times["build"] = time.monotonic() - t

            self._pg_stop(data, work)
            if self.template.exists():
                shutil.rmtree(self.template)
            shutil.move(str(data), str(self.template))
        finally:
            self._pg_stop(data, work)
            shutil.rmtree(work, ignore_errors=True)
        self.marker.write_text(json.dumps({"version": EVERSHOP_VERSION, "times": times}, indent=1))
        print("==> installed: " + ", ".join(f"{k} {v:.0f}s" for k, v in times.items()), flush=True)

    # ------------------------------------------------------------------ run
    def start(self, port: int | None = None) -> str:
        if self._server:
            raise RuntimeError("already started")
        if not self.installed():
            raise RuntimeError(f"{self.name} is not installed in {self.root}; run install() first")
        t0 = time.monotonic()
        self.port = port or _free_port()
        self._tmp = Path(tempfile.mkdtemp(prefix="evershop-"))
        self._chown(self._tmp)
        data = self._tmp / "data"
        try:
            # cp -a as the caller (root can read a template under a 0700 home; ownership is kept)
            self._run(["cp", "-a", self.template, data], timeout=120, what="copy template DB")
            self._pg_start(data, self._tmp)
            log_path = self._tmp / "server.log"
            self._log = open(log_path, "wb")  # noqa: SIM115 - closed in stop()
            self._server = subprocess.Popen(
                ["node", "node_modules/@evershop/evershop/dist/bin/evershop.js", "start"],
                cwd=self.app,
                env=self._node_env(self._tmp, self.port),
                stdout=self._log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
            url = f"http://127.0.0.1:{self.port}"
            deadline = time.monotonic() + 120
            while True:
                if self._server.poll() is not None:
                    raise RuntimeError(
                        f"evershop exited ({self._server.returncode}):\n{_tail(log_path.read_text())}"
                    )
                try:
                    with urllib.request.urlopen(url + "/", timeout=10) as r:
                        if r.status == 200:
                            break
                except (urllib.error.URLError, OSError):
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError(
                        f"evershop did not answer on {url} within 120 s:\n{_tail(log_path.read_text())}"
                    )
                time.sleep(0.5)
        except BaseException:
            self.stop()
            raise
        self.base_url = url
        self.start_seconds = time.monotonic() - t0
        return url

    def stop(self) -> None:
        if self._server:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self._server.pid, signal.SIGTERM)
            try:
                self._server.wait(timeout=15)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self._server.pid, signal.SIGKILL)
                self._server.wait(timeout=5)
            self._server = None
        if self._log:
            self._log.close()
            self._log = None
        if self._tmp:
            self._pg_stop(self._tmp / "data", self._tmp)
            shutil.rmtree(self._tmp, ignore_errors=True)
            self._tmp = None
        self.base_url = None

    def server_pids(self) -> list[int]:
        """Pids of the node processes (main server + event/cron children)."""
        if not self._server:
            return []
        pgid = self._server.pid
        pids = []
        for d in Path("/proc").iterdir():
            if d.name.isdigit():
                try:
                    if os.getpgid(int(d.name)) == pgid:
                        pids.append(int(d.name))
                except OSError:
                    pass
        return pids

    # ------------------------------------------------------------------ queries
    def _query(self, sql: str) -> list[tuple]:
        if not self._tmp:
            raise RuntimeError("not started")
        try:
            import psycopg2
        except ImportError:
            out = self._run(
                [
                    _pg_bin() / "psql",
                    "-h",
                    self._tmp,
                    "-U",
                    DB_USER,
                    "-d",
                    DB_NAME,
                    "-At",
                    "-F",
                    "\t",
                    "-c",
                    sql,
                ],
                timeout=30,
                what="psql",
            )
            return [tuple(line.split("\t")) for line in out.splitlines() if line]
        conn = psycopg2.connect(host=str(self._tmp), user=DB_USER, dbname=DB_NAME)
        try:
            with conn.cursor() as cur:
                cur.execute(sql)
                return cur.fetchall()
        finally:
            conn.close()

    def orders(self) -> int:
        return int(self._query('SELECT count(*) FROM "order"')[0][0])

    def products(self) -> list[dict]:
        """The seeded catalogue (from catalogue.json; ids are the DB product ids when running)."""
        cat = json.loads((HERE / "catalogue.json").read_text())
        names = {c["url_key"]: c["name"] for c in cat["categories"]}
        ids = {}
        if self._tmp and self._server:
            ids = {r[0]: int(r[1]) for r in self._query("SELECT sku, product_id FROM product")}
        return [
            {
                "id": ids.get(p["sku"], p["sku"]),
                "sku": p["sku"],
                "title": p["name"],
                "price": p["price"],
                "url": f"/{p['category']}/{p['url_key']}",
                "category": names[p["category"]],
            }
            for p in cat["products"]
        ]

    def __enter__(self) -> EverShopShop:
        if not self._server:
            self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def main(argv: list[str] | None = None) -> int:
    import argparse

    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--root", type=Path, default=None)
    sub = ap.add_subparsers(dest="cmd", required=True)
    sub.add_parser("install")
    sp = sub.add_parser("serve")
    sp.add_argument("--port", type=int, default=None)
    args = ap.parse_args(argv)
    shop = EverShopShop(args.root)
    if args.cmd == "install":
        shop.install()
        return 0
    shop.install()
    url = shop.start(args.port)
    print(
        f"==> {shop.name} running at {url} (started in {shop.start_seconds:.1f}s); Ctrl-C to stop",
        flush=True,
    )
    try:
        signal.signal(signal.SIGTERM, lambda *a: (_ for _ in ()).throw(KeyboardInterrupt()))
        while shop._server and shop._server.poll() is None:
            time.sleep(1)
    except KeyboardInterrupt:
        pass
    finally:
        shop.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
