"""`edgenano serve`: an OpenAI-compatible HTTP server (needs the `server` extra: starlette,
uvicorn) that keeps conversation states in a byte-bounded cache and decodes concurrent requests
in one batch. `create_app(Server(model))` is the ASGI app; `serve()` runs it with uvicorn."""

from __future__ import annotations

import logging

from .app import APIError, Server, create_app  # noqa: F401
from .cache import StateCache  # noqa: F401
from .scheduler import Cancelled, Scheduler  # noqa: F401


def serve(model, *, host: str = "127.0.0.1", port: int = 8080, log_level: str = "info",
          **server_options) -> None:
    """Serve `model` until interrupted (Ctrl-C stops it cleanly: running requests are cancelled).
    server_options: name, api_key, parallel, max_queue, cache_mb, prefill_chunk (see Server)."""
    import uvicorn

    server = Server(model, **server_options)
    logging.basicConfig(level=getattr(logging, log_level.upper(), logging.INFO),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    config = uvicorn.Config(create_app(server), host=host, port=port, log_level=log_level,
                            timeout_graceful_shutdown=2, access_log=log_level == "debug")

    class _Uvicorn(uvicorn.Server):
        def handle_exit(self, sig, frame) -> None:
            server.cancel_all()  # Ctrl-C: running streams end now, not at the graceful timeout
            super().handle_exit(sig, frame)

    try:
        _Uvicorn(config).run()
    finally:
        server.close()
