"""Starting and stopping `edgenano serve`'s app inside a test: uvicorn on a free loopback port in a
thread, the base URL handed back, shut down (running requests cancelled) at the end."""

from __future__ import annotations

import contextlib
import socket
import threading
import time

import httpx


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def running_server(model, **options):
    """Yields (base_url, Server)."""
    import uvicorn

    from edgenano.server import Server, create_app

    server = Server(model, **options)
    port = free_port()
    config = uvicorn.Config(create_app(server), host="127.0.0.1", port=port, log_level="warning",
                            timeout_graceful_shutdown=2)
    uv = uvicorn.Server(config)
    t = threading.Thread(target=uv.run, daemon=True)
    t.start()
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            if httpx.get(base + "/health", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError("the server did not start")
        time.sleep(0.05)
    try:
        yield base, server
    finally:
        uv.should_exit = True
        t.join(timeout=15)
        server.close()
