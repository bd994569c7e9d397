#!/usr/bin/env python3
"""Install and run a real django-oscar 4.2.1 shop on loopback.

Stand-alone launcher (stdlib only; no simpersona import). The Django project it
runs lives beside this file in ``oscar/`` (settings, urls, seed command, forked
shipping app). Everything is installed under ``root`` (default
``${SIMPERSONA_SHOPS_DIR:-~/.cache/simpersona/shops}/oscar``)::

    venv/               python3.11 venv with pinned django-oscar & friends
    project/            copy of ./oscar/{manage.py,oscarshop/}
    template.sqlite3    migrated + seeded DB (18 products, 3 categories)
    static/ media/      collectstatic output / generated product images
    whoosh_index/       Haystack search index (read-only at run time)
    installed.json      stamp: pins + hash of the project source

Only install() touches the network (PyPI, through pip). Each start() serves a
fresh copy of the template DB from a temp dir, so every instance starts with 0
orders and concurrent instances never share state (they share the read-only
static/media/index files).

CLI::

    python -m scripts.shops.oscar install
    python -m scripts.shops.oscar serve [--port N]
    python -m scripts.shops.oscar products
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import hashlib
import json
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

from scripts.local_services import free_port as _free_port

SOURCE_DIR = Path(__file__).resolve().parent / "oscar"

# Exact pins (resolved together on CPython 3.11; Whoosh is used as the Haystack
# backend because Oscar 4 browses categories through Haystack, which the
# "simple" backend cannot do).
PINS = [
    "django-oscar==4.2.1",
    "Django==5.2.19",
    "asgiref==3.13.0",
    "sqlparse==0.6.1",
    "babel==2.19.0",
    "django-extra-views==0.16.0",
    "django-haystack==3.4.0",
    "django-phonenumber-field==8.5.0",
    "django-tables2==2.7.0",
    "django-treebeard==7.0.3",
    "django-widget-tweaks==1.5.1",
    "factory_boy==3.3.3",
    "Faker==40.63.0",
    "packaging==26.4",
    "phonenumbers==9.0.43",
    "pillow==13.0.0",
    "purl==1.6",
    "six==1.17.0",
    "Whoosh==2.7.4",
    "whitenoise==6.12.0",
    "gunicorn==27.0.1",
]


def _log(msg: str) -> None:
    print(f"==> {msg}", flush=True)


def _tail(text: str, n: int = 40) -> str:
    return "\n".join(text.rstrip().splitlines()[-n:])


def _source_hash(src: Path) -> str:
    h = hashlib.sha256()
    files = [src / "manage.py"] + sorted(
        p
        for p in (src / "oscarshop").rglob("*")
        if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc"
    )
    for p in files:
        h.update(str(p.relative_to(src)).encode() + b"\0" + p.read_bytes() + b"\0")
    return h.hexdigest()


def _port_is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as gunicorn does
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def _find_python() -> str:
    # Pins were resolved on CPython 3.11; fall back to the running interpreter.
    return shutil.which("python3.11") or sys.executable


class OscarShop:
    name = "oscar"
    software = "django-oscar 4.2.1"
    # gunicorn gthread: workers x threads concurrent requests (enough for >= 4 browsers).
    workers = 2
    threads = 4
    start_timeout = 60.0

    def __init__(self, root: Path | None = None):
        if root is None:
            base = os.environ.get("SIMPERSONA_SHOPS_DIR") or str(
                Path.home() / ".cache" / "simpersona" / "shops"
            )
            root = Path(base) / "oscar"
        self.root = Path(root).expanduser().resolve()
        self._proc: subprocess.Popen | None = None
        self._tmpdir: Path | None = None
        self._log_file = None
        self.base_url: str | None = None
        self.port: int | None = None

    # ------------------------------------------------------------------ paths
    @property
    def venv(self) -> Path:
        return self.root / "venv"

    @property
    def python(self) -> Path:
        return self.venv / "bin" / "python"

    @property
    def project(self) -> Path:
        return self.root / "project"

    @property
    def template_db(self) -> Path:
        return self.root / "template.sqlite3"

    @property
    def db_path(self) -> Path | None:
        return self._tmpdir / "db.sqlite3" if self._tmpdir else None

    @property
    def log_path(self) -> Path | None:
        return self._tmpdir / "server.log" if self._tmpdir else None

    def _stamp(self) -> dict:
        try:
            return json.loads((self.root / "installed.json").read_text())
        except (OSError, ValueError):
            return {}

    def _env(self, db: Path, data: Path | None = None) -> dict:
        data = data or self.root
        env = {
            k: v
            for k, v in os.environ.items()
            if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "DJANGO_SETTINGS_MODULE")
            and not k.startswith("OSCARSHOP_")
        }
        env.update(
            PATH=f"{self.venv / 'bin'}{os.pathsep}{env.get('PATH', '')}",
            VIRTUAL_ENV=str(self.venv),
            DJANGO_SETTINGS_MODULE="oscarshop.settings",
            PYTHONDONTWRITEBYTECODE="1",
            PYTHONUNBUFFERED="1",
            OSCARSHOP_DB=str(db),
            OSCARSHOP_STATIC_ROOT=str(data / "static"),
            OSCARSHOP_MEDIA_ROOT=str(data / "media"),
            OSCARSHOP_WHOOSH_PATH=str(data / "whoosh_index"),
        )
        return env

    # ---------------------------------------------------------------- install
    def installed(self) -> bool:
        stamp = self._stamp()
        if stamp.get("pins") != PINS:
            return False
        if SOURCE_DIR.is_dir() and stamp.get("source") != _source_hash(SOURCE_DIR):
            return False
        return all(
            p.exists()
            for p in (
                self.python,
                self.template_db,
                self.project / "manage.py",
                self.root / "static",
                self.root / "media",
                self.root / "whoosh_index",
            )
        )

    def _run(self, cmd: list, what: str, env: dict | None = None, cwd: Path | None = None) -> str:
        try:
            res = subprocess.run(
                [str(c) for c in cmd],
                env=env,
                cwd=cwd,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
        except OSError as e:
            raise RuntimeError(f"Oscar install: {what} failed: {e}") from e
        with open(self.root / "install.log", "a") as fh:
            fh.write(f"$ {' '.join(map(str, cmd))}\n{res.stdout}\n")
        if res.returncode != 0:
            raise RuntimeError(
                f"Oscar install: {what} failed (exit {res.returncode}): {' '.join(map(str, cmd))}\n"
                f"--- last lines of output ---\n{_tail(res.stdout)}"
            )
        return res.stdout

    def install(self) -> None:
        """Idempotent: rebuilds only what is missing or stale."""
        if self.installed():
            _log(f"Oscar already installed in {self.root}")
            return
        if not SOURCE_DIR.is_dir():
            raise RuntimeError(f"Oscar project source not found at {SOURCE_DIR}")
        t0 = time.monotonic()
        self.root.mkdir(parents=True, exist_ok=True)
        (self.root / "install.log").write_text("")
        stamp = self._stamp()

        venv_ok = self.python.exists() and stamp.get("pins") == PINS
        if not venv_ok:
            py = _find_python()
            _log(f"creating venv {self.venv} with {py}")
            shutil.rmtree(self.venv, ignore_errors=True)
            (self.root / "installed.json").unlink(missing_ok=True)
            self._run([py, "-m", "venv", self.venv], "creating the venv")
            _log(
                f"pip install {len(PINS)} pinned packages (django-oscar==4.2.1, Django==5.2.19, ...)"
            )
            self._run(
                [
                    self.python,
                    "-m",
                    "pip",
                    "install",
                    "--disable-pip-version-check",
                    "--no-input",
                    "-q",
                    *PINS,
                ],
                "pip install",
            )

        # Build project copy + data in a staging dir, then swap into place.
        stage = Path(tempfile.mkdtemp(prefix=".build-", dir=self.root))
        try:
            shutil.copytree(
                SOURCE_DIR / "oscarshop",
                stage / "project" / "oscarshop",
                ignore=shutil.ignore_patterns("__pycache__", "*.pyc"),
            )
            shutil.copy2(SOURCE_DIR / "manage.py", stage / "project" / "manage.py")
            db = stage / "template.sqlite3"
            env = self._env(db, data=stage)
            manage = [self.python, stage / "project" / "manage.py"]
            _log("migrating a fresh sqlite DB")
            self._run(
                [*manage, "migrate", "--noinput", "-v", "0"],
                "migrate",
                env=env,
                cwd=stage / "project",
            )
            _log("seeding the catalogue")
            self._run([*manage, "seed_shop"], "seed_shop", env=env, cwd=stage / "project")
            _log("building the search index")
            self._run(
                [*manage, "rebuild_index", "--noinput", "-v", "0"],
                "rebuild_index",
                env=env,
                cwd=stage / "project",
            )
            _log("collecting static files")
            self._run(
                [*manage, "collectstatic", "--noinput", "-v", "0"],
                "collectstatic",
                env=env,
                cwd=stage / "project",
            )
            # Make the template a single self-contained file (no -wal/-shm).
            con = sqlite3.connect(db)
            try:
                con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
                con.execute("PRAGMA journal_mode=DELETE")
            finally:
                con.close()
            (self.root / "installed.json").unlink(missing_ok=True)
            for name in ("project", "template.sqlite3", "static", "media", "whoosh_index"):
                dest = self.root / name
                if dest.is_dir():
                    shutil.rmtree(dest)
                elif dest.exists():
                    dest.unlink()
                (stage / name).rename(dest)
        finally:
            shutil.rmtree(stage, ignore_errors=True)
        (self.root / "installed.json").write_text(
            json.dumps(
                {"pins": PINS, "source": _source_hash(SOURCE_DIR), "software": self.software},
                indent=1,
            )
        )
        _log(f"Oscar installed in {self.root} ({time.monotonic() - t0:.0f}s)")

    # ------------------------------------------------------------ run / stop
    def start(self, port: int | None = None) -> str:
        if self._proc is not None:
            raise RuntimeError(f"Oscar shop already running at {self.base_url}")
        if not self.installed():
            raise RuntimeError(
                f"Oscar shop is not installed (or stale) in {self.root}; "
                f"run: python {Path(__file__).resolve()} install"
            )
        self._tmpdir = Path(tempfile.mkdtemp(prefix="simpersona-oscar-"))
        atexit.register(self.stop)
        shutil.copyfile(self.template_db, self.db_path)
        attempts = 1 if port else 3
        try:
            for attempt in range(attempts):
                chosen = port or _free_port()
                if not _port_is_free(chosen):
                    # Checked up front: otherwise another server on that port
                    # could answer the readiness probe.
                    raise RuntimeError(f"port {chosen} on 127.0.0.1 is already in use")
                try:
                    return self._launch(chosen)
                except RuntimeError:
                    if attempt == attempts - 1 or not self._failed_on_bind():
                        raise
                    self._kill()
        except BaseException:
            self.stop()
            raise
        raise AssertionError("unreachable")

    def _failed_on_bind(self) -> bool:
        # Retry with another port only when the failure was a bind error.
        try:
            return "Address already in use" in self.log_path.read_text(errors="replace")
        except OSError:
            return False

    def _launch(self, port: int) -> str:
        cmd = [
            self.venv / "bin" / "gunicorn",
            "--no-control-socket",
            "--chdir",
            self.project,
            "--bind",
            f"127.0.0.1:{port}",
            "--worker-class",
            "gthread",
            "--workers",
            str(self.workers),
            "--threads",
            str(self.threads),
            "--timeout",
            "120",
            "--graceful-timeout",
            "5",
            "--access-logfile",
            "-",
            "oscarshop.wsgi:application",
        ]
        self._log_file = open(self.log_path, "wb")  # noqa: SIM115 - closed in _kill()
        self._proc = subprocess.Popen(
            [str(c) for c in cmd],
            env=self._env(self.db_path),
            cwd=self.project,
            stdin=subprocess.DEVNULL,
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + self.start_timeout
        while True:
            if self._proc.poll() is not None:
                raise RuntimeError(
                    f"Oscar server exited with code {self._proc.returncode} before answering "
                    f"on {url}\n--- server log tail ---\n{self._server_log_tail()}"
                )
            try:
                with urllib.request.urlopen(url + "/basket/", timeout=5) as resp:
                    resp.read()
                break
            except urllib.error.HTTPError as e:
                if e.code < 500:
                    break
            except (OSError, urllib.error.URLError):
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"Oscar server did not answer on {url} within {self.start_timeout:.0f}s\n"
                    f"--- server log tail ---\n{self._server_log_tail()}"
                )
            time.sleep(0.25)
        self.port, self.base_url = port, url
        return url

    def _server_log_tail(self, n: int = 40) -> str:
        try:
            return _tail(self.log_path.read_text(errors="replace"), n)
        except (OSError, TypeError, AttributeError):
            return "(no log)"

    def _kill(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None

    def stop(self) -> None:
        atexit.unregister(self.stop)
        self._kill()
        if self._tmpdir is not None:
            shutil.rmtree(self._tmpdir, ignore_errors=True)
            self._tmpdir = None
        self.base_url = self.port = None

    def __enter__(self) -> OscarShop:
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    # ---------------------------------------------------------------- queries
    def _connect(self) -> sqlite3.Connection:
        db = self.db_path if self._tmpdir is not None else self.template_db
        if not db or not Path(db).exists():
            raise RuntimeError(f"no Oscar DB at {db}; install() first")
        return sqlite3.connect(str(db), timeout=30)

    def orders(self) -> int:
        """Orders placed in the running instance."""
        if self._tmpdir is None:
            raise RuntimeError("Oscar shop is not running; start() it first")
        con = self._connect()
        try:
            return con.execute("SELECT COUNT(*) FROM order_order").fetchone()[0]
        finally:
            con.close()

    def products(self) -> list[dict]:
        """The seeded catalogue (standalone + parent products, with variants)."""
        con = self._connect()
        con.row_factory = sqlite3.Row
        try:
            rows = con.execute("""
                SELECT p.id, p.title, p.slug, p.upc, p.structure, p.parent_id,
                       (SELECT s.price FROM partner_stockrecord s WHERE s.product_id = p.id) AS price,
                       (SELECT c.name FROM catalogue_productcategory pc
                          JOIN catalogue_category c ON c.id = pc.category_id
                         WHERE pc.product_id = COALESCE(p.parent_id, p.id)) AS category,
                       (SELECT v.value_text FROM catalogue_productattributevalue v
                          JOIN catalogue_productattribute a ON a.id = v.attribute_id
                         WHERE v.product_id = p.id AND a.code = 'size') AS size
                  FROM catalogue_product p WHERE p.is_public ORDER BY p.id""").fetchall()
        finally:
            con.close()
        out, by_id = [], {}
        for r in rows:
            item = {
                "id": r["id"],
                "title": r["title"],
                "upc": r["upc"],
                "price": float(r["price"]) if r["price"] is not None else None,
                "currency": "USD",
                "url": f"/catalogue/{r['slug']}_{r['id']}/",
                "category": r["category"],
            }
            if r["structure"] == "child":
                item["size"] = r["size"]
                parent = by_id.get(r["parent_id"])
                if parent is not None:
                    parent["variants"].append(item)
                continue
            item["variants"] = []
            by_id[r["id"]] = item
            out.append(item)
        for item in out:
            if item["variants"]:
                item["price"] = min(v["price"] for v in item["variants"])
        return out


def _raise_keyboard_interrupt(*_args) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--root", type=Path, default=None, help="install dir (default: SIMPERSONA_SHOPS_DIR/oscar)"
    )
    sub = ap.add_subparsers(dest="cmd", required=True)
    sub.add_parser("install", help="install (idempotent)")
    sp = sub.add_parser("serve", help="serve a fresh instance until Ctrl-C")
    sp.add_argument("--port", type=int, default=None)
    sub.add_parser("products", help="print the seeded catalogue as JSON")
    args = ap.parse_args(argv)
    shop = OscarShop(args.root)
    try:
        if args.cmd == "install":
            shop.install()
        elif args.cmd == "products":
            print(json.dumps(shop.products(), indent=1))
        elif args.cmd == "serve":
            signal.signal(signal.SIGTERM, _raise_keyboard_interrupt)
            url = shop.start(args.port)
            print(
                f"Oscar ({shop.software}) serving {url}/  (DB {shop.db_path}, log {shop.log_path}); "
                "Ctrl-C to stop",
                flush=True,
            )
            try:
                while shop._proc is not None and shop._proc.poll() is None:
                    time.sleep(0.5)
                print(f"server exited:\n{shop._server_log_tail()}", file=sys.stderr)
                return 1
            except KeyboardInterrupt:
                pass
            finally:
                shop.stop()
    except RuntimeError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
