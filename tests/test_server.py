"""`edgenano serve` end to end on loopback, through the real `openai` client and raw HTTP (httpx):
routes, streaming, errors and their statuses, the API key, the state cache across the turns of a
conversation (later turns prefill only what is new; replies equal a fresh run), concurrent
requests decoded in one batch, a client that leaves, admission (503), and the command itself."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time

import pytest

pytest.importorskip("starlette")
pytest.importorskip("uvicorn")
httpx = pytest.importorskip("httpx")
openai = pytest.importorskip("openai")

from edgenano import Model  # noqa: E402

from .server_util import free_port, running_server  # noqa: E402

QUESTIONS = ["What is 12+34?", "What is 205+17?", "What is 3+4?", "What is 99+1?",
             "What is 640+360?", "What is 7+8?"]


@pytest.fixture(scope="module")
def model():
    return Model(n_threads=2)


@pytest.fixture(scope="module")
def server(model):
    with running_server(model, parallel=4, max_queue=8, cache_mb=64) as s:
        yield s


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=server[0] + "/v1", api_key="unused", max_retries=0)


def _msg(q):
    return [{"role": "user", "content": q}]


def test_health_models_metrics(server, client):
    base, srv = server
    assert httpx.get(base + "/health").json() == {"status": "ok"}
    models = client.models.list()
    assert [m.id for m in models.data] == [srv.name]
    m = httpx.get(base + "/metrics").json()
    assert {"cache", "scheduler", "requests"} <= set(m)
    text = httpx.get(base + "/metrics?format=prometheus").text
    assert "# TYPE edgenano_cache_hits_total counter" in text
    assert "edgenano_cache_tokens_reused_total" in text


def test_chat_equals_the_library(model, client):
    """Non-streamed and streamed replies through the server equal create_chat_completion on the
    model itself (temperature 0), reasoning included."""
    want = model.create_chat_completion(_msg(QUESTIONS[0]), temperature=0, max_tokens=60)
    got = client.chat.completions.create(model="any", messages=_msg(QUESTIONS[0]), temperature=0,
                                         max_tokens=60)
    w = want["choices"][0]["message"]
    assert got.choices[0].message.content == w["content"]
    assert got.choices[0].message.reasoning_content == w["reasoning_content"]
    assert got.choices[0].finish_reason == want["choices"][0]["finish_reason"]
    assert got.usage.completion_tokens == want["usage"]["completion_tokens"]
    assert got.usage.completion_tokens_details.reasoning_tokens == \
        want["usage"]["completion_tokens_details"]["reasoning_tokens"]

    stream = client.chat.completions.create(model="any", messages=_msg(QUESTIONS[0]),
                                            temperature=0, max_tokens=60, stream=True,
                                            stream_options={"include_usage": True})
    content, reasoning, usage = "", "", None
    for chunk in stream:
        if chunk.usage:
            usage = chunk.usage
        for ch in chunk.choices:
            content += ch.delta.content or ""
            reasoning += getattr(ch.delta, "reasoning_content", None) or ""
    lib = list(model.create_chat_completion(_msg(QUESTIONS[0]), temperature=0, max_tokens=60,
                                            stream=True))
    d = [c["choices"][0]["delta"] for c in lib if c["choices"]]
    assert content == "".join(x.get("content") or "" for x in d)
    assert reasoning == "".join(x.get("reasoning_content") or "" for x in d)
    assert (content.strip(), reasoning.strip()) == (w["content"], w["reasoning_content"].strip())
    assert usage.completion_tokens == want["usage"]["completion_tokens"]


def test_thinking_controls(model, client):
    """chat_template_kwargs.enable_thinking, thinking_budget and max_thinking_tokens (extra body)
    do what they do in the library."""
    off = client.chat.completions.create(
        model="any", messages=_msg(QUESTIONS[1]), temperature=0, max_tokens=40,
        extra_body={"chat_template_kwargs": {"enable_thinking": False}})
    want = model.create_chat_completion(_msg(QUESTIONS[1]), temperature=0, max_tokens=40,
                                        chat_template_kwargs={"enable_thinking": False})
    assert off.choices[0].message.reasoning_content is None
    assert off.choices[0].message.content == want["choices"][0]["message"]["content"]
    for key in ("thinking_budget", "max_thinking_tokens"):
        got = client.chat.completions.create(model="any", messages=_msg(QUESTIONS[1]),
                                             temperature=0, max_tokens=80,
                                             extra_body={key: 8, "grace": 4})
        want = model.create_chat_completion(_msg(QUESTIONS[1]), temperature=0, max_tokens=80,
                                            thinking_budget=8, grace=4)
        assert got.choices[0].message.reasoning_content == \
            want["choices"][0]["message"]["reasoning_content"]
        assert got.usage.completion_tokens_details.reasoning_tokens <= 8 + 4 + 8


def test_completions_route(model, client):
    want = model.create_completion("1+1=", temperature=0, max_tokens=8)
    model.reset()
    got = client.completions.create(model="any", prompt="1+1=", temperature=0, max_tokens=8)
    assert got.choices[0].text == want["choices"][0]["text"]
    chunks = list(client.completions.create(model="any", prompt="1+1=", temperature=0,
                                            max_tokens=8, stream=True))
    assert "".join(c.choices[0].text for c in chunks if c.choices) == want["choices"][0]["text"]


def test_multi_turn_prefills_only_new_tokens(model, server, client):
    """Each turn resends the whole conversation (as every OpenAI client does); from the second
    on, the server starts from the previous turn's cached state: the cached tokens reach at least
    the previous turn's prompt less its generation prompt, and the reply equals a fresh run."""
    base, _ = server
    messages = [{"role": "system", "content": "You add numbers."}]
    prev_prompt = 0
    before = httpx.get(base + "/metrics").json()["cache"]
    prefilled = 0
    for i, q in enumerate(QUESTIONS[:4]):
        messages.append({"role": "user", "content": q})
        r = client.chat.completions.create(model="any", messages=messages, temperature=0,
                                           max_tokens=300)
        want = model.create_chat_completion(messages, temperature=0, max_tokens=300)
        assert r.choices[0].finish_reason == "stop"  # (a reply cut inside its reasoning
        # renders as an empty answer, whose "\n\n" tokenizes across the snapshot's end)
        msg = r.choices[0].message
        assert msg.content == want["choices"][0]["message"]["content"]
        assert msg.reasoning_content == want["choices"][0]["message"]["reasoning_content"]
        cached = r.usage.prompt_tokens_details.cached_tokens
        new = r.usage.prompt_tokens - cached
        prefilled += new
        if i:
            assert cached >= prev_prompt - 8, (i, cached, prev_prompt)
            # what is new: the previous answer, the end of its turn, the new question
            assert new <= r.usage.prompt_tokens - prev_prompt + 8
        prev_prompt = r.usage.prompt_tokens
        messages.append({"role": "assistant", "content": msg.content})
    after = httpx.get(base + "/metrics").json()["cache"]
    assert after["tokens_prefilled"] - before["tokens_prefilled"] == prefilled
    assert after["hits"] - before["hits"] >= 3


