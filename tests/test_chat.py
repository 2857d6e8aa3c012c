"""Chat format pieces: the /think switch, template rendering vs transformers, the thinking-budget
rule on a scripted model, reply parsing and sampling filters."""

from __future__ import annotations

import numpy as np
import pytest

from edgenano import chat
from edgenano.generation import Outcome, generate_steps
from edgenano.sampling import SamplingParams, filter_logits, make_sampler, repeat_penalty


@pytest.mark.parametrize("text,expect", [
    ("solve this /think", (True, "solve this")),
    ("/no_think quick", (False, "quick")),
    ("/think then /no_think", (False, "then")),
    ("the tag </think> is not a switch", (None, "the tag </think> is not a switch")),
    ("/thinking about it", (None, "/thinking about it")),
    ("see docs/think and a/no_think", (None, "see docs/think and a/no_think")),
    ("plain", (None, "plain")),
])
def test_thinking_switch(text, expect):
    assert chat.thinking_switch(text) == expect


def test_requested_thinking_precedence():
    msgs = [{"role": "system", "content": "be brief /no_think"},
            {"role": "user", "content": "now /think please"}]
    assert chat.requested_thinking(msgs, explicit=False) is True  # the last user message wins
    earlier = [{"role": "user", "content": "a /no_think"}, {"role": "assistant", "content": "x"},
               {"role": "user", "content": "b"}]
    assert chat.requested_thinking(earlier) is False  # else the last switch earlier
    assert chat.requested_thinking(earlier, explicit=True) is True  # unless asked explicitly
    assert chat.requested_thinking([{"role": "user", "content": "x"}], default=False) is False
    assert chat.requested_thinking([{"role": "user", "content": "</think> /thinking"}]) is True
    assert chat.strip_switches(msgs)[1]["content"] == "now please"


def test_normalize_messages():
    msgs = chat.normalize_messages([
        {"role": "developer", "content": [{"type": "text", "text": "be "}, {"type": "text",
                                                                             "text": "brief"}]},
        {"role": "assistant", "content": None, "reasoning": "r", "tool_calls": [
            {"id": "c", "type": "function", "function": {"name": "f", "arguments": '{"a": 1}'}}]}])
    assert msgs[0] == {"role": "system", "content": "be brief"}
    assert msgs[1]["reasoning_content"] == "r" and "reasoning" not in msgs[1]
    assert msgs[1]["tool_calls"][0]["function"]["arguments"] == {"a": 1}
    with pytest.raises(ValueError, match="role 'wizard'"):
        chat.normalize_messages([{"role": "wizard", "content": "x"}])
    with pytest.raises(ValueError, match="non-empty"):
        chat.normalize_messages([])
    with pytest.raises(ValueError, match="image_url"):
        chat.normalize_messages([{"role": "user", "content": [{"type": "image_url"}]}])


def test_render_matches_transformers(tiny_checkpoint):
    from transformers import AutoTokenizer

    from edgenano.models import chat_template

    tok = AutoTokenizer.from_pretrained(tiny_checkpoint("mix"))
    tools = [{"type": "function", "function": {"name": "add", "parameters": {}}}]
    convs = [
        [{"role": "user", "content": "hi"}],
        [{"role": "system", "content": "S"}, {"role": "user", "content": "a"},
         {"role": "assistant", "content": "<think>r</think>\n\nans"},
         {"role": "user", "content": "b"}],
        [{"role": "user", "content": "call"},
         {"role": "assistant", "content": "", "tool_calls": [
             {"type": "function", "function": {"name": "add", "arguments": {"a": 1}}}]},
         {"role": "tool", "content": "{\"sum\": 3}"}],
    ]
    for msgs in convs:
        for think in (True, False):
            ours = chat.render(chat_template(), msgs, enable_thinking=think, tools=tools)
            ref = tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True,
                                          enable_thinking=think, tools=tools)
            assert ours == ref
            assert ours.endswith("<think>\n" if think else "<think></think>")
    # history drops the reasoning of past turns
    assert "r</think>" not in chat.render(chat_template(), convs[1])


class _Tok:
    """A character-level tokenizer: token i is chr(i)."""

    eos_id = 0

    def encode(self, text, special=True, add_bos=False):
        return [ord(c) for c in text]

    def token_bytes(self, t):
        return chr(t).encode()


