"""Logits processors (logit_bias, OpenAI penalties), parameter validation and token logprobs."""

import math

import numpy as np
import pytest

from edgenano.sampling import (
    SamplingParams,
    logit_bias,
    make_processors,
    make_sampler,
    presence_frequency_penalty,
    token_logprobs,
)


def run(procs, history, logits):
    x = np.asarray(logits, dtype=np.float32)
    for p in procs:
        x = p(history, x)
    return x


def test_presence_frequency_exact():
    # prompt [1, 1] is not counted; completion [0, 2, 2, 2]: counts 0 -> 1, 2 -> 3
    pen = presence_frequency_penalty(0.5, 0.25, last_n=64, prompt_len=2)
    out = pen([1, 1, 0, 2, 2, 2], np.array([1.0, 1.0, 1.0, 1.0], dtype=np.float32))
    assert out.tolist() == [1.0 - 0.5 - 0.25, 1.0, 1.0 - 0.5 - 0.75, 1.0]
    assert out.dtype == np.float32


def test_penalty_window_and_prompt_len():
    logits = np.zeros(4, dtype=np.float32)
    # only the last 2 completion tokens count: [3, 3]
    out = presence_frequency_penalty(1.0, 1.0, last_n=2)([0, 1, 3, 3], logits)
    assert out.tolist() == [0.0, 0.0, 0.0, -3.0]
    assert presence_frequency_penalty(1.0, 1.0, last_n=0)([0, 1], logits) is logits
    # nothing generated yet: no penalty, even with prompt tokens in the history
    assert presence_frequency_penalty(1.0, 1.0, prompt_len=2)([0, 1], logits).tolist() == [0] * 4
    procs = make_processors(SamplingParams(presence_penalty=2.0), prompt_len=1)
    assert run(procs, [0, 1], [5.0, 5.0, 5.0]).tolist() == [5.0, 3.0, 5.0]
    # negative penalties encourage repetition (OpenAI allows -2..2)
    out = presence_frequency_penalty(-1.0, 0.0)([2], logits)
    assert out.tolist() == [0.0, 0.0, 1.0, 0.0]


def test_logit_bias_bans_and_forces():
    logits = np.array([3.0, 2.0, 1.0, 0.0], dtype=np.float32)
    greedy = make_sampler(SamplingParams())
    banned = run(make_processors(SamplingParams(logit_bias={"0": -100})), [], logits)
    assert banned.tolist() == [-97.0, 2.0, 1.0, 0.0] and greedy(banned) == 1
    forced = run(make_processors(SamplingParams(logit_bias={3: 100})), [], logits)
    assert greedy(forced) == 3
    hot = make_sampler(SamplingParams(temperature=1.0, seed=0))
    assert {hot(forced) for _ in range(50)} == {3}
    assert SamplingParams(logit_bias={"7": -1, 2: 0.5}).logit_bias == {7: -1.0, 2: 0.5}
    with pytest.raises(ValueError, match="token id 4 is out of range"):
        logit_bias({4: 1.0})([], logits)


def test_processor_order_bias_then_penalties():
    p = SamplingParams(logit_bias={1: 1.0}, repeat_penalty=2.0, frequency_penalty=1.0)
    # bias: [1, 3]; repeat (token 1 in history, positive) / 2: [1, 1.5]; frequency: [1, 0.5]
    assert run(make_processors(p), [1], [1.0, 2.0]).tolist() == [1.0, 0.5]


@pytest.mark.parametrize("kw, match", [
    ({"temperature": math.nan}, "temperature"),
    ({"temperature": math.inf}, "temperature"),
    ({"temperature": -1.0}, "temperature"),
    ({"top_p": math.nan}, "top_p"),
    ({"top_p": 0.0}, "top_p"),
    ({"min_p": math.nan}, "min_p"),
    ({"top_k": -1}, "top_k"),
    ({"repeat_penalty": math.nan}, "repeat_penalty"),
    ({"repeat_penalty": 0.0}, "repeat_penalty"),
    ({"repeat_last_n": -1}, "repeat_last_n"),
    ({"presence_penalty": math.nan}, "presence_penalty"),
    ({"frequency_penalty": math.inf}, "frequency_penalty"),
    ({"logit_bias": {"x": 1}}, "logit_bias"),
    ({"logit_bias": {"-1": 1}}, "negative"),
    ({"logit_bias": {1.5: 1}}, "logit_bias"),
    ({"logit_bias": {True: 1}}, "logit_bias"),
    ({"logit_bias": {1: math.nan}}, "finite"),
    ({"logit_bias": {1: "a lot"}}, "logit_bias"),
])
def test_params_validation(kw, match):
    with pytest.raises(ValueError, match=match):
        SamplingParams(**kw)