def test_reply_cut_in_its_reasoning_still_reuses_the_cache(server, client):
    """A reply cut by max_tokens inside its reasoning comes back as an empty answer, which the
    next turn renders with a blank line the snapshot's end does not tokenize the same way: the
    snapshot sits before that join, so the next turn still starts from it."""
    messages = [{"role": "system", "content": "Terse."}, {"role": "user", "content": "12+34?"}]
    r1 = client.chat.completions.create(model="any", messages=messages, temperature=0,
                                        max_tokens=6)
    assert r1.choices[0].finish_reason == "length" and not r1.choices[0].message.content
    messages += [{"role": "assistant", "content": ""}, {"role": "user", "content": "5+6?"}]
    r2 = client.chat.completions.create(model="any", messages=messages, temperature=0,
                                        max_tokens=6)
    cached = r2.usage.prompt_tokens_details.cached_tokens
    assert cached >= r1.usage.prompt_tokens - 8, (cached, r1.usage.prompt_tokens)


def test_concurrent_requests_are_batched_and_equal_alone(model, server, client):
    base, _ = server
    alone = {q: model.create_chat_completion(_msg(q), temperature=0, max_tokens=64)
             ["choices"][0]["message"] for q in QUESTIONS[:4]}
    steps0 = httpx.get(base + "/metrics").json()["scheduler"]
    out = {}

    def ask(q):
        r = client.chat.completions.create(model="any", messages=_msg(q), temperature=0,
                                           max_tokens=64)
        out[q] = r.choices[0].message

    threads = [threading.Thread(target=ask, args=(q,)) for q in QUESTIONS[:4]]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for q in QUESTIONS[:4]:
        assert (out[q].content, out[q].reasoning_content) == \
            (alone[q]["content"], alone[q]["reasoning_content"])
    s = httpx.get(base + "/metrics").json()["scheduler"]
    steps = s["decode_steps"] - steps0["decode_steps"]
    tokens = s["decode_tokens"] - steps0["decode_tokens"]
    assert s["max_batch"] >= 2 and tokens / steps > 1.3, (tokens, steps)


