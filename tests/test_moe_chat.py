"""The rest of edgenano on a tiny random MoE model (nemotron_h_moe; mechanics only, SPEC 1.4 and
2): chat sessions and their snapshots, /think and the budget, save/load on each engine, the
OpenAI-shaped completion, and the same API over llama.cpp."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import nmse
from tolerances import NMSE_MOE_REFERENCE_VS_LLAMACPP, NMSE_SESSION_VS_FRESH

from edgenano.model import Model


@pytest.fixture(scope="module")
def path(tiny_checkpoint, tmp_path_factory):
    from edgenano.convert import convert_checkpoint

    out = tmp_path_factory.mktemp("gguf") / "moe.gguf"
    return convert_checkpoint(tiny_checkpoint("moe"), out, "f32")


@pytest.fixture(scope="module")
def model(path):
    return Model(path, backend="reference", n_ctx=4096)


def test_session_equals_fresh_prefill_and_think_switches(model):
    s = model.chat(system="be brief", temperature=0.0, thinking_budget=4, grace=2)
    for text in ["first question", "second /no_think", "third /think"]:
        r = s.send(text, max_tokens=10)
    assert s.thinking and r.usage["reasoning_tokens"] == 6  # budget 4 + grace 2
    nxt = s.messages + [{"role": "user", "content": "next"}]
    _, ids, _ = s._render(nxt, s.thinking)
    assert ids == model.apply_chat_template(nxt, enable_thinking=s.thinking, tokenize=True)
    state = s._snap.state.copy()
    assert ids[: len(s._snap.tokens)] == s._snap.tokens
    got = model.eval(state, ids[len(s._snap.tokens):])
    assert nmse(got, model.eval(model.new_state(), ids)) <= NMSE_SESSION_VS_FRESH


def test_budget_zero_is_no_think(model):
    r = model.chat(thinking_budget=0, temperature=0.0).send("hi", max_tokens=4)
    assert r.reasoning is None and r.usage["reasoning_tokens"] == 0


def test_chat_completion(model):
    msgs = [{"role": "user", "content": "hi"}]
    out = model.create_chat_completion(msgs, max_tokens=6, temperature=0.0, thinking_budget=2)
    assert out["object"] == "chat.completion" and out["usage"]["completion_tokens"] == 6
    assert set(out["choices"][0]["message"]) >= {"role", "content", "reasoning_content"}


@pytest.mark.parametrize("backend", ["native", "llama.cpp"])
def test_save_load_and_same_answers(path, model, tmp_path, backend):
    """Saved and loaded on the native engine or llama.cpp, a MoE chat continues identically;
    both engines' logits match the reference's."""
    if backend == "llama.cpp":
        pytest.importorskip("llama_cpp")
    from edgenano.session import ChatSession

    m = Model(path, backend=backend, n_ctx=512, n_threads=2)
    ids = model.tokenize("the same text on every engine")
    assert nmse(m.eval(m.new_state(), ids), model.eval(model.new_state(), ids)) \
        <= NMSE_MOE_REFERENCE_VS_LLAMACPP
    s = m.chat(system="sys", thinking=False, temperature=0.0)
    s.send("remember this", max_tokens=6)
    f = tmp_path / "chat.state.gguf"
    s.save(f)
    loaded = ChatSession.load(f, m)
    assert loaded.messages == s.messages
    assert s.send("and now", max_tokens=8).text == loaded.send("and now", max_tokens=8).text
    st = m.new_state()
    m.eval(st, ids[:4])
    cp = st.copy()
    assert np.array_equal(m.eval(st, ids[4:]), m.eval(cp, ids[4:]))
