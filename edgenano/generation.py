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
from .sampling import SamplingParams, make_processors, make_sampler, token_logprobs


@dataclass
class Step:
    """One generated (or forced) token and the text it completes."""

    token: int
    text: str          # complete UTF-8 text this token finishes ('' inside a multi-byte char)
    forced: bool       # inserted by the thinking budget, not sampled
    reasoning: bool    # part of the reasoning trace (before </think> was closed)
    logprob: float | None = None  # log-probability of the token (when logprobs were asked)
    top_logprobs: list[tuple[int, float]] | None = None  # the most likely alternatives


@dataclass
class Outcome:
    """What a finished generation reports (filled in as the generator runs)."""

    finish_reason: str = "length"
    completion_tokens: int = 0
    reasoning_tokens: int = 0
    budget_forced: bool = False
    n_fed: int = 0  # generated tokens evaluated into the state (the last one may not be)


class _Utf8:
    def __init__(self):
        self._dec = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def push(self, data: bytes) -> str:
        return self._dec.decode(data)


def generate_steps(model, state, logits: np.ndarray, *, max_tokens: int,
                   sampling: SamplingParams = SamplingParams(), stop_ids: Sequence[int] = (),
                   thinking: bool = False,
                   budget: BudgetRule | None = None, history: Sequence[int] = (),
                   outcome: Outcome | None = None, constraint=None,
                   logprobs: int | None = None) -> Iterator[Step]:
    """Yield Steps until a stop token, a finished constraint, or max_tokens (stop strings are
    the caller's: StopCutter). `model` gives
    `.eval(state, ids) -> logits` and `.tokenizer`; `state` is advanced in place. With
    `thinking`, the prompt has opened `<think>` and `budget` (if any) may force its close.
    `constraint` (edgenano.grammar) masks the answer's tokens once the reasoning is closed;
    `logprobs` asks for each sampled token's log-probability (under the raw logits, before
    penalties, bias and grammar, as llama-cpp-python reports it) and that many alternatives."""
    tok = model.tokenizer
    out = outcome if outcome is not None else Outcome()
    sampler = make_sampler(sampling)
    procs = make_processors(sampling, prompt_len=len(history))
    tracker = BudgetTracker(budget or BudgetRule()) if thinking else None
    hist = list(history)
    utf8 = _Utf8()
    forced: list[int] = []
    while out.completion_tokens < max_tokens:
        is_forced = bool(forced)
        reasoning = tracker is not None and not tracker.closed
        guided = constraint is not None and not reasoning and not is_forced
        lp = top = None
        if is_forced:
            tid = forced.pop(0)
        else:
            x = logits
            for p in procs:
                x = p(hist, x)
            if guided:
                x = constraint.mask(x)
            tid = sampler(x)
            if logprobs is not None:  # of the model's own distribution, as llama-cpp-python
                lp, top = token_logprobs(logits, tid, logprobs)
            if tid in stop_ids:
                out.finish_reason = "stop"
                return
            if guided:
                constraint.advance(tid)
        piece = utf8.push(tok.token_bytes(tid))
        if reasoning and not is_forced:
            force = tracker.observe(piece)
            if force is not None:
                forced = tok.encode(force, special=False)
                out.budget_forced = True
            out.reasoning_tokens = tracker.reasoning_tokens
        hist.append(tid)
        out.completion_tokens += 1
        yield Step(tid, piece, is_forced, reasoning, lp, top)
        if guided and constraint.is_done():
            out.finish_reason = "stop"
            return
        logits = model.eval(state, [tid])
        out.n_fed += 1


def partial_suffix(text: str, words: Sequence[str]) -> int:
    """Length of the longest end of `text` that is the start of one of `words`."""
    return max((k for w in words for k in range(1, len(w)) if text.endswith(w[:k])), default=0)


class StopCutter:
    """Cuts the answer at the first stop string (removed, as llama-cpp-python does); while
    streaming, holds back an end that may be the start of one."""

    def __init__(self, stop: Sequence[str]):
        if isinstance(stop, str):
            stop = [stop]
        self.stop = [s for s in (stop or ()) if s]
        self.text, self.sent, self.hit = "", 0, False

    def feed(self, piece: str) -> str:
        if self.hit:
            return ""
        self.text += piece
        if not self.stop:
            out, self.sent = self.text[self.sent:], len(self.text)
            return out
        hits = [i for i in (self.text.find(s) for s in self.stop) if i >= 0]
        if hits:
            self.hit, self.text = True, self.text[: min(hits)]
            end = len(self.text)
        else:
            end = len(self.text) - partial_suffix(self.text, self.stop)
        out, self.sent = self.text[self.sent:end], max(self.sent, end)
        return out

    def flush(self) -> str:
        out, self.sent = self.text[self.sent:], len(self.text)
        return out
