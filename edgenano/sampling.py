"""Samplers and logits processors: small callables, composed per request (mlx-lm style).

A logits processor maps (history token ids, logits) -> logits; a sampler maps logits -> token id.
Temperature 0 is greedy. Filters follow llama.cpp's order: penalties, top-k, top-p, min-p,
temperature.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

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
    repeat_last_n: int = 64
    seed: int | None = None

    def __post_init__(self):
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.top_k < 0 or not 0 <= self.min_p <= 1 or self.repeat_penalty <= 0:
            raise ValueError("top_k >= 0, 0 <= min_p <= 1 and repeat_penalty > 0 are required")


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


def _softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - np.max(x))
    return e / e.sum()


def filter_logits(logits: np.ndarray, top_k: int, top_p: float, min_p: float) -> np.ndarray:
    """Set the logits of tokens removed by top-k, top-p (nucleus) and min-p to -inf."""
    logits = np.asarray(logits, dtype=np.float64)
    keep = np.ones(logits.shape, dtype=bool)
    order = np.argsort(-logits, kind="stable")
    if 0 < top_k < logits.size:
        keep[order[top_k:]] = False
    if top_p < 1.0:
        probs = _softmax(np.where(keep, logits, -np.inf))[order]
        cum = np.cumsum(probs)
        # keep the smallest prefix whose mass reaches top_p (always at least one token)
        cut = int(np.searchsorted(cum, top_p)) + 1
        keep[order[cut:]] = False
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


def make_processors(params: SamplingParams) -> list[LogitsProcessor]:
    if params.repeat_penalty == 1.0:
        return []
    return [repeat_penalty(params.repeat_penalty, params.repeat_last_n)]
