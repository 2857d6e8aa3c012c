"""Samplers and logits processors: small callables, composed per request (mlx-lm style).

A logits processor maps (history token ids, logits) -> logits; a sampler maps logits -> token id.
Temperature 0 is greedy. The order is llama-cpp-python's: logit_bias, penalties (repeat, then
frequency/presence), then in the sampler top-k, top-p, min-p, temperature.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

LogitsProcessor = Callable[[Sequence[int], np.ndarray], np.ndarray]
Sampler = Callable[[np.ndarray], int]


@dataclass(frozen=True)
class SamplingParams:
    temperature: float = 0.0
    top_p: float = 1.0
    top_k: int = 0
    min_p: float = 0.0
    repeat_penalty: float = 1.0
    repeat_last_n: int = 64      # window of every penalty (llama.cpp's penalty_last_n); 0: none
    seed: int | None = None
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    # token id (int, or str of an int as OpenAI's JSON sends it) -> bias added to its logit;
    # normalised to {int: float}. -100 all but bans a token, +100 all but forces it.
    logit_bias: Mapping[int | str, float] | None = field(default=None, hash=False)

    def __post_init__(self):
        _check(math.isfinite(self.temperature) and self.temperature >= 0,
               f"temperature must be a finite number >= 0, got {self.temperature}")
        _check(0 < self.top_p <= 1, f"top_p must be in (0, 1], got {self.top_p}")
        _check(self.top_k >= 0, f"top_k must be >= 0, got {self.top_k}")
        _check(0 <= self.min_p <= 1, f"min_p must be in [0, 1], got {self.min_p}")
        _check(math.isfinite(self.repeat_penalty) and self.repeat_penalty > 0,
               f"repeat_penalty must be a finite number > 0, got {self.repeat_penalty}")
        _check(self.repeat_last_n >= 0, f"repeat_last_n must be >= 0, got {self.repeat_last_n}")
        for name in ("presence_penalty", "frequency_penalty"):
            v = getattr(self, name)
            _check(math.isfinite(v), f"{name} must be a finite number, got {v}")
        if self.seed is not None:
            _check(not isinstance(self.seed, bool) and isinstance(self.seed, int)
                   and -1 <= self.seed < 2**64, f"seed must be an int in [0, 2**64) or -1 "
                   f"(random, as llama.cpp), got {self.seed!r}")
            if self.seed == -1:
                object.__setattr__(self, "seed", None)
        if self.logit_bias is not None:
            object.__setattr__(self, "logit_bias", normalise_logit_bias(self.logit_bias))


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise ValueError(message)


def normalise_logit_bias(bias: Mapping) -> dict[int, float]:
    """{token id: bias} from OpenAI's {"50256": -100} or {50256: -100}; ids >= 0, finite biases.
    The upper bound on ids is checked when the processor first sees the logits."""
    if not isinstance(bias, Mapping):
        raise TypeError(f"logit_bias must be a mapping of token id to bias, got {bias!r}")
    out: dict[int, float] = {}
    for k, v in bias.items():
        try:
            if isinstance(k, bool):
                raise ValueError
            tid = int(k)  # a float such as 1.5 fails the equality below
            if isinstance(k, float) and tid != k:
                raise ValueError
            b = float(v)
        except (TypeError, ValueError):
            raise ValueError(f"logit_bias entry {k!r}: {v!r} is not token id -> number") from None
        _check(tid >= 0, f"logit_bias token id {tid} is negative")
        _check(math.isfinite(b), f"logit_bias for token {tid} must be finite, got {v!r}")
        out[tid] = b
    return out


def logit_bias(bias: Mapping) -> LogitsProcessor:
    """Add a fixed bias to chosen tokens' logits (llama-cpp-python's logit_bias processor)."""
    table = normalise_logit_bias(bias)
    ids = np.fromiter(table.keys(), dtype=np.int64, count=len(table))
    vals = np.fromiter(table.values(), dtype=np.float64, count=len(table))

    def apply(history: Sequence[int], logits: np.ndarray) -> np.ndarray:
        n = logits.shape[-1]
        if ids.size and ids.max() >= n:
            raise ValueError(f"logit_bias token id {int(ids[ids >= n][0])} is out of range "
                             f"(the vocabulary has {n} tokens)")
        out = np.array(logits, copy=True)
        out[ids] += vals
        return out

    return apply


def repeat_penalty(penalty: float, last_n: int = 64) -> LogitsProcessor:
    """llama.cpp's repetition penalty: positive logits of recent tokens / p, negative ones * p."""

    def apply(history: Sequence[int], logits: np.ndarray) -> np.ndarray:
        recent = np.unique(np.asarray(history[-last_n:], dtype=np.int64)) if last_n else []
        if penalty == 1.0 or len(recent) == 0:
            return logits
        out = logits.copy()
        sel = out[recent]
        out[recent] = np.where(sel > 0, sel / penalty, sel * penalty)
        return out

    return apply


def presence_frequency_penalty(presence: float, frequency: float, last_n: int = 64,
                               prompt_len: int = 0) -> LogitsProcessor:
    """OpenAI's penalties as llama.cpp applies them: logit[t] -= presence * (count[t] > 0)
    + frequency * count[t]. Counts run over the completion only (history[prompt_len:]) and, as
    in llama-cpp-python (whose sampler sees only the sampled tokens), over its last `last_n`
    tokens; last_n == 0 turns the penalties off, as llama.cpp's penalty_last_n == 0 does."""

    def apply(history: Sequence[int], logits: np.ndarray) -> np.ndarray:
        window = list(history[prompt_len:])[-last_n:] if last_n else []
        if not window or (presence == 0.0 and frequency == 0.0):
            return logits
        ids, counts = np.unique(np.asarray(window, dtype=np.int64), return_counts=True)
        out = np.array(logits, copy=True)
        out[ids] -= presence + frequency * counts
        return out

    return apply