def test_errors_have_openai_shape_and_status(server):
    base, _ = server
    url = base + "/v1/chat/completions"

    def err(r, status):
        assert r.status_code == status, r.text
        e = r.json()["error"]
        assert isinstance(e["message"], str) and e["message"]
        assert {"type", "param", "code"} <= set(e)
        return e

    err(httpx.post(url, content=b"{not json"), 400)
    err(httpx.post(url, content=b"[1, 2]"), 400)
    assert err(httpx.post(url, json={"messages": _msg("x"), "bogus": 1}), 400)["param"] == "bogus"
    err(httpx.post(url, json={"messages": _msg("x"), "temperature": -1}), 400)
    err(httpx.post(url, json={"messages": []}), 400)
    err(httpx.post(url, json={"model": "x"}), 400)
    long = " ".join(["seven"] * 1500)
    e = err(httpx.post(url, json={"messages": _msg(long)}), 400)
    assert e["code"] == "context_length_exceeded"
    e = err(httpx.post(url, json={"messages": _msg(long), "stream": True}), 400)
    assert e["code"] == "context_length_exceeded"
    err(httpx.post(base + "/v1/completions", json={"prompt": long}), 400)
    err(httpx.get(base + "/v1/nothing"), 404)
    err(httpx.get(url), 405)
    with pytest.raises(openai.BadRequestError):
        openai.OpenAI(base_url=base + "/v1", api_key="x", max_retries=0).chat.completions.create(
            model="any", messages=_msg(long))


def test_api_key(model):
    with running_server(model, api_key="sesame", parallel=1) as (base, _):
        ok = openai.OpenAI(base_url=base + "/v1", api_key="sesame", max_retries=0)
        assert ok.chat.completions.create(model="any", messages=_msg("1+1?"), max_tokens=4,
                                          temperature=0).choices
        bad = openai.OpenAI(base_url=base + "/v1", api_key="wrong", max_retries=0)
        with pytest.raises(openai.AuthenticationError):
            bad.chat.completions.create(model="any", messages=_msg("1+1?"), max_tokens=4)
        r = httpx.get(base + "/v1/models")
        assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key"
        assert httpx.get(base + "/health").status_code == 200  # health stays open


