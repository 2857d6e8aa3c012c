"""Chat sessions: the state a session reaches by snapshot-and-continue equals a fresh prefill of
the rendered history; prefill cost follows the new text only; snapshot/fork; streaming; the
OpenAI-shaped completion; the llama.cpp backend behind the same API."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import nmse
from tolerances import NMSE_SESSION_VS_FRESH

import edgenano
from edgenano.model import Model


@pytest.fixture(scope="module")
def model(tiny_checkpoint, tmp_path_factory):
    from edgenano.convert import convert_checkpoint

    out = tmp_path_factory.mktemp("gguf") / "mix.gguf"
    convert_checkpoint(tiny_checkpoint("mix"), out, "f32")
    return Model(out, backend="reference", n_ctx=4096)


def test_session_equals_fresh_prefill(model):
    s = model.chat(system="be brief", temperature=0.0, thinking_budget=6, grace=2)
    sizes = []
    for i, text in enumerate(["first question", "second /no_think", "third /think", "fourth"]):
        s.send(text, max_tokens=12)
        sizes.append(s.prefill_tokens)
        if i == 0:
            continue
        # The snapshot the session holds + the next generation prompt == rendering from scratch.
        nxt = s.messages + [{"role": "user", "content": "next"}]
        prompt, ids, _ = s._render(nxt, s.thinking)
        assert ids == model.apply_chat_template(nxt, enable_thinking=s.thinking, tokenize=True)
        state = s._snap.state.copy()
        assert ids[: len(s._snap.tokens)] == s._snap.tokens
        got = model.eval(state, ids[len(s._snap.tokens):])
        ref = model.eval(model.new_state(), ids)
        assert nmse(got, ref) <= NMSE_SESSION_VS_FRESH
    # Only the new text is prefilled: the last answer (<= 12 tokens), the end of turn, the new
    # user turn and the generation prompt; never the history.
    assert max(sizes[1:]) < 12 + 30
    assert sizes[0] >= sizes[1] - 12


def test_prefill_cost_flat_over_twenty_turns(model):
    s = model.chat(thinking=False, temperature=0.0)
    sizes = []
    for i in range(20):
        s.send(f"turn {i}", max_tokens=3)
        sizes.append(s.prefill_tokens)
    history = len(model.apply_chat_template(s.messages, tokenize=True))
    assert history > 10 * max(sizes[1:])
    assert max(sizes[1:]) - min(sizes[1:]) <= 6  # the same new text each turn, whatever the turn


def test_snapshot_restore_and_fork_are_identical(model):
    s = model.chat(thinking=False, temperature=0.0)
    s.send("hello", max_tokens=5)
    snap = s.snapshot()
    a = s.send("continue", max_tokens=8).text
    s.restore(snap)
    b = s.send("continue", max_tokens=8).text
    f = s.fork()
    c1, c2 = s.send("more", max_tokens=6).text, f.send("more", max_tokens=6).text
    assert a == b and c1 == c2


def test_streaming_matches_blocking(model):
    s1 = model.chat(thinking=True, temperature=0.0, thinking_budget=4, grace=2)
    r = s1.send("stream me", max_tokens=16)
    s2 = model.chat(thinking=True, temperature=0.0, thinking_budget=4, grace=2)
    events = list(s2.send("stream me", max_tokens=16, stream=True))
    reasoning = "".join(e.text for e in events if e.reasoning)
    content = "".join(e.text for e in events if not e.reasoning)
    assert reasoning.strip() == r.reasoning and content.strip() == r.content
    assert "</think>" not in reasoning + content
    assert r.usage["reasoning_tokens"] == 6 and r.usage["completion_tokens"] == 16


def test_budget_zero_is_no_think(model):
    s = model.chat(thinking_budget=0, temperature=0.0)
    r = s.send("hi", max_tokens=4)
    assert r.reasoning is None and r.usage["reasoning_tokens"] == 0
    assert s.last_prompt.endswith("<think></think>")


def test_chat_completion_shape(model):
    msgs = [{"role": "user", "content": "hi"}]
    out = model.create_chat_completion(msgs, max_tokens=6, temperature=0.0, thinking_budget=2)
    assert out["object"] == "chat.completion"
    msg = out["choices"][0]["message"]
    assert set(msg) >= {"role", "content", "reasoning_content"}
    assert out["usage"]["completion_tokens"] == 6
    chunks = list(model.create_chat_completion(msgs, max_tokens=6, temperature=0.0,
                                               thinking_budget=2, stream=True))
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant"}
    assert chunks[-1]["choices"][0]["finish_reason"] == "length"
    streamed = "".join(c["choices"][0]["delta"].get("reasoning_content", "") for c in chunks)
    assert streamed.strip() == msg["reasoning_content"]


def test_generate_and_context_overflow(model):
    text = model.generate("Hello", max_tokens=5)
    assert text == "".join(model.generate("Hello", max_tokens=5, stream=True))
    stop = text[2:4]  # a stop string inside the text: cut before it, streamed or not
    cut = text[: text.index(stop)]
    assert model.generate("Hello", max_tokens=5, stop=[stop]) == cut
    assert "".join(model.generate("Hello", max_tokens=5, stop=[stop], stream=True)) == cut
    small = Model(model.path, backend="reference", n_ctx=8)
    with pytest.raises(ValueError, match="n_ctx=8"):
        small.eval(small.new_state(), list(range(20, 30)))


def test_llamacpp_backend_same_api(model):
    pytest.importorskip("llama_cpp")
    lm = Model(model.path, backend="llama.cpp", n_ctx=512, n_threads=2)
    ids = model.tokenize("the same text on two engines")
    a = lm.eval(lm.new_state(), ids)
    b = model.eval(model.new_state(), ids)
    assert nmse(a, b) <= 1e-6
    st = lm.new_state()
    lm.eval(st, ids[:4])
    cp = st.copy()
    assert np.array_equal(lm.eval(st, ids[4:]), lm.eval(cp, ids[4:]))


def test_save_load_roundtrip_and_refusals(model, tmp_path, tiny_checkpoint):
    from edgenano.convert import convert_checkpoint
    from edgenano.session import ChatSession
    from edgenano.state_file import StateFileError

    s = model.chat(system="sys", thinking=False, temperature=0.0)
    s.send("remember this", max_tokens=6)
    path = tmp_path / "chat.state.gguf"
    s.save(path)
    loaded = ChatSession.load(path, model)
    assert loaded.messages == s.messages and loaded.thinking is False
    assert s.send("and now", max_tokens=8).text == loaded.send("and now", max_tokens=8).text
    assert loaded.prefill_tokens == s.prefill_tokens  # continued from the saved state

    other_path = tmp_path / "other.gguf"
    convert_checkpoint(tiny_checkpoint("mix", seed=1), other_path, "f32")
    other = Model(other_path, backend="reference", n_ctx=512)
    with pytest.raises(StateFileError, match="different model"):
        ChatSession.load(path, other)
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(path.read_bytes()[:100])
    with pytest.raises(StateFileError):
        ChatSession.load(bad, model)
    with pytest.raises(StateFileError, match="not an edgenano state file"):
        ChatSession.load(model.path, model)


@pytest.mark.parametrize("backend", ["native", "llama.cpp"])
def test_save_load_on_other_backends(model, tmp_path, backend):
    """A chat saved on the native engine (or llama.cpp) resumes there, identically; loading it
    into a model opened with another backend is refused."""
    from edgenano.session import ChatSession
    from edgenano.state_file import StateFileError

    if backend == "llama.cpp":
        pytest.importorskip("llama_cpp")
    m = Model(model.path, backend=backend, n_ctx=1024, n_threads=2)
    s = m.chat(system="sys", thinking=False, temperature=0.0)
    s.send("remember this", max_tokens=6)
    s.save(tmp_path / "chat.gguf")
    loaded = ChatSession.load(tmp_path / "chat.gguf", m)
    assert s.send("and now", max_tokens=8).text == loaded.send("and now", max_tokens=8).text
    assert loaded.prefill_tokens == s.prefill_tokens
    with pytest.raises(StateFileError, match=f"backend={backend!r}"):
        ChatSession.load(tmp_path / "chat.gguf", model)  # the reference backend



@pytest.mark.parametrize("backend", ["reference", "native", "llama.cpp"])
def test_concurrent_sessions_match_solo(model, backend):
    """Several sessions on one model from several threads give what each gives alone."""
    from concurrent.futures import ThreadPoolExecutor

    if backend == "llama.cpp":
        pytest.importorskip("llama_cpp")
    m = Model(model.path, backend=backend, n_ctx=1024, n_threads=2)
    prompts = [f"question number {i}" for i in range(4)]

    def run(p):
        s = m.chat(thinking_budget=3, grace=1, temperature=0.7, seed=5)
        return [s.send(p, max_tokens=10).text, s.send("and then", max_tokens=6).text]

    solo = [run(p) for p in prompts]
    with ThreadPoolExecutor(4) as ex:
        together = list(ex.map(run, prompts))
    assert together == solo


def test_unfinished_turn_leaves_the_session_as_before(model):
    """A stream closed early (Ctrl-C in the CLI) or an error inside the turn (a context overflow)
    leaves messages, snapshot and mode as they were; the next turn is what it would have been."""
    s = model.chat(temperature=0.0)
    s.send("first", max_tokens=6)
    before = (list(s.messages), s._snap, s.thinking)
    ref = s.fork().send("second", max_tokens=6).text
    gen = s.send("interrupted /no_think", stream=True, max_tokens=20)
    next(gen)
    gen.close()
    assert (s.messages, s._snap, s.thinking) == before
    small = Model(model.path, backend="reference", n_ctx=40)
    t = small.chat(temperature=0.0)
    with pytest.raises(edgenano.ContextOverflow):
        t.send("x " * 60, max_tokens=4)
    assert t.messages == [] and t._snap is None
    assert s.send("second", max_tokens=6).text == ref
