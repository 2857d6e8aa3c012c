"""`edgenano serve` under load on loopback: N clients x M requests at once, mixed (chat streamed
and not, plain completions, multi-turn continuations, streams dropped midway, over-long prompts).
Nothing fails beyond the expected 400s, no reply is lost or mixed up (at temperature 0 each equals
the same request run alone on the model), and the cache stays within its bound. The default run
is small; `-m slow` runs the larger one."""

from __future__ import annotations

import random
import threading
import time
from collections import Counter

import pytest

pytest.importorskip("starlette")
pytest.importorskip("uvicorn")
httpx = pytest.importorskip("httpx")
openai = pytest.importorskip("openai")

from edgenano import Model  # noqa: E402

from .server_util import running_server  # noqa: E402

QUESTIONS = [f"What is {a}+{b}?" for a, b in
             [(12, 34), (205, 17), (3, 4), (99, 1), (640, 360), (7, 8), (1234, 4321), (55, 45)]]
MAX_TOKENS = 96
LONG = " ".join(["seven"] * 1500)  # past the tiny reasoner's 1024-token context


def _rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def _alone(model, messages):
    """The reply of a request run alone on the model (library call, no server)."""
    r = model.create_chat_completion(messages, temperature=0, max_tokens=MAX_TOKENS)
    m = r["choices"][0]["message"]
    return m["content"], m["reasoning_content"]


def _load(model, n_clients: int, n_requests: int, cache_mb: float, seed: int = 0):
    rng = random.Random(seed)
    # every conversation a client may send, and what it must get back
    convs = [[{"role": "user", "content": q}] for q in QUESTIONS]
    for q, q2 in zip(QUESTIONS, QUESTIONS[1:] + QUESTIONS[:1]):
        first = _alone(model, [{"role": "user", "content": q}])
        convs.append([{"role": "user", "content": q},
                      {"role": "assistant", "content": first[0]},
                      {"role": "user", "content": q2}])
    want = {i: _alone(model, c) for i, c in enumerate(convs)}
    plans = [[rng.choice(["chat", "chat", "stream", "stream", "drop", "long", "text"])
              for _ in range(n_requests)] for _ in range(n_clients)]
    outcomes: Counter = Counter()
    problems: list[str] = []
    latencies: list[float] = []
    lock = threading.Lock()

    def note(kind, ok, why=""):
        with lock:
            outcomes[kind] += 1
            if not ok:
                problems.append(f"{kind}: {why}")

    rss0 = _rss_mb()
    with running_server(model, parallel=4, max_queue=64, cache_mb=cache_mb) as (base, srv):
        def client(ci: int):
            c = openai.OpenAI(base_url=base + "/v1", api_key="x", max_retries=0, timeout=120)
            r2 = random.Random(seed * 1000 + ci)
            for kind in plans[ci]:
                i = r2.randrange(len(convs))
                t0 = time.perf_counter()
                try:
                    if kind == "chat":
                        r = c.chat.completions.create(model="m", messages=convs[i],
                                                      temperature=0, max_tokens=MAX_TOKENS)
                        m = r.choices[0].message
                        got = (m.content, m.reasoning_content)
                        note(kind, got == want[i], f"conv {i}: {got!r} != {want[i]!r}")
                    elif kind == "stream":
                        content, reasoning = "", ""
                        for ch in c.chat.completions.create(model="m", messages=convs[i],
                                                            temperature=0, stream=True,
                                                            max_tokens=MAX_TOKENS):
                            for x in ch.choices:
                                content += x.delta.content or ""
                                reasoning += getattr(x.delta, "reasoning_content", None) or ""
                        got = (content.strip(), reasoning.strip() or None)
                        exp = (want[i][0], (want[i][1] or "").strip() or None)
                        note(kind, got == exp, f"conv {i}: {got!r} != {exp!r}")
                    elif kind == "drop":  # read a few events, then leave
                        with httpx.Client(timeout=60) as h, h.stream(
                                "POST", base + "/v1/chat/completions",
                                json={"messages": convs[i], "stream": True,
                                      "max_tokens": MAX_TOKENS, "temperature": 0}) as resp:
                            n = 0
                            for line in resp.iter_lines():
                                n += line.startswith("data: {")
                                if n >= 3:
                                    break
                            note(kind, resp.status_code == 200, f"status {resp.status_code}")
                    elif kind == "long":
                        try:
                            c.chat.completions.create(model="m", max_tokens=4,
                                                      messages=[{"role": "user",
                                                                 "content": LONG}])
                            note(kind, False, "an over-long prompt was accepted")
                        except openai.BadRequestError as e:
                            note(kind, e.status_code == 400, str(e))
                    else:
                        r = c.completions.create(model="m", prompt=QUESTIONS[i % 8],
                                                 temperature=0, max_tokens=12)
                        note(kind, bool(r.choices) and r.usage.completion_tokens > 0, str(r))
                except Exception as e:  # noqa: BLE001 - every failure is a finding
                    note(kind, False, f"{type(e).__name__}: {e}")
                with lock:
                    latencies.append(time.perf_counter() - t0)

        t0 = time.perf_counter()
        threads = [threading.Thread(target=client, args=(ci,)) for ci in range(n_clients)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        wall = time.perf_counter() - t0
        deadline = time.monotonic() + 10
        while (srv.admitted or srv.scheduler.active) and time.monotonic() < deadline:
            time.sleep(0.05)
        metrics = srv.metrics()
    rss_growth = _rss_mb() - rss0
    return dict(outcomes=outcomes, problems=problems, metrics=metrics, wall=wall,
                latencies=sorted(latencies), rss_growth_mb=rss_growth)


def _check(res, cache_mb: float):
    assert not res["problems"], res["problems"][:5]
    m = res["metrics"]
    assert m["requests"]["errors_5xx"] == 0
    assert m["requests"]["errors_4xx"] == res["outcomes"]["long"]  # only the expected ones
    assert m["admitted"] == 0 and m["scheduler"]["active"] == 0  # nothing left running
    assert m["cache"]["bytes"] <= m["cache"]["max_bytes"] == int(cache_mb * 1024 * 1024)
    assert m["scheduler"]["max_batch"] >= 2  # requests did share decode steps
    # the process grew by no more than the cache's bound plus what requests hold in flight
    assert res["rss_growth_mb"] <= cache_mb + 128, res["rss_growth_mb"]


@pytest.fixture(scope="module")
def model():
    return Model(n_threads=2)


def test_load_small(model):
    res = _load(model, n_clients=4, n_requests=5, cache_mb=4)
    _check(res, 4)


@pytest.mark.slow
def test_load_large(model):
    res = _load(model, n_clients=8, n_requests=25, cache_mb=8, seed=1)
    _check(res, 8)
    lat = res["latencies"]
    print(f"\nload: {sum(res['outcomes'].values())} requests {dict(res['outcomes'])} in "
          f"{res['wall']:.1f} s; latency p50 {lat[len(lat) // 2]:.2f} s, p95 "
          f"{lat[int(len(lat) * 0.95)]:.2f} s; mean batch "
          f"{res['metrics']['scheduler']['mean_batch']:.2f}; cache {res['metrics']['cache']}; "
          f"RSS growth {res['rss_growth_mb']:.0f} MB")
