"""Thinking on and off on every template a user can bring: the template published with 9B-v2
(read from llama-cpp-python's sdist at test time), variants of it with the other published
revisions' newlines, Nemotron 3 Nano's ChatML one and edgenano's own. Every way of choosing the
mode must give a prompt that really opens or closes `<think>`, the reply is split by what the
prompt opened, and sessions keep their invariants on each."""

from __future__ import annotations

import pytest
from chat_templates import VARIANTS, variant
from conftest import nmse
from tolerances import NMSE_SESSION_VS_FRESH

from edgenano.generation import Outcome
from edgenano.model import Model
from edgenano.template import opens_reasoning, probe


@pytest.fixture(scope="module")
def builtin():
    return Model(n_ctx=1024, n_threads=2)


@pytest.fixture(scope="module", params=VARIANTS)
def model(request, builtin, published_template):
    tmpl = variant(request.param, builtin.chat_template, published_template)
    return Model(builtin.path, n_ctx=1024, n_threads=2, chat_template=tmpl)


def test_probe_finds_each_behaviour(builtin, published_template):
    v2 = probe(published_template("nano-v2"))
    assert not v2.reads_enable_thinking and v2.reads_switches and v2.strips_switches
    assert v2.on_prompt == "<SPECIAL_11>Assistant\n<think>\n"
    assert v2.off_prompt == "<SPECIAL_11>Assistant\n<think></think>"
    assert v2.continues_final
    n3 = probe(published_template("nemotron3-nano"))
    assert n3.reads_enable_thinking and not n3.reads_switches and not n3.continues_final
    assert n3.off_prompt == "<|im_start|>assistant\n<think></think>"
    own = probe(builtin.chat_template)
    assert own.reads_enable_thinking and own.reads_switches and own.strips_switches


Q = "What is 12 + 5?"
# (label, session settings, send() arguments, the message, reasoning wanted)
SESSION_WAYS = [
    ("on by default", {}, {}, Q, True),
    ("off by session", {"thinking": False}, {}, Q, False),
    ("off by message", {}, {}, Q + " /no_think", False),
    ("off by message first", {}, {}, "/no_think " + Q, False),
    ("on by message over session", {"thinking": False}, {}, Q + " /think", True),
    ("off by call", {}, {"thinking": False}, Q, False),
    ("budget 0", {"thinking_budget": 0}, {}, Q, False),
    ("off, </think> in the text", {"thinking": False}, {}, "What does </think> mean?", False),
    ("off, /thinking in the text", {"thinking": False}, {}, "I am /thinking hard", False),
    ("on, /no_thinking is no switch", {}, {}, "a /no_thinking b", True),
]


@pytest.mark.parametrize("way", SESSION_WAYS, ids=[w[0] for w in SESSION_WAYS])
def test_every_way_opens_or_closes_reasoning(model, way):
    _, settings, call, text, want = way
    prof = probe(model.chat_template)
    s = model.chat(temperature=0.0, **settings)
    reply = s.send(text, max_tokens=4, **call)
    assert opens_reasoning(s.last_prompt) is want
    assert s.last_prompt.endswith(prof.on_prompt if want else prof.off_prompt)
    assert (reply.reasoning is not None) is want  # split by what the prompt opened
    if not want:
        assert "</think>" not in reply.content


COMPLETION_WAYS = [
    ("on by default", {}, Q, True),
    ("enable_thinking False", {"enable_thinking": False}, Q, False),
    ("chat_template_kwargs", {"chat_template_kwargs": {"enable_thinking": False}}, Q, False),
    ("off by message", {}, Q + " /no_think", False),
    ("message wins over enable_thinking", {"enable_thinking": False}, Q + " /think", True),
    ("budget 0", {"thinking_budget": 0}, Q, False),
]


@pytest.mark.parametrize("way", COMPLETION_WAYS, ids=[w[0] for w in COMPLETION_WAYS])
def test_chat_completion_ways(model, way):
    _, kwargs, text, want = way
    msgs = [{"role": "user", "content": text}]
    flag = kwargs.get("enable_thinking",
                      (kwargs.get("chat_template_kwargs") or {}).get("enable_thinking"))
    if "thinking_budget" not in kwargs:  # apply_chat_template has no budget
        assert opens_reasoning(model.apply_chat_template(msgs, enable_thinking=flag)) is want
    out = model.create_chat_completion(msgs, max_tokens=4, temperature=0.0, **kwargs)
    msg = out["choices"][0]["message"]
    assert (msg["reasoning_content"] is not None) is want
    assert msg["reasoning"] == msg["reasoning_content"]


def test_earlier_switch_does_not_stick_over_the_session(model):
    """A /no_think in an earlier message is overridden by the session's later choice (the
    published template alone would keep reasoning off for good)."""
    s = model.chat(temperature=0.0)
    s.send(Q + " /no_think", max_tokens=4)
    assert not opens_reasoning(s.last_prompt) and s.thinking is False
    s.thinking = True  # what the chat CLI's /think command does
    r = s.send(Q, max_tokens=4)
    assert opens_reasoning(s.last_prompt) and r.reasoning is not None


def test_session_invariants(model):
    """Per turn: the snapshot the session holds plus the next prompt equals a fresh prefill of
    the rendered history; only the new text is prefilled; the budget cuts the trace."""
    s = model.chat(system="Be brief.", temperature=0.0, thinking_budget=5, grace=2)
    turns = ["What is 21 + 34?", "And 40 - 13? /no_think", "Count the 7s in 7171. /think",
             "Thanks."]
    prev_completion = 0
    for i, text in enumerate(turns):
        out = Outcome()
        r = s.send(text, max_tokens=16, outcome=out)
        if opens_reasoning(s.last_prompt):  # the traces run past 5 tokens: the budget cuts
            assert out.budget_forced and 5 <= out.reasoning_tokens <= 7
            assert r.reasoning is not None and "</think>" not in r.content
        if i:  # the last answer, the end of its turn and the new turn: never the history
            one_turn = len(model.apply_chat_template([{"role": "user", "content": text}],
                                                     tokenize=True))
            assert s.prefill_tokens <= prev_completion + one_turn + 16
        prev_completion = r.usage["completion_tokens"]
        nxt = s.messages + [{"role": "user", "content": "next"}]
        prompt, ids, _ = s._render(nxt, s.thinking)
        assert prompt.text == model.apply_chat_template(nxt, enable_thinking=s.thinking)
        snap = s._snap
        assert ids[: len(snap.tokens)] == snap.tokens
        assert len(snap.tokens) > len(ids) // 2  # the history is not re-fed
        got = model.eval(snap.state.copy(), ids[len(snap.tokens):])
        ref = model.eval(model.new_state(), ids)
        assert nmse(got, ref) <= NMSE_SESSION_VS_FRESH
