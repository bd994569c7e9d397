"""The storefront under load, and killed under load: latency, errors, memory, lost events.

A real `simpersona storefront` process (uvicorn, write-ahead event log) serves a generated
shop on loopback. Clients in this process (asyncio + aiohttp, which needs a third of the
CPU httpx does, so that on a 2-core machine the server and not the load generator is
measured; its CPU is printed too) browse it as shoppers do: home, a product page, an add
to cart posted with the page's CSRF token (and, past 8 lines, a removal of the oldest),
the cart, a search. Half keep their cookies; half never do (a new buyer per request, the
case that used to grow the server's memory without bound). Every answered request that logs an event is counted as
acknowledged; afterwards the lake must hold each of them.

1. baseline: one client for a few seconds (requests per second, p99), in this process;
2. load: `--clients` clients for `--seconds`; 5xx count, p50/p99 latency, the server's
   resident memory after warm-up (the first quarter) and at the end, events acknowledged
   vs written (after a clean stop);
3. kill: a fresh server under the same load gets `kill -9` at a random moment; the next
   sink on the lake recovers the write-ahead log; events acknowledged vs in the lake.

    python benchmarks/bench_storefront_load.py            # 32 clients, 60 s, kill run 20 s
    python benchmarks/bench_storefront_load.py --quick    # 32 clients, 15 s, kill run 8 s

Prints a line per phase and, last, `name=value` pairs.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

CSRF_RE = re.compile(r'name="csrf_token" value="([0-9a-f]+)"')
# Shoppers' carts hold a few lines: past this, the oldest line is removed after each add
# (unbounded carts would turn the cart page into a benchmark of 100-line tables).
MAX_CART_LINES = 8
LOGGING_GETS = ("/", "/products/{pid}", "/cart", "/search?q=mug", "/collections/all")


@dataclass
class Tally:
    latencies_ms: list[float] = field(default_factory=list)
    statuses: dict[int, int] = field(default_factory=dict)
    acknowledged: int = 0  # answered requests that logged exactly one event
    transport_errors: int = 0

    def add(self, status: int, ms: float, logs_event: bool) -> None:
        self.latencies_ms.append(ms)
        self.statuses[status] = self.statuses.get(status, 0) + 1
        if logs_event:
            self.acknowledged += 1

    def p(self, q: float) -> float:
        xs = sorted(self.latencies_ms)
        return xs[min(len(xs) - 1, int(q * len(xs)))] if xs else float("nan")

    @property
    def server_errors(self) -> int:
        return sum(n for s, n in self.statuses.items() if s >= 500)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far."""
    with open(f"/proc/{pid}/stat") as fh:
        fields = fh.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def start_storefront(lake: Path, max_buyers: int) -> tuple[subprocess.Popen, str]:
    import httpx

    port = free_port()
    exe = Path(sys.executable).with_name("simpersona")
    proc = subprocess.Popen(
        [str(exe), "storefront", "--lake", str(lake), "--port", str(port),
         "--flush-seconds", "5", "--max-buyers", str(max_buyers)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            if httpx.head(base + "/", timeout=1).status_code == 200:
                return proc, base
        except httpx.TransportError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError("the storefront did not start")
        time.sleep(0.2)


async def shopper(base: str, pids: list[str], keep_cookies: bool, tally: Tally, stop_at: float,
                  seed: int, max_cart_lines: int = MAX_CART_LINES) -> None:  # fmt: skip
    import aiohttp

    rng = random.Random(seed)
    # `unsafe`: keep cookies set by an IP-address host (127.0.0.1)
    jar = aiohttp.CookieJar(unsafe=True) if keep_cookies else aiohttp.DummyCookieJar()
    timeout = aiohttp.ClientTimeout(total=10)
    async with aiohttp.ClientSession(base, cookie_jar=jar, timeout=timeout) as http:

        async def timed(method: str, path: str, ok: int, **kw) -> str:
            t0 = time.perf_counter()
            async with http.request(method, path, allow_redirects=False, **kw) as r:
                text = await r.text()
            # an answered request with the expected status logged exactly one event
            tally.add(r.status, (time.perf_counter() - t0) * 1e3, r.status == ok)
            return text

        cart: list[str] = []  # product ids in this shopper's cart, oldest first
        while time.monotonic() < stop_at:
            path = rng.choice(LOGGING_GETS).format(pid=rng.choice(pids))
            try:
                text = await timed("GET", path, 200)
                product_page = keep_cookies and path.startswith("/products/")
                token = CSRF_RE.search(text) if product_page else None
                if token:
                    pid = path.rsplit("/", 1)[1]
                    form = {"product_id": pid, "csrf_token": token.group(1)}
                    # a 303 to the cart: its add_to_cart was logged
                    await timed("POST", "/cart/add", 303, data={**form, "quantity": "1"})
                    cart = [p for p in cart if p != pid] + [pid]
                    if 0 < max_cart_lines < len(cart):  # take the oldest line out again
                        gone = cart.pop(0)
                        # a 303: its remove_from_cart was logged
                        await timed("POST", "/cart/update", 303,
                                    data={**form, "product_id": gone, "quantity": "0"})  # fmt: skip
            except (TimeoutError, aiohttp.ClientError):
                tally.transport_errors += 1
                if time.monotonic() < stop_at:
                    await asyncio.sleep(0.05)


async def load(base: str, pids: list[str], clients: int, seconds: float, seed: int,
               on_tick=None, max_cart_lines: int = MAX_CART_LINES) -> Tally:  # fmt: skip
    tally = Tally()
    stop_at = time.monotonic() + seconds
    tasks = [
        asyncio.create_task(
            shopper(base, pids, i % 2 == 0, tally, stop_at, seed * 1000 + i, max_cart_lines)
        )
        for i in range(clients)
    ]
    while time.monotonic() < stop_at:
        await asyncio.sleep(1)
        if on_tick:
            on_tick()
    await asyncio.gather(*tasks)
    return tally


def lake_events(lake: Path) -> int:
    import polars as pl

    files = list((lake / "events").glob("shop=*/date=*/store-*.parquet"))
    return sum(pl.scan_parquet(f).select(pl.len()).collect().item() for f in files)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="15 s of load and an 8 s kill run")
    ap.add_argument("--clients", type=int, default=32)
    ap.add_argument("--seconds", type=float, default=None)
    ap.add_argument("--max-buyers", type=int, default=2_000,
                    help="The server's per-shop buyer cap (small, to show memory bounded).")  # fmt: skip
    ap.add_argument("--max-cart-lines", type=int, default=MAX_CART_LINES,
                    help="A shopper's cart size, past which its oldest line is removed "
                    "(0: carts grow without bound, a cart page of 100+ lines by the end).")  # fmt: skip
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    seconds = args.seconds or (15.0 if args.quick else 60.0)
    kill_seconds = 8.0 if args.quick else 20.0
    rng = random.Random(args.seed)

    from simpersona.store.catalog import StoreCatalog
    from simpersona.store.events import LakeEventSink
    from simpersona.synth import GeneratorConfig, generate_lake

    work = Path(tempfile.mkdtemp(prefix="bench-storefront-"))
    try:
        lake = work / "lake"
        generate_lake(lake, GeneratorConfig(n_shops=1, n_buyers=300, seed=args.seed),
                      work / "truth.parquet", progress=False)  # fmt: skip
        shutil.rmtree(lake / "events")  # only the storefront's events from here on
        shop = StoreCatalog.from_lake(lake, "shop-000")
        pids = list(shop.products)

        # 1. baseline: one client
        proc, base = start_storefront(lake, args.max_buyers)
        one = asyncio.run(load(base, pids, 1, 3.0 if args.quick else 8.0, args.seed,
                               max_cart_lines=args.max_cart_lines))  # fmt: skip
        one_s = 3.0 if args.quick else 8.0
        print(f"baseline 1 client: {len(one.latencies_ms) / one_s:.0f} req/s, "
              f"p99 {one.p(0.99):.1f} ms")  # fmt: skip

        # 2. load
        samples: list[tuple[float, float]] = []
        cpu0, client_cpu0 = cpu_seconds(proc.pid), sum(os.times()[:2])
        t_start = time.monotonic()
        many = asyncio.run(load(base, pids, args.clients, seconds, args.seed,
                                on_tick=lambda: samples.append(
                                    (time.monotonic() - t_start, rss_mb(proc.pid))),
                                max_cart_lines=args.max_cart_lines))  # fmt: skip
        server_cpu = (cpu_seconds(proc.pid) - cpu0) / seconds  # cores the server used
        client_cpu = (sum(os.times()[:2]) - client_cpu0) / seconds
        warm = [m for t, m in samples if t >= seconds / 4]
        rss_warm, rss_end = (warm[0], warm[-1]) if warm else (float("nan"),) * 2
        proc.send_signal(signal.SIGINT)  # a clean stop flushes the log
        proc.wait(60)
        written = lake_events(lake)
        acked = one.acknowledged + many.acknowledged
        rps = len(many.latencies_ms) / seconds
        print(f"load {args.clients} clients x {seconds:g} s: {len(many.latencies_ms)} requests "
              f"({rps:.0f}/s), 5xx {many.server_errors}, p50 {many.p(0.5):.1f} ms, "
              f"p99 {many.p(0.99):.1f} ms; server CPU {server_cpu:.2f} cores, clients {client_cpu:.2f}; RSS {rss_warm:.0f} MB after warm-up, {rss_end:.0f} MB "
              f"at the end; events acknowledged {acked}, in the lake {written}")  # fmt: skip

        # 3. kill -9 at a random moment under the same load
        before = written
        proc, base = start_storefront(lake, args.max_buyers)
        kill_at = rng.uniform(0.3, 0.8) * kill_seconds
        loop_t0 = time.monotonic()

        def maybe_kill() -> None:
            if proc.poll() is None and time.monotonic() - loop_t0 >= kill_at:
                proc.send_signal(signal.SIGKILL)

        killed = asyncio.run(load(base, pids, args.clients, kill_seconds, args.seed + 1,
                                  on_tick=maybe_kill, max_cart_lines=args.max_cart_lines))  # fmt: skip
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
        proc.wait(60)
        sink = LakeEventSink(lake, background=False)  # what the next storefront does at start
        sink.close()
        after = lake_events(lake) - before
        lost_kill = max(0, killed.acknowledged - after)
        print(f"kill -9 after {kill_at:.1f} s: events acknowledged {killed.acknowledged}, "
              f"recovered from the log {sink.recovered_events}, in the lake {after}, "
              f"lost {lost_kill}")  # fmt: skip

        figures = {
            "clients": args.clients,
            "max_cart_lines": args.max_cart_lines,
            "seconds": seconds,
            "requests": len(many.latencies_ms),
            "rps": round(rps, 1),
            "rps_ratio_vs_1_client": round(rps / (len(one.latencies_ms) / one_s), 2),
            "server_errors_5xx": many.server_errors,
            "transport_errors": many.transport_errors,
            "p50_ms": round(many.p(0.5), 1),
            "p99_ms": round(many.p(0.99), 1),
            "p99_ms_1_client": round(one.p(0.99), 1),
            "server_cpu_cores": round(server_cpu, 2),
            "client_cpu_cores": round(client_cpu, 2),
            "server_ms_cpu_per_request": round(
                server_cpu * seconds / len(many.latencies_ms) * 1e3, 2
            ),
            "rss_mb_warm": round(rss_warm, 1),
            "rss_mb_end": round(rss_end, 1),
            "rss_growth_mb": round(rss_end - rss_warm, 1),
            "events_acknowledged": acked,
            "events_lost": max(0, acked - written),
            "kill_events_acknowledged": killed.acknowledged,
            "kill_events_recovered": sink.recovered_events,
            "kill_events_lost": lost_kill,
            "p99_target_met": many.p(0.99) <= 100 and many.server_errors == 0,
        }
        print(" ".join(f"{k}={v}" for k, v in figures.items()))
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    os.environ.setdefault("PYTHONWARNINGS", "ignore")
    main()
