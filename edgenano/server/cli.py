"""`edgenano serve`: the command line of the OpenAI-compatible server (edgenano.server)."""

from __future__ import annotations

import argparse
import ipaddress
import os
import sys

EPILOG = """\
routes: POST /v1/chat/completions, POST /v1/completions (streaming with "stream": true),
GET /v1/models, GET /health, GET /metrics (JSON; Prometheus text with ?format=prometheus).

example:
  edgenano serve model.gguf --port 8080 --api-key secret
  python -c "from openai import OpenAI; c = OpenAI(base_url='http://127.0.0.1:8080/v1',
      api_key='secret'); print(c.chat.completions.create(model='x',
      messages=[{'role': 'user', 'content': 'hi'}]).choices[0].message.content)"
"""


def _at_least(lo: float, kind=int):
    def parse(s: str):
        v = kind(s)
        if v < lo:
            raise argparse.ArgumentTypeError(f"must be at least {lo}, got {v}")
        return v

    parse.__name__ = kind.__name__
    return parse


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def serve_main(argv: list[str] | None = None) -> int:
    from ..cli import fail, open_model

    prog = "edgenano serve"
    p = argparse.ArgumentParser(
        prog=prog, description="Serve a model over an OpenAI-compatible HTTP API, keeping each "
        "conversation's state between requests and decoding concurrent requests in one batch.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model", nargs="?", help="GGUF file (default: the built-in tiny reasoner)")
    p.add_argument("--backend", default="native", choices=["native", "reference", "llama.cpp"],
                   help="engine (default: native; only native batches decode steps)")
    p.add_argument("-t", "--threads", type=_at_least(1), default=None,
                   help="CPU threads (default: every core this process may run on)")
    p.add_argument("-c", "--ctx", type=_at_least(1), default=None,
                   help="context length per request in tokens (default: the model's trained "
                        "context, at most 8192)")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to listen on (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=_at_least(0), default=8080, help="port (default 8080)")
    p.add_argument("--api-key", default=os.environ.get("EDGENANO_API_KEY"),
                   help="require 'Authorization: Bearer KEY' (default: $EDGENANO_API_KEY; "
                        "none: no key)")
    p.add_argument("--parallel", type=_at_least(1), default=4,
                   help="requests generating at once, decoded together (default 4)")
    p.add_argument("--max-queue", type=_at_least(0), default=16,
                   help="requests waiting for a slot before new ones get 503 (default 16)")
    p.add_argument("--cache-mb", type=_at_least(0, float), default=1024,
                   help="memory for cached conversation states, MiB (default 1024)")
    p.add_argument("--prefill-chunk", type=_at_least(1), default=256,
                   help="prompt tokens fed per step between the others' decode steps "
                        "(default 256)")
    p.add_argument("--name", default=None,
                   help="the model id /v1/models reports (default: the file name)")
    p.add_argument("--log-level", default="info",
                   choices=["critical", "error", "warning", "info", "debug"],
                   help="log level (default info: a line per request with its cache use)")
    a = p.parse_args(argv)
    try:
        import starlette  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError:
        fail(prog, 'the server needs its extra: pip install "edgenano[server]"')
    if not _loopback(a.host) and not a.api_key:
        sys.stderr.write(f"warning: listening on {a.host} without --api-key: anyone who can "
                         "reach this port can use the model\n")
    threads = a.threads
    model = open_model(prog, a.model, backend=a.backend, n_ctx=a.ctx, n_threads=threads,
                       verbose=False)
    from . import serve

    try:
        serve(model, host=a.host, port=a.port, log_level=a.log_level, name=a.name,
              api_key=a.api_key, parallel=a.parallel, max_queue=a.max_queue,
              cache_mb=a.cache_mb, prefill_chunk=a.prefill_chunk)
    except OSError as e:  # the port is taken, the address is not ours
        fail(prog, str(e))
    finally:
        import gc

        del model  # the engine's objects go before the interpreter's teardown
        gc.collect()
    return 0