def _softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - np.max(x))
    return e / e.sum()


def _descending(logits: np.ndarray, m: int) -> np.ndarray:
    """The first m indices of np.argsort(-logits, kind="stable") (largest first, ties to the lower
    index), without sorting the whole vocabulary: the m largest found by a partition, the ties at
    the m-th value taken lowest index first, and only those m sorted."""
    n = logits.size
    if m >= n:
        return np.argsort(-logits, kind="stable")
    v = -np.partition(-logits, m - 1)[m - 1]  # the m-th largest value
    above = np.flatnonzero(logits > v)
    cand = np.concatenate([above, np.flatnonzero(logits == v)[: m - above.size]])
    return cand[np.lexsort((cand, -logits[cand]))]


def filter_logits(logits: np.ndarray, top_k: int, top_p: float, min_p: float) -> np.ndarray:
    """Set the logits of tokens removed by top-k, top-p (nucleus) and min-p to -inf.

    The same as walking the whole vocabulary in stable descending order, but only its head is
    sorted (a 131k vocabulary's full argsort costs more than a small model's decode step): top-k's
    k tokens, or for top-p alone the 1024 most likely when they hold the mass top-p keeps."""
    logits = np.asarray(logits, dtype=np.float64)
    n = logits.size
    exact = np.isnan(logits).any() or n <= 2048  # NaN has no place in a partition: sort all
    keep = np.ones(logits.shape, dtype=bool)
    order = None  # a head of the stable descending order holding every token still kept
    if 0 < top_k < n:
        order = np.argsort(-logits, kind="stable")[:top_k] if exact else _descending(logits, top_k)
        keep[:] = False
        keep[order] = True
    if top_p < 1.0:
        probs = _softmax(np.where(keep, logits, -np.inf))
        if order is None:
            order = None if exact else _descending(logits, 1024)
            if order is None or probs[order].sum() < top_p:
                order = np.argsort(-logits, kind="stable")
        cum = np.cumsum(probs[order])
        # keep the smallest prefix whose mass reaches top_p (always at least one token)
        cut = int(np.searchsorted(cum, top_p)) + 1
        head = np.zeros(logits.shape, dtype=bool)
        head[order[:cut]] = True
        keep &= head
    if min_p > 0.0:
        probs = _softmax(np.where(keep, logits, -np.inf))
        keep &= probs >= min_p * probs.max()
    return np.where(keep, logits, -np.inf)


def make_sampler(params: SamplingParams) -> Sampler:
    """Greedy at temperature 0, otherwise filtered sampling from a seeded generator."""
    if params.temperature == 0.0:
        return lambda logits: int(np.argmax(logits))
    rng = np.random.default_rng(params.seed)

    def sample(logits: np.ndarray) -> int:
        x = filter_logits(logits, params.top_k, params.top_p, params.min_p) / params.temperature
        p = _softmax(x)
        return int(rng.choice(p.size, p=p))

    return sample


def make_processors(params: SamplingParams, prompt_len: int = 0) -> list[LogitsProcessor]:
    """The processors `params` asks for, in llama-cpp-python's order. `prompt_len` is where the
    completion starts in the history the loop passes (prompt ids + generated ids); the
    frequency/presence penalties count only what comes after it."""
    procs: list[LogitsProcessor] = []
    if params.logit_bias:
        procs.append(logit_bias(params.logit_bias))
    if params.repeat_penalty != 1.0:
        procs.append(repeat_penalty(params.repeat_penalty, params.repeat_last_n))
    if params.presence_penalty != 0.0 or params.frequency_penalty != 0.0:
        procs.append(presence_frequency_penalty(params.presence_penalty, params.frequency_penalty,
                                                params.repeat_last_n, prompt_len))
    return procs


def token_logprobs(logits: np.ndarray, token_id: int,
                   top_n: int) -> tuple[float, list[tuple[int, float]]]:
    """(log-probability of `token_id`, the `top_n` most likely (id, logprob), best first, ties
    to the lower id), by a float64 log-softmax of `logits`.

    Which logits to pass: llama-cpp-python 0.3.36 (`_create_completion`) takes
    `Llama.logits_to_logprobs(self._scores[...])`, and `_scores` holds the logits exactly as the
    model returned them: before logit_bias, penalties, grammar, top-k/p and temperature (its
    sampler works on a copy). Pass the raw model logits to match it."""
    x = np.asarray(logits, dtype=np.float64).reshape(-1)
    _check(0 <= token_id < x.size, f"token id {token_id} is out of range ({x.size} logits)")
    _check(top_n >= 0, f"top_n must be >= 0, got {top_n}")
    m = np.max(x)
    _check(bool(np.isfinite(m)), "no finite logit to take a log-softmax of")
    lp = x - (m + np.log(np.sum(np.exp(x - m))))
    k = min(top_n, x.size)
    if k == 0:
        return float(lp[token_id]), []
    # the k-th largest value splits the top from the rest in O(n); ties on it go to lower ids
    kth = np.partition(lp, x.size - k)[x.size - k]
    above, ties = np.flatnonzero(lp > kth), np.flatnonzero(lp == kth)
    cand = np.sort(np.concatenate([above, ties[:k - above.size]]))
    top = cand[np.argsort(-lp[cand], kind="stable")]
    return float(lp[token_id]), [(int(i), float(lp[i])) for i in top]