def _wait(pred, timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(0.02)
    return False


def test_disconnect_stops_generation_and_full_is_503(model):
    with running_server(model, parallel=1, max_queue=0) as (base, srv):
        body = {"messages": _msg(QUESTIONS[2]), "max_tokens": 1000, "stream": True,
                "temperature": 0.6, "seed": 1, "thinking_budget": -1,
                "logit_bias": {str(i): -100 for i in model.stop_ids}}
        reader = httpx.Client(timeout=30)
        with reader.stream("POST", base + "/v1/chat/completions", json=body) as r:
            assert r.status_code == 200
            lines = r.iter_lines()
            assert next(lines).startswith("data: ")
            # the one slot is taken and there is no queue: the next request is refused
            busy = httpx.post(base + "/v1/chat/completions", json={"messages": _msg("x")})
            assert busy.status_code == 503 and busy.json()["error"]["code"] == "server_busy"
        reader.close()  # the client leaves mid-stream
        assert _wait(lambda: srv.metrics()["requests"]["cancelled"] == 1)
        assert _wait(lambda: srv.admitted == 0 and srv.scheduler.active == 0)
        done = srv.scheduler.snapshot()["decode_tokens"]
        time.sleep(0.3)
        assert srv.scheduler.snapshot()["decode_tokens"] == done  # nothing decodes on
        assert done < 1000
        # the slot is free again
        r = httpx.post(base + "/v1/chat/completions", json={"messages": _msg("1+1?"),
                                                             "max_tokens": 4})
        assert r.status_code == 200


def test_cache_is_bounded_and_evicts(model):
    with running_server(model, parallel=2, cache_mb=1) as (base, srv):
        c = openai.OpenAI(base_url=base + "/v1", api_key="x", max_retries=0)
        for q in QUESTIONS:
            c.chat.completions.create(model="any", messages=[
                {"role": "system", "content": q * 3}, {"role": "user", "content": q}],
                max_tokens=4, temperature=0)
        m = srv.metrics()["cache"]
        assert m["bytes"] <= m["max_bytes"] == 1 << 20
        assert m["evictions"] > 0 and m["entries"] >= 1


def test_serve_command_help_and_ctrl_c(tmp_path):
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    h = subprocess.run([sys.executable, "-m", "edgenano", "serve", "--help"],
                       capture_output=True, text=True, timeout=60, env=env)
    assert h.returncode == 0 and "--cache-mb" in h.stdout and "--api-key" in h.stdout
    port = free_port()
    p = subprocess.Popen([sys.executable, "-m", "edgenano", "serve", "--port", str(port),
                          "--parallel", "2", "-t", "2"], stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT, text=True, env=env)
    try:
        base = f"http://127.0.0.1:{port}"

        def up():
            try:
                return httpx.get(base + "/health", timeout=1).status_code == 200
            except httpx.HTTPError:
                return False

        assert _wait(up, 60)
        r = httpx.post(base + "/v1/chat/completions",
                       json={"messages": _msg("1+2?"), "max_tokens": 8}, timeout=30)
        assert r.status_code == 200
        # a stream still running when Ctrl-C comes
        s = httpx.Client(timeout=30)
        ctx = s.stream("POST", base + "/v1/chat/completions",
                       json={"messages": _msg("5+5?"), "max_tokens": 900, "stream": True,
                             "logit_bias": {"2": -100, "11": -100, "12": -100}})
        resp = ctx.__enter__()
        assert resp.status_code == 200
        p.send_signal(signal.SIGINT)
        out, _ = p.communicate(timeout=30)
        # uvicorn hands SIGINT back once it has shut down: the shell's Ctrl-C status, 130
        assert p.returncode in (0, 130), out
        assert "Traceback" not in out and "Finished server process" in out, out
        s.close()
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()


def test_long_prefill_is_interleaved_with_decoding(model):
    """A long prompt arriving while another request decodes is fed a chunk per step: the
    decoding stream keeps receiving tokens during that prefill."""
    with running_server(model, parallel=2, prefill_chunk=16) as (base, srv):
        stamps = []
        started = threading.Event()

        def decode():
            body = {"messages": _msg(QUESTIONS[3]), "max_tokens": 200, "stream": True,
                    "temperature": 0, "logit_bias": {str(i): -100 for i in model.stop_ids}}
            with httpx.Client(timeout=60) as c, c.stream(
                    "POST", base + "/v1/chat/completions", json=body) as r:
                for line in r.iter_lines():
                    if line.startswith("data: {"):
                        stamps.append(time.perf_counter())
                        if len(stamps) == 5:
                            started.set()

        t = threading.Thread(target=decode)
        t.start()
        assert started.wait(30)
        chunks0 = srv.scheduler.snapshot()["prefill_chunks"]
        long = " ".join(["seven"] * 150)  # 749 tokens
        t0 = time.perf_counter()
        r = httpx.post(base + "/v1/chat/completions",
                       json={"messages": _msg(long), "max_tokens": 1, "stream": True},
                       timeout=60)
        t1 = time.perf_counter()
        assert r.status_code == 200
        t.join()
        n_prompt = len(model.tokenize(long))
        assert srv.scheduler.snapshot()["prefill_chunks"] - chunks0 >= n_prompt // 16
        during = sum(t0 < s < t1 for s in stamps)
        assert during >= 3, (during, t1 - t0)


TOOLS = [{"type": "function", "function": {
    "name": "add", "description": "Add two integers.",
    "parameters": {"type": "object", "properties": {
        "a": {"type": "integer", "minimum": 0, "maximum": 99},
        "b": {"type": "integer", "minimum": 0, "maximum": 99}},
        "required": ["a", "b"], "additionalProperties": False}}}]


def test_tool_calls_and_reasoning_in_history(model):
    """A forced tool call (constrained decoding, parsed per request) streamed and not, and a
    history carrying reasoning_content / reasoning: as the library gives them."""
    with pytest.warns(UserWarning, match="trained on"):
        roomy = Model(model.path, n_ctx=4096, n_threads=2)  # room for the tool definitions
    msgs = [{"role": "user", "content": "Add 2 and 3. /no_think"}]
    want = roomy.create_chat_completion(msgs, tools=TOOLS, tool_choice="required",
                                        max_tokens=60, temperature=0)["choices"][0]
    with running_server(roomy, parallel=2) as (base, _):
        c = openai.OpenAI(base_url=base + "/v1", api_key="x", max_retries=0)
        got = c.chat.completions.create(model="m", messages=msgs, tools=TOOLS,
                                        tool_choice="required", max_tokens=60, temperature=0)
        assert got.choices[0].finish_reason == "tool_calls" == want["finish_reason"]
        call = got.choices[0].message.tool_calls[0].function
        assert (call.name, json.loads(call.arguments)) == (
            want["message"]["tool_calls"][0]["function"]["name"],
            json.loads(want["message"]["tool_calls"][0]["function"]["arguments"]))
        calls, finish = [], None
        for ch in c.chat.completions.create(model="m", messages=msgs, tools=TOOLS, stream=True,
                                            tool_choice="required", max_tokens=60,
                                            temperature=0):
            for x in ch.choices:
                calls += x.delta.tool_calls or []
                finish = x.finish_reason or finish
        assert finish == "tool_calls" and calls[0].function.name == call.name
        history = [{"role": "user", "content": "What is 2+2?"},
                   {"role": "assistant", "content": "4", "reasoning_content": "2+2=4"},
                   {"role": "user", "content": "And 3+3?"},
                   {"role": "assistant", "content": "6", "reasoning": "3+3=6"},
                   {"role": "user", "content": "And 4+4?"}]
        lib = roomy.create_chat_completion(history, temperature=0, max_tokens=40)
        r = c.chat.completions.create(model="m", messages=history, temperature=0,
                                      max_tokens=40)
        assert r.choices[0].message.content == lib["choices"][0]["message"]["content"]
        assert r.choices[0].message.reasoning_content == \
            lib["choices"][0]["message"]["reasoning_content"]