def test_params_logit_bias_type_and_hash():
    with pytest.raises(TypeError, match="mapping"):
        SamplingParams(logit_bias=[1, 2])
    a, b = SamplingParams(logit_bias={"1": 2}), SamplingParams(logit_bias={1: 2.0})
    assert a == b and hash(a) == hash(b)


def _ref_logprobs(x):
    x = np.asarray(x, dtype=np.float64)
    return x - np.log(np.sum(np.exp(x - x.max()))) - x.max()


def test_token_logprobs_reference_and_order():
    rng = np.random.default_rng(0)
    logits = (rng.standard_normal(1000) * 5).astype(np.float32)
    lp, top = token_logprobs(logits, 17, 5)
    ref = _ref_logprobs(logits)
    assert lp == pytest.approx(ref[17], abs=1e-12)
    assert [i for i, _ in top] == list(np.argsort(-ref)[:5])
    assert all(v == pytest.approx(ref[i], abs=1e-12) for i, v in top)
    assert all(a[1] >= b[1] for a, b in zip(top, top[1:]))
    assert math.fsum(math.exp(v) for v in ref) == pytest.approx(1.0, abs=1e-12)


def test_token_logprobs_stable_ties_and_edges():
    # large logits would overflow a naive softmax; equal ones rank by id
    lp, top = token_logprobs(np.array([1000.0, 1001.0, 1001.0, -np.inf, 1001.0]), 0, 2)
    assert top == [(1, pytest.approx(-math.log(3 + math.exp(-1)))),
                   (2, pytest.approx(-math.log(3 + math.exp(-1))))]
    assert lp == pytest.approx(-1 - math.log(3 + math.exp(-1)))
    assert token_logprobs(np.array([0.0, 0.0]), 1, 0) == (pytest.approx(math.log(0.5)), [])
    assert len(token_logprobs(np.zeros(3), 0, 10)[1]) == 3
    assert token_logprobs(np.array([0.0, -np.inf]), 1, 1)[0] == -math.inf
    with pytest.raises(ValueError, match="out of range"):
        token_logprobs(np.zeros(3), 3, 1)
    with pytest.raises(ValueError, match="finite"):
        token_logprobs(np.array([np.nan, 0.0]), 0, 1)


def _filter_by_full_sort(logits, top_k, top_p, min_p):
    """filter_logits as it was written first: the whole vocabulary in stable descending order."""
    from edgenano.sampling import _softmax

    logits = np.asarray(logits, dtype=np.float64)
    keep = np.ones(logits.shape, dtype=bool)
    order = np.argsort(-logits, kind="stable")
    if 0 < top_k < logits.size:
        keep[order[top_k:]] = False
    if top_p < 1.0:
        cum = np.cumsum(_softmax(np.where(keep, logits, -np.inf))[order])
        keep[order[int(np.searchsorted(cum, top_p)) + 1:]] = False
    if min_p > 0.0:
        probs = _softmax(np.where(keep, logits, -np.inf))
        keep &= probs >= min_p * probs.max()
    return np.where(keep, logits, -np.inf)


def test_filter_logits_equals_the_full_sort():
    """filter_logits sorts only the head of the vocabulary (top-k's k, or 1024 for top-p) and must
    keep exactly the tokens the full stable sort keeps: ties at the k-th value (lower index
    first), flat and peaked distributions, k past the vocabulary, top-p over and under the head's
    mass, NaN."""
    from edgenano.sampling import filter_logits

    rng = np.random.default_rng(7)
    for it in range(600):
        n = int(rng.choice([5, 3000, 40000]))
        if it % 3 == 0:
            x = rng.standard_normal(n) * rng.choice([0.1, 1, 10, 50])
        elif it % 3 == 1:
            x = np.round(rng.standard_normal(n) * 2) / 2  # many ties
        else:
            x = np.full(n, 1.0)
            x[rng.integers(0, n, 5)] = 3.0
        x = x.astype(np.float32)
        if it % 50 == 0:
            x[rng.integers(0, n)] = np.nan
        args = (int(rng.choice([0, 1, 2, 40, 1000, n, n + 5])),
                float(rng.choice([1.0, 0.95, 0.5, 0.999999, 0.0])),
                float(rng.choice([0.0, 0.05, 0.5])))
        got, want = filter_logits(x, *args), _filter_by_full_sort(x, *args)
        assert np.array_equal(got, want, equal_nan=True), (n, it, args)
