"""Run the storefront with uvicorn on a loopback port in a background thread (tests, agents).

with serve(app) as base_url:
    httpx.get(base_url + "/")

base_url, stop = run_in_thread(app)   # port 0 = a free port
...
stop()
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import uvicorn

DEFAULT_HOST = "127.0.0.1"


def run_in_thread(
    app: Any,
    port: int = 0,
    host: str = DEFAULT_HOST,
    startup_timeout_s: float = 20.0,
    name: str = "storefront",
) -> tuple[str, Callable[[], None]]:
    """Start `app` under uvicorn in a daemon thread; returns (base URL, stop function).

    The socket is bound before the server starts, so port 0 picks a free port and the URL is
    known at once; the call returns when the server accepts connections. `stop()` shuts the
    server down (running the app's shutdown, which flushes the storefront's event sink).
    `name` names the thread and the errors (the LLM server uses this too).
    """
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    bound_port = sock.getsockname()[1]
    config = uvicorn.Config(
        app, host=host, port=bound_port, log_level="warning", access_log=False, lifespan="on"
    )
    server = uvicorn.Server(config)
    errors: list[BaseException] = []

    def target() -> None:
        try:
            server.run(sockets=[sock])
        except BaseException as exc:  # surfaced by the startup wait below
            errors.append(exc)

    thread = threading.Thread(target=target, name=f"{name}-{bound_port}", daemon=True)
    thread.start()
    deadline = time.monotonic() + startup_timeout_s
    while not server.started:
        if errors or not thread.is_alive():
            sock.close()
            raise RuntimeError(f"{name} server failed to start: {errors[:1]}")
        if time.monotonic() > deadline:
            server.should_exit = True
            raise TimeoutError(f"{name} server did not start within {startup_timeout_s} s")
        time.sleep(0.02)

    def stop(timeout_s: float = 10.0) -> None:
        server.should_exit = True
        thread.join(timeout_s)
        if thread.is_alive():  # a client holding a connection open: stop waiting for it
            server.force_exit = True
            thread.join(timeout_s)
        sock.close()

    return f"http://{host}:{bound_port}", stop


@contextmanager
def serve(app: Any, port: int = 0, host: str = DEFAULT_HOST) -> Iterator[str]:
    """Context manager around `run_in_thread`: yields the base URL, stops on exit."""
    base_url, stop = run_in_thread(app, port=port, host=host)
    try:
        yield base_url
    finally:
        stop()
