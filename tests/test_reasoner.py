"""The tiny reasoner: task generators and checkers, rendered training data, the budget-aware
greedy decoder, and the shipped checkpoint solving held-out problems."""

from __future__ import annotations

import random

import numpy as np
import pytest

from edgenano import chat
from edgenano.reasoner import eval as reval
from edgenano.reasoner import tasks
from tests import tolerances as tol
from train import data

# -- tasks -----------------------------------------------------------------------------------


def test_add_trace_carries_digit_by_digit():
    assert tasks.add_trace(947, 285) == (
        "ones: 7+5+0=12 -> 2\n"
        "tens: 4+8+1=13 -> 32\n"
        "hundreds: 9+2+1=12 -> 232\n"
        "thousands: 0+0+1=1 -> 1232\n")
    assert tasks.add_trace(12, 3004).splitlines()[-1] == "thousands: 0+3+0=3 -> 3016"


def test_sub_trace_borrows_and_answer_drops_leading_zeros():
    assert tasks.sub_trace(634, 285) == (
        "ones: 14-5-0=9 -> 9\n"
        "tens: 13-8-1=4 -> 49\n"
        "hundreds: 6-2-1=3 -> 349\n")
    assert tasks.sub_trace(1000, 999).splitlines()[-1] == "thousands: 1-0-1=0 -> 0001"


def test_count_trace():
    assert tasks.count_trace("3727", "3") == "3=3? yes 1\n7=3? no 1\n2=3? no 1\n7=3? no 1\n"


@pytest.mark.parametrize("kind", tasks.KINDS)
def test_generated_traces_check_out(kind):
    rng = random.Random(5)
    for _ in range(300):
        p = tasks.GENERATORS[kind](rng)
        assert tasks.verify_trace(p), p
        assert tasks.is_correct(p, f"<think>\n{p.trace}</think>\n\n{p.answer_line}\n")


def test_verify_trace_catches_a_wrong_step():
    p = tasks.Problem("add", "What is 19 + 1?", "ones: 9+1+0=11 -> 1\ntens: 1+0+1=2 -> 21\n",
                      "21", ("add", 19, 1))
    assert not tasks.verify_trace(p)
    c = tasks.Problem("count", "Count the digit 3 in 33.", "3=3? yes 1\n3=3? no 1\n", "1",
                      ("count", "33", "3"))
    assert not tasks.verify_trace(c)


def test_extract_answer():
    ex = tasks.extract_answer
    assert ex("<think>\nThe answer is 5.\n</think>\n\nThe answer is 632.\n") == "632"
    assert ex("\n\nThe answer is 7, 19, 31.") == "7, 19, 31"
    assert ex("ones: 1+2+0=3 -> 3\n") is None
    assert ex("The answer is 12.5 maybe") is None
    assert ex("</think>\n\nThe answer is 3.\nThe answer is 4.") == "3"


def test_heldout_is_fixed_and_excluded_from_training():
    a, b = tasks.heldout(20), tasks.heldout(20)
    assert [p.key for p in a] == [p.key for p in b]
    assert [p.kind for p in a[:len(tasks.KINDS)]] == list(tasks.KINDS)
    assert len({p.key for p in a}) == len(a) == 20 * len(tasks.KINDS)
    keys = tasks.heldout_keys()
    assert {p.key for p in a} <= keys
    rng = random.Random(0)
    weights = data.Mix().weights
    assert all(tasks.sample_problem(rng, weights, keys).key not in keys for _ in range(2000))


# -- rendered data ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def codec():
    from tokenizers import Tokenizer

    from edgenano.models import default_checkpoint_dir

    path = default_checkpoint_dir() / "tokenizer.json"
    return data.hf_codec(Tokenizer.from_file(str(path)))


def _samples(pred, n=40, seed=0, mix=None):
    rng, out = random.Random(seed), []
    while len(out) < n:
        s = data.make_sample(rng, mix or data.Mix())
        if pred(s):
            out.append(s)
    return out


def _parts(ex, decode):
    prompt = decode(ex.ids[:ex.n_prompt])
    trained = [t for t, m in zip(ex.ids, ex.mask) if m]
    return prompt, decode(ex.ids[ex.n_prompt:]), decode(trained)


def _decode(codec):
    enc, one = codec
    return lambda ids: "".join(one(i) for i in ids)


def test_think_on_example(codec):
    dec = _decode(codec)
    for s in _samples(lambda s: s.thinking and s.cut_fraction is None):
        ex = data.encode_sample(s, *codec)
        prompt, completion, trained = _parts(ex, dec)
        p = s.problem
        assert prompt.endswith("<SPECIAL_11>Assistant\n<think>\n")
        assert completion == f"{p.trace}</think>\n\n{p.answer_line}\n<SPECIAL_12>"
        assert trained == completion  # loss on exactly the reply
        assert not any(ex.mask[:ex.n_prompt])
        assert codec[0](p.trace + data.CLOSE + p.answer_line + "\n") == \
            ex.ids[ex.n_prompt:-1]


def test_think_off_example(codec):
    dec = _decode(codec)
    for s in _samples(lambda s: not s.thinking):
        prompt, completion, trained = _parts(data.encode_sample(s, *codec), dec)
        assert prompt.endswith("<SPECIAL_11>Assistant\n<think></think>")
        assert completion == trained == f"\n\n{s.problem.answer_line}\n<SPECIAL_12>"