class _Scripted:
    """A model that always predicts the next character of `script` (then eos), whatever was fed:
    lets the budget rule be tested exactly."""

    def __init__(self, script: str):
        self.script, self.tokenizer, self.pos = script, _Tok(), 0

    def eval(self, state, ids):
        logits = np.zeros(256, dtype=np.float32)
        nxt = ord(self.script[self.pos]) if self.pos < len(self.script) else 0
        logits[nxt] = 1.0
        self.pos += 1
        return logits


def _run(script: str, budget: int, grace: int, max_tokens: int = 200):
    m = _Scripted(script)
    out = Outcome()
    rule = chat.BudgetRule(budget, grace)
    steps = list(generate_steps(m, None, m.eval(None, []), max_tokens=max_tokens, stop_ids=[0],
                                thinking=True, budget=rule, outcome=out))
    return "".join(s.text for s in steps), steps, out


def test_budget_closes_at_next_newline():
    text, steps, out = _run("abcdef\nghij\nklm", budget=3, grace=50, max_tokens=20)
    # 3 reasoning tokens reached at 'c'; the next newline ends the trace, then the forced close
    assert text.startswith("abcdef\n</think>\n\n")
    assert out.budget_forced and out.reasoning_tokens == 7
    assert all(s.forced for s in steps[7:7 + len("</think>\n\n")])


def test_budget_grace_cut_mid_line():
    text, _, out = _run("abcdefghijklmnop", budget=4, grace=3, max_tokens=20)
    assert text.startswith("abcdefg.\n</think>\n\n")
    assert out.reasoning_tokens == 7


def test_budget_inactive_when_model_closes_itself():
    text, _, out = _run("ab</think>\n\nanswer\nmore text", budget=12, grace=0, max_tokens=40)
    assert text == "ab</think>\n\nanswer\nmore text" and not out.budget_forced


def test_unlimited_budget():
    text, _, out = _run("x\n" * 20, budget=-1, grace=0)
    assert "</think>" not in text and out.finish_reason == "stop"


def test_split_reasoning_and_tool_calls():
    assert chat.split_reasoning("r1\n</think>\n\nThe answer.", True) == ("r1", "The answer.")
    assert chat.split_reasoning("unfinished", True) == ("unfinished", "")
    assert chat.split_reasoning(" direct ", False) == (None, "direct")
    # a prompt that did not open reasoning, answered by a model that opens it itself
    assert chat.split_reasoning("<think>\nr</think>\n\nA", False) == ("r", "A")
    text, calls = chat.parse_tool_calls(
        'ok <TOOLCALL>[{"name": "add", "arguments": {"a": 1}}]</TOOLCALL>')
    assert text == "ok" and calls[0]["function"] == {"name": "add", "arguments": '{"a": 1}'}
    bad = "<TOOLCALL>[not json</TOOLCALL>"
    assert chat.parse_tool_calls(bad) == (bad, [])
    xml = ("<tool_call>\n<function=add>\n<parameter=a>\n1\n</parameter>\n<parameter=s>\ntwo "
           "words\n</parameter>\n</function>\n</tool_call>")
    text, calls = chat.parse_tool_calls("ok " + xml)
    assert text == "ok" and calls[0]["function"] == {"name": "add",
                                                     "arguments": '{"a": 1, "s": "two words"}'}


def test_sampling_filters():
    logits = np.log(np.array([0.5, 0.3, 0.15, 0.05]))
    assert np.isinf(filter_logits(logits, 2, 1.0, 0.0)[2:]).all()
    kept = ~np.isinf(filter_logits(logits, 0, 0.75, 0.0))
    assert kept.tolist() == [True, True, False, False]
    kept = ~np.isinf(filter_logits(logits, 0, 1.0, 0.25))
    assert kept.tolist() == [True, True, True, False]
    assert make_sampler(SamplingParams())(logits) == 0
    s1 = make_sampler(SamplingParams(temperature=1.0, seed=3))
    s2 = make_sampler(SamplingParams(temperature=1.0, seed=3))
    assert [s1(logits) for _ in range(20)] == [s2(logits) for _ in range(20)]
    pen = repeat_penalty(2.0)([0, 3], np.array([2.0, 1.0, 1.0, -1.0]))
    assert pen.tolist() == [1.0, 1.0, 1.0, -2.0]
