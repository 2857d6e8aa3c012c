"""The built-in tiny reasoner through the user's API: `Model()` with no path converts the shipped
checkpoint on first use, reasons in the 9B-v2 format, obeys /no_think, and a thinking budget cuts
the trace where SPEC section 2's rule says with the answer following the forced close."""

from __future__ import annotations

import re

import pytest

from edgenano import Model
from edgenano.reasoner import tasks

ANSWER = re.compile(r"The answer is [^\n]+\.")


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    pytest.importorskip("edgenano._C")
    from edgenano import models

    if not (models.default_checkpoint_dir() / "model.safetensors").is_file():
        pytest.fail("the built-in checkpoint edgenano/assets/tiny-reasoner is missing")
    cache = tmp_path_factory.mktemp("cache")
    mp = pytest.MonkeyPatch()
    mp.setenv("EDGENANO_CACHE", str(cache))
    try:
        m = Model(n_threads=2, n_ctx=1024)  # no path: the built-in model, converted into cache
    finally:
        mp.undo()
    assert m.path.startswith(str(cache))
    return m


def problems(kind: str, n: int = 3) -> list[tasks.Problem]:
    return [p for p in tasks.heldout(n) if p.kind == kind]


def test_reasons_then_answers(model):
    """A column-by-column trace, then the answer it reached (right or wrong: accuracy is
    measured by test_reasoner and `edgenano eval`; here the format and its consistency)."""
    for p in problems("add") + problems("sub"):
        reply = model.chat(temperature=0.0).send(p.question)
        assert reply.reasoning.startswith("ones: "), reply.text
        result = reply.reasoning.rstrip("\n").rsplit(" -> ", 1)[1]
        assert reply.content == tasks.answer_line(str(int(result))), reply.text
        assert reply.finish_reason == "stop"
        assert reply.usage["reasoning_tokens"] > 0


def test_no_think_answers_directly(model):
    p = problems("count")[0]
    for reply in (model.chat(temperature=0.0).send(p.question + " /no_think"),
                  model.chat(thinking=False, temperature=0.0).send(p.question)):
        assert not reply.reasoning and reply.usage["reasoning_tokens"] == 0
        assert ANSWER.fullmatch(reply.content), reply.text


@pytest.mark.parametrize("budget", [8, 20])
def test_budget_cuts_at_the_next_newline_and_the_answer_follows(model, budget):
    p = max(problems("add"), key=lambda q: len(q.trace))  # a long trace, several lines
    chat = model.chat(temperature=0.0, thinking_budget=budget)
    reply = chat.send(p.question)
    free = model.chat(temperature=0.0).send(p.question)
    n_free = free.usage["reasoning_tokens"]
    assert n_free > budget + 10  # the unbudgeted trace is much longer: a cut is visible
    n = reply.usage["reasoning_tokens"]
    # The rule: after `budget` tokens, close at the next newline. The trace so far is the
    # unbudgeted trace's prefix (greedy), ending at the first newline after `budget` tokens.
    kept = reply.reasoning.rstrip("\n")
    assert free.reasoning.startswith(kept)
    ids = model.tokenize(free.reasoning, special=False)
    cut = next(i for i in range(budget - 1, len(ids)) if "\n" in model.detokenize([ids[i]]))
    assert n == cut + 1, (n, budget, reply.text)
    assert ANSWER.fullmatch(reply.content), reply.text
    # ...and the conversation goes on from there, reasoning dropped from the history.
    nxt = chat.send(problems("add")[0].question)
    assert ANSWER.fullmatch(nxt.content)


def test_reply_ending_inside_reasoning_costs_one_turn(model):
    """A reply that ends inside its reasoning (here cut by max_tokens; a model can also end its
    turn before </think>) is rendered by the history differently from what was fed, so the session
    restarts from the snapshot the turn began at (measured 47 tokens), never from scratch (89)."""
    chat = model.chat(temperature=0.0)
    sizes, replies = [], []
    for q, cap in [("What is 34 + 52?", 1024), ("What is 58 - 27? /no_think", 1024),
                   ("What is 251 + 318? /think", 6), ("What is 64 + 29?", 1024)]:
        replies.append(chat.send(q, max_tokens=cap))
        sizes.append(chat.prefill_tokens)
    assert replies[2].finish_reason == "length" and replies[2].reasoning and not replies[2].content
    assert sizes[3] < 60 < len(chat._snap.tokens)