def test_cut_traces_close_with_the_forced_text_untrained(codec):
    dec = _decode(codec)
    mix = data.Mix(p_cut=1.0, p_off=0.0)
    seen = set()
    for s in _samples(lambda s: True, n=60, mix=mix):
        ex = data.encode_sample(s, *codec)
        _, completion, trained = _parts(ex, dec)
        cut_text, answer = completion.split("</think>\n\n")
        mid = cut_text.endswith(".\n")
        seen.add(mid)
        kept = cut_text[:-2] if mid else cut_text
        assert s.problem.trace.startswith(kept) and kept != s.problem.trace
        assert mid != kept.endswith("\n")
        assert answer == f"{s.problem.answer_line}\n<SPECIAL_12>"
        assert trained == kept + answer  # the forced close is not trained on
    assert seen == {True, False}


def test_switches_and_multi_turn_history(codec):
    dec = _decode(codec)
    mix = data.Mix(p_multi=1.0)
    for s in _samples(lambda s: True, n=60, mix=mix):
        ex = data.encode_sample(s, *codec)
        prompt = dec(ex.ids[:ex.n_prompt])
        words = prompt.replace("</think>", "")  # the tag is not the switch
        assert "/think" not in words and "/no_think" not in words
        assert prompt.count("<think>") == 1  # history answers keep no reasoning
        assert prompt.count("<SPECIAL_11>User\n") == 2
        assert prompt.count("<SPECIAL_11>Assistant\n") == 2
        assert chat.requested_thinking(s.messages) == s.thinking
        assert prompt == data.render_prompt(s.messages)


def test_mix_shares():
    ss = _samples(lambda s: True, n=1000, seed=3)
    off = np.mean([not s.thinking for s in ss])
    cut = np.mean([s.cut_fraction is not None for s in ss if s.thinking])
    assert 0.25 < off < 0.35 and 0.15 < cut < 0.3


# -- decoding with a budget, KL ---------------------------------------------------------------


def _scripted(tokens):
    """Logits that make greedy decoding follow `tokens`."""
    it = iter(tokens)

    def nxt():
        v = np.zeros(64)
        v[next(it)] = 1.0
        return v
    return nxt


def test_greedy_decoder_forces_the_close_at_the_next_newline():
    names = {0: "a", 1: "b", 2: "\n", 3: "</think>\n\n", 4: "X", 5: ".\n", 9: "<stop>"}
    enc = {".\n</think>\n\n": [5, 3], "</think>\n\n": [3]}

    def run(script, budget, grace=500):
        dec = reval.GreedyDecoder(True, chat.BudgetRule(budget, grace), encode_plain=enc.get,
                                  piece=names.get, stop_ids={9}, max_new=50)
        logits = _scripted(script)
        while dec.next_token(logits()) is not None:
            pass
        return dec

    # budget 3: a a b | a \n -> close after the newline; forced tokens replace what the model
    # would have said, then the model's own tokens follow.
    d = run([0, 0, 1, 0, 2, 7, 4, 9], 3)
    assert d.tokens == [0, 0, 1, 0, 2, 3, 4] and d.forced
    d = run([0, 1, 0, 0, 0, 7, 7, 4, 9], 2, grace=3)  # no newline within the grace
    assert d.tokens == [0, 1, 0, 0, 0, 5, 3, 4] and d.forced
    d = run([0, 2, 3, 4, 9], 10)  # the model closes itself: the budget stops acting
    assert d.tokens == [0, 2, 3, 4] and not d.forced


def test_mean_kl():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(5, 30))
    assert reval.mean_kl(a, a) == pytest.approx(0.0, abs=1e-12)
    assert reval.mean_kl(a, a + 3.0) == pytest.approx(0.0, abs=1e-12)  # shift invariant
    b = a + rng.normal(size=a.shape) * 0.1
    p = np.exp(a) / np.exp(a).sum(-1, keepdims=True)
    q = np.exp(b) / np.exp(b).sum(-1, keepdims=True)
    assert reval.mean_kl(a, b) == pytest.approx(np.mean((p * np.log(p / q)).sum(-1)))


# -- the shipped checkpoint -------------------------------------------------------------------


@pytest.fixture(scope="module")
def shipped():
    pytest.importorskip("torch")
    from tokenizers import Tokenizer

    from devtools.tiny import load_hf
    from edgenano.models import default_checkpoint_dir

    d = default_checkpoint_dir()
    model, _ = load_hf(d)
    return model, Tokenizer.from_file(str(d / "tokenizer.json"))


def test_shipped_checkpoint_is_a_9b_v2_style_nemotron_h(shipped):
    import json

    from edgenano.models import default_checkpoint_dir

    cfg = json.loads((default_checkpoint_dir() / "config.json").read_text())
    pattern = cfg["hybrid_override_pattern"]
    assert set(pattern) == {"M", "-", "*"} and cfg["n_groups"] > 1
    assert cfg["architectures"] == ["NemotronHForCausalLM"]
    n = sum(p.numel() for p in shipped[0].parameters())
    assert n < 5_000_000


def test_shipped_checkpoint_solves_heldout_problems(shipped):
    model, tok = shipped
    runner = reval.HFRunner(model, tok)
    decode = lambda ids: tok.decode(ids, skip_special_tokens=False)  # noqa: E731
    on, off = (reval.evaluate(runner, 10, [m], decode=decode)[0]
               for m in (reval.Mode("on", True), reval.Mode("off", False)))
    assert on.accuracy >= tol.REASONER_THINK_ON_ACCURACY_FLOOR
    assert on.accuracy - off.accuracy >= tol.REASONER_THINKING_GAIN_FLOOR
    assert on.well_formed == on.total and off.well_formed == off.total
