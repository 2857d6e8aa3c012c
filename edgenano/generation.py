"""Token generation as a generator (mlx-lm's generate_step), with the thinking budget's forcing.

The loop owns no model state: it is handed a backend state already fed with the prompt and the
logits that followed, so sessions can snapshot and restore around it.
"""

from __future__ import annotations

import codecs
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from .chat import BudgetRule, BudgetTracker
from .sampling import SamplingParams, make_processors, make_sampler


@dataclass
class Step:
    """One generated (or forced) token and the text it completes."""

    token: int
    text: str          # complete UTF-8 text this token finishes ('' inside a multi-byte char)
    forced: bool       # inserted by the thinking budget, not sampled
    reasoning: bool    # part of the reasoning trace (before </think> was closed)


@dataclass
class Outcome:
    """What a finished generation reports (filled in as the generator runs)."""

    finish_reason: str = "length"
    completion_tokens: int = 0
    reasoning_tokens: int = 0
    budget_forced: bool = False


class _Utf8:
    def __init__(self):
        self._dec = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def push(self, data: bytes) -> str:
        return self._dec.decode(data)


def generate_steps(model, state, logits: np.ndarray, *, max_tokens: int,
                   sampling: SamplingParams = SamplingParams(), stop_ids: Sequence[int] = (),
                   stop: Sequence[str] = (), thinking: bool = False,
                   budget: BudgetRule | None = None, history: Sequence[int] = (),
                   outcome: Outcome | None = None) -> Iterator[Step]:
    """Yield Steps until a stop token, a stop string, or max_tokens. `model` gives
    `.eval(state, ids) -> logits` and `.tokenizer`; `state` is advanced in place. With
    `thinking`, the prompt has opened `<think>` and `budget` (if any) may force its close."""
    tok = model.tokenizer
    out = outcome if outcome is not None else Outcome()
    sampler, procs = make_sampler(sampling), make_processors(sampling)
    tracker = BudgetTracker(budget or BudgetRule()) if thinking else None
    hist = list(history)
    utf8 = _Utf8()
    forced: list[int] = []
    text = ""
    while out.completion_tokens < max_tokens:
        is_forced = bool(forced)
        if is_forced:
            tid = forced.pop(0)
        else:
            x = logits
            for p in procs:
                x = p(hist, x)
            tid = sampler(x)
            if tid in stop_ids:
                out.finish_reason = "stop"
                return
        reasoning = tracker is not None and not tracker.closed
        piece = utf8.push(tok.token_bytes(tid))
        if reasoning and not is_forced:
            force = tracker.observe(piece)
            if force is not None:
                forced = tok.encode(force, special=False)
                out.budget_forced = True
            out.reasoning_tokens = tracker.reasoning_tokens
        hist.append(tid)
        out.completion_tokens += 1
        text += piece
        yield Step(tid, piece, is_forced, reasoning)
        if stop and any(s in text for s in stop):
            out.finish_reason = "stop"
            return
        logits = model.eval(state, [tid])
