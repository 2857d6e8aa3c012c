"""The HTTP side of `edgenano serve`: an ASGI app (Starlette) with OpenAI's routes, errors in
OpenAI's shape, server-sent events for streams, and a thread per request running the ordinary
completion code over the batching scheduler and the state cache (Server)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import threading
import time
import uuid

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from .. import completions
from ..errors import ContextOverflow
from .cache import StateCache
from .scheduler import Cancelled, Handle, Scheduler
from .view import RequestModel

log = logging.getLogger("edgenano.server")

# Fields a request may carry beyond create_*completion's own arguments: none but the input.
CHAT_FIELDS = completions.CHAT_ARGS | {"messages"}
COMPLETION_FIELDS = completions.COMPLETION_ARGS | {"prompt"}


class APIError(Exception):
    def __init__(self, status: int, message: str, type_: str = "invalid_request_error",
                 code: str | None = None, param: str | None = None):
        super().__init__(message)
        self.status, self.message, self.type, self.code, self.param = (status, message, type_,
                                                                      code, param)

    def response(self) -> JSONResponse:
        return JSONResponse({"error": {"message": self.message, "type": self.type,
                                       "param": self.param, "code": self.code}},
                            status_code=self.status)


def as_api_error(e: BaseException) -> APIError:
    """A request's failure as the status OpenAI's API gives it."""
    if isinstance(e, APIError):
        return e
    if isinstance(e, ContextOverflow):
        return APIError(400, str(e), code="context_length_exceeded", param="messages")
    if isinstance(e, (TypeError, ValueError)):
        return APIError(400, str(e).splitlines()[0] if str(e) else type(e).__name__)
    return APIError(500, f"internal error: {type(e).__name__}: {e}", type_="server_error")


class Server:
    """The model, its state cache and scheduler, the admission limits and the counters."""

    def __init__(self, model, *, name: str | None = None, api_key: str | None = None,
                 parallel: int = 4, max_queue: int = 16, cache_mb: float = 1024,
                 prefill_chunk: int = 256):
        if parallel < 1 or max_queue < 0:
            raise ValueError("parallel must be >= 1 and max_queue >= 0")
        self.model, self.name = model, name or model.name
        self.api_key = api_key or None
        self.parallel, self.max_queue = parallel, max_queue
        self.cache = StateCache(int(cache_mb * 1024 * 1024))
        self.scheduler = Scheduler(model, prefill_chunk=prefill_chunk,
                                   max_batch=max(parallel, 1))
        self._slots = threading.BoundedSemaphore(parallel)
        self._lock = threading.Lock()
        self.admitted = 0  # running + waiting for a slot
        self.handles: set[Handle] = set()
        self._workers: list[threading.Thread] = []
        self.counters = {"requests": 0, "errors_4xx": 0, "errors_5xx": 0, "cancelled": 0,
                         "completion_tokens": 0, "prompt_tokens": 0}
        self.started = time.time()

    # -- admission -----------------------------------------------------------------------------
    def admit(self) -> Handle:
        with self._lock:
            if self.admitted >= self.parallel + self.max_queue:
                raise APIError(503, f"the server is busy ({self.parallel} requests running, "
                                    f"{self.max_queue} waiting); try again later",
                               type_="server_error", code="server_busy")
            self.admitted += 1
            h = Handle(f"req-{uuid.uuid4().hex[:12]}")
            self.handles.add(h)
            return h

    def release(self, handle: Handle) -> None:
        with self._lock:
            self.admitted -= 1
            self.handles.discard(handle)

    def count(self, key: str, n: int = 1) -> None:
        with self._lock:
            self.counters[key] += n

    def start_worker(self, handle: Handle, kind: str, body: dict, emit) -> None:
        t = threading.Thread(target=self.run, args=(handle, kind, body, emit), name=handle.rid,
                             daemon=True)
        with self._lock:
            self._workers = [w for w in self._workers if w.is_alive()] + [t]
        t.start()

    def cancel_all(self) -> None:
        """Cancel every request (shutting down): each stops at its next evaluation."""
        with self._lock:
            for h in self.handles:
                h.cancel()

    def close(self) -> None:
        """Cancel what runs, stop the scheduler and wait (a little) for the request threads, so
        no model state outlives the server."""
        self.cancel_all()
        self.scheduler.close()
        with self._lock:
            workers = list(self._workers)
        for w in workers:
            w.join(timeout=5)

    # -- running one request on its own thread -------------------------------------------------
    def run(self, handle: Handle, kind: str, body: dict, emit) -> None:
        """Run a completion for `body`; `emit(kind, item)` gets ("chunk", dict) per streamed
        chunk or ("result", dict), then ("error", exc) or ("end", None). Blocks for a slot."""
        view = RequestModel(self.model, self.scheduler, self.cache, handle, self.name)
        t0 = time.perf_counter()
        usage = None
        status = "ok"
        try:
            self._slots.acquire()
            try:
                self.scheduler.enter()
                try:
                    result = self._call(view, kind, body)
                    if isinstance(result, dict):
                        usage = self._cached(result.get("usage"), view)
                        emit("result", result)
                    else:
                        for chunk in result:
                            if handle.cancelled:
                                raise Cancelled(handle.rid)
                            usage = self._cached(chunk.get("usage"), view) or usage
                            emit("chunk", chunk)
                finally:
                    self.scheduler.leave()
            finally:
                self._slots.release()
        except Cancelled:
            status = "cancelled"
            self.count("cancelled")
        except Exception as e:  # noqa: BLE001 - every failure goes back to the client
            err = as_api_error(e)
            status = f"error {err.status}"
            if err.status >= 500:
                log.exception("request %s failed", handle.rid)
            emit("error", err)
        finally:
            self.release(handle)
            emit("end", None)
        if usage:
            self.count("completion_tokens", usage.get("completion_tokens", 0))
            self.count("prompt_tokens", usage.get("prompt_tokens", 0))
        log.info("%s %s %s: prompt %d tokens (reused %d, prefilled %d), %s completion tokens, "
                 "%.2f s", handle.rid, kind, status, view.n_prompt, view.n_reused,
                 view.n_prefilled, (usage or {}).get("completion_tokens", "?"),
                 time.perf_counter() - t0)

    @staticmethod
    def _cached(usage: dict | None, view: RequestModel) -> dict | None:
        """OpenAI's usage.prompt_tokens_details.cached_tokens: the prompt tokens the state cache
        held, which were not prefilled again."""
        if usage is not None:
            usage["prompt_tokens_details"] = {"cached_tokens": view.n_reused}
        return usage

    def _call(self, view: RequestModel, kind: str, body: dict):
        kw = dict(body)
        # the model id goes back as the client named it (any name reaches the one model)
        view.name = kw.pop("model", None) or self.name
        if kind == "chat":
            messages = kw.pop("messages", None)
            return completions.create_chat_completion(view, messages, **kw)
        prompt = kw.pop("prompt", None)
        if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str):
            prompt = prompt[0]  # OpenAI's clients may send one prompt as a list
        return completions.create_completion(view, prompt, **kw)

    # -- what /metrics shows ----------------------------------------------------------------
    def metrics(self) -> dict:
        with self._lock:
            counters = dict(self.counters)
            admitted = self.admitted
        sched = self.scheduler.snapshot()
        return {"model": self.name, "uptime_seconds": round(time.time() - self.started, 1),
                "parallel": self.parallel, "admitted": admitted,
                "requests": counters, "cache": self.cache.snapshot(), "scheduler": sched}


def _prometheus(m: dict) -> str:
    lines = []

    def put(name: str, value, help_: str, kind: str = "gauge") -> None:
        lines.append(f"# HELP edgenano_{name} {help_}")
        lines.append(f"# TYPE edgenano_{name} {kind}")
        lines.append(f"edgenano_{name} {value}")

    r, c, s = m["requests"], m["cache"], m["scheduler"]
    put("requests_total", r["requests"], "requests answered", "counter")
    put("requests_cancelled_total", r["cancelled"], "requests whose client left", "counter")
    put("errors_4xx_total", r["errors_4xx"], "requests refused (4xx)", "counter")
    put("errors_5xx_total", r["errors_5xx"], "requests failed (5xx)", "counter")
    put("prompt_tokens_total", r["prompt_tokens"], "prompt tokens of finished requests",
        "counter")
    put("completion_tokens_total", r["completion_tokens"], "tokens generated", "counter")
    put("requests_admitted", m["admitted"], "requests running or waiting for a slot")
    put("cache_entries", c["entries"], "states in the cache")
    put("cache_bytes", c["bytes"], "bytes the cached states hold")
    put("cache_max_bytes", c["max_bytes"], "the cache's bound (--cache-mb)")
    put("cache_hits_total", c["hits"], "prompts that started from a cached state", "counter")
    put("cache_lookups_total", c["lookups"], "prompts looked up in the cache", "counter")
    put("cache_tokens_reused_total", c["tokens_reused"], "prompt tokens not prefilled again",
        "counter")
    put("cache_tokens_prefilled_total", c["tokens_prefilled"], "prompt tokens prefilled",
        "counter")
    put("cache_evictions_total", c["evictions"], "states evicted (least recently used)",
        "counter")
    put("decode_steps_total", s["decode_steps"], "batched decode steps", "counter")
    put("decode_tokens_total", s["decode_tokens"], "tokens decoded in them", "counter")
    put("decode_batch_mean", round(s["mean_batch"], 3), "mean sequences per decode step")
    put("prefill_chunks_total", s["prefill_chunks"], "prefill chunks run", "counter")
    return "\n".join(lines) + "\n"


# -- ASGI plumbing ----------------------------------------------------------------------------

async def _until_disconnect(receive) -> None:
    while True:
        msg = await receive()
        if msg["type"] == "http.disconnect":
            return


class _SSE(Response):
    """Server-sent events from an async iterator of bytes; the client leaving stops it (and
    `on_close` runs) at once, not at the next write."""

    media_type = "text/event-stream"

    def __init__(self, chunks, on_close):
        self.status_code, self.background = 200, None
        self.raw_headers = [(b"content-type", b"text/event-stream; charset=utf-8"),
                            (b"cache-control", b"no-cache"), (b"x-accel-buffering", b"no")]
        self.chunks, self.on_close = chunks, on_close

    async def __call__(self, scope, receive, send) -> None:
        async def pump():
            await send({"type": "http.response.start", "status": 200,
                        "headers": self.raw_headers})
            async for data in self.chunks:
                await send({"type": "http.response.body", "body": data, "more_body": True})
            await send({"type": "http.response.body", "body": b"", "more_body": False})

        tasks = [asyncio.ensure_future(pump()), asyncio.ensure_future(_until_disconnect(receive))]
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            for t in done:
                if not t.cancelled() and t.exception() and not isinstance(t.exception(), OSError):
                    raise t.exception()
        except asyncio.CancelledError:
            return  # the server is shutting down (its graceful wait ran out): end quietly
        finally:
            for t in tasks:
                t.cancel()
            for t in tasks:
                with contextlib.suppress(BaseException):
                    await t
            self.on_close()


def _sse(obj) -> bytes:
    return b"data: " + json.dumps(obj, separators=(",", ":")).encode() + b"\n\n"


def create_app(server: Server) -> Starlette:
    async def check_key(request: Request) -> None:
        if server.api_key is None:
            return
        got = request.headers.get("authorization", "")
        if got != f"Bearer {server.api_key}":
            raise APIError(401, "Incorrect API key provided." if got else
                           "Missing API key: send 'Authorization: Bearer KEY'.",
                           code="invalid_api_key")

    async def read_body(request: Request, fields: set[str], required: str) -> dict:
        raw = await request.body()
        try:
            body = json.loads(raw)
        except (ValueError, UnicodeDecodeError) as e:
            raise APIError(400, f"the request body is not valid JSON: {e}") from None
        if not isinstance(body, dict):
            raise APIError(400, "the request body must be a JSON object")
        unknown = sorted(set(body) - fields)
        if unknown:
            raise APIError(400, f"unknown field(s): {', '.join(unknown)}", param=unknown[0])
        if required not in body:
            raise APIError(400, f"'{required}' is required", param=required)
        return body

    async def complete(request: Request, kind: str):
        await check_key(request)
        fields, required = ((CHAT_FIELDS, "messages") if kind == "chat"
                            else (COMPLETION_FIELDS, "prompt"))
        body = await read_body(request, fields, required)
        handle = server.admit()
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue = asyncio.Queue()

        def emit(what, item):
            loop.call_soon_threadsafe(queue.put_nowait, (what, item))

        server.count("requests")
        server.start_worker(handle, kind, body, emit)
        receive = request.receive

        async def next_event():
            """The next event, or None when the client left first (the request is cancelled)."""
            get = asyncio.ensure_future(queue.get())
            gone = asyncio.ensure_future(_until_disconnect(receive))
            done, _ = await asyncio.wait({get, gone}, return_when=asyncio.FIRST_COMPLETED)
            gone.cancel()
            if get in done:
                return get.result()
            get.cancel()
            handle.cancel()
            return None

        if not body.get("stream"):
            ev = await next_event()
            if ev is None:
                return Response(status_code=499)
            what, item = ev
            if what == "error":
                raise item
            return JSONResponse(item)

        # Streams: the status is decided once the prompt is in (an over-long prompt is a 400,
        # not an error inside a 200 stream), so hold the first chunk until the second comes.
        held = []
        while True:
            ev = await next_event()
            if ev is None:
                return Response(status_code=499)
            what, item = ev
            if what == "error":
                raise item
            if what == "end":
                break
            held.append(item)
            if len(held) >= 2:
                break

        async def chunks():
            for c in held:
                yield _sse(c)
            while len(held) >= 2:
                what, item = await queue.get()
                if what == "chunk":
                    yield _sse(item)
                elif what == "error":  # after the status went out: the error as an event
                    yield _sse({"error": {"message": item.message, "type": item.type,
                                          "param": item.param, "code": item.code}})
                elif what == "end":
                    break
            yield b"data: [DONE]\n\n"

        return _SSE(chunks(), handle.cancel)

    async def chat(request: Request):
        return await complete(request, "chat")

    async def text(request: Request):
        return await complete(request, "text")

    async def models(request: Request):
        await check_key(request)
        return JSONResponse({"object": "list", "data": [
            {"id": server.name, "object": "model", "created": int(server.started),
             "owned_by": "edgenano", "meta": {"n_ctx": server.model.n_ctx,
                                              "backend": server.model.backend_name}}]})

    async def health(request: Request):
        return JSONResponse({"status": "ok"})

    async def metrics(request: Request):
        await check_key(request)
        m = server.metrics()
        fmt = request.query_params.get("format", "")
        accept = request.headers.get("accept", "")
        if fmt == "prometheus" or (fmt != "json" and "text/plain" in accept):
            return PlainTextResponse(_prometheus(m), media_type="text/plain; version=0.0.4")
        return JSONResponse(m)

    async def api_error(request: Request, exc: APIError):
        server.count("errors_5xx" if exc.status >= 500 else "errors_4xx")
        return exc.response()

    async def http_error(request: Request, exc: HTTPException):
        server.count("errors_4xx" if exc.status_code < 500 else "errors_5xx")
        msg = {404: f"no route {request.url.path}",
               405: f"method {request.method} is not allowed on {request.url.path}"}
        return APIError(exc.status_code, msg.get(exc.status_code, str(exc.detail)),
                        code="not_found" if exc.status_code == 404 else None).response()

    routes = [Route("/v1/chat/completions", chat, methods=["POST"]),
              Route("/v1/completions", text, methods=["POST"]),
              Route("/chat/completions", chat, methods=["POST"]),
              Route("/completions", text, methods=["POST"]),
              Route("/v1/models", models, methods=["GET"]),
              Route("/models", models, methods=["GET"]),
              Route("/health", health, methods=["GET"]),
              Route("/metrics", metrics, methods=["GET"])]
    @contextlib.asynccontextmanager
    async def lifespan(app):
        yield
        server.close()  # cancels what still runs, stops the scheduler

    app = Starlette(routes=routes, exception_handlers={APIError: api_error,
                                                       HTTPException: http_error},
                    lifespan=lifespan)
    app.state.server = server
    return app
