"""Training conversations for the tiny reasoner, rendered with edgenano's chat template
(training only: the evaluation's prompt rendering is edgenano.reasoner.prompt).

An example is a prompt (system, optional earlier turn, user question; `/think` or `/no_think` in
any of them, last one wins, none = on) rendered by the template with the generation prompt, and a
completion tokenized after it as generation would produce it: the trace, `</think>\n\n`, the answer
line and the end-of-turn token; with reasoning off just `\n\n` and the answer. A share of traces is
cut short and closed with the thinking budget's forced text (SPEC section 2), not trained on, so the
model learns to answer after a forced close. The loss covers the completion only.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field

from devtools.tiny import DEFAULT_CORPUS, EOS_ID
from edgenano.reasoner.prompt import (  # noqa: F401  (hf_codec: re-exported for training)
    CLOSE,
    CUT_PREFIX,
    Encode,
    hf_codec,
    render_prompt,
)
from edgenano.reasoner.tasks import Problem, sample_problem

SYSTEM_TEXTS = ("", "You are a helpful assistant.", "You are a careful assistant. Show your work.",
                "Answer the question.")
SWITCHES = (None, "/think", "/no_think")

@dataclass
class Mix:
    """Shares of the training data."""

    weights: dict = field(default_factory=lambda: {"add": 0.35, "sub": 0.35, "count": 0.3})
    p_off: float = 0.3          # reasoning off
    p_cut: float = 0.22         # of reasoning-on examples: trace cut short, forced close
    p_cut_midline: float = 0.3  # of cut traces: cut mid-line (close with ".\n" first)
    p_multi: float = 0.15       # an earlier question and answer in the history
    p_system: float = 0.6       # a system message with some text


@dataclass
class Sample:
    """A conversation before tokenization. `cut` is the number of trace tokens kept when the
    trace is cut short (None: whole trace)."""

    messages: list[dict]
    thinking: bool
    problem: Problem
    cut_fraction: float | None = None
    cut_midline: bool = False


@dataclass
class Example:
    ids: list[int]
    mask: list[bool]     # True where the loss applies (completion tokens the model generates)
    n_prompt: int
    sample: Sample


def _place(rng: random.Random, text: str, switch: str | None) -> str:
    if switch is None:
        return text
    if not text:
        return switch
    return f"{text} {switch}" if rng.random() < 0.7 else f"{switch} {text}"


def _switch_slots(rng: random.Random, thinking: bool, n_slots: int) -> list[str | None]:
    """Keywords for the system and user messages such that the last one gives `thinking`."""
    while True:
        slots = [rng.choices(SWITCHES, (0.55, 0.2, 0.25))[0] for _ in range(n_slots)]
        last = next((s for s in reversed(slots) if s is not None), None)
        if (last != "/no_think") == thinking:
            return slots


def make_sample(rng: random.Random, mix: Mix, exclude: frozenset = frozenset()) -> Sample:
    problem = sample_problem(rng, mix.weights, exclude)
    thinking = rng.random() >= mix.p_off
    history: list[Problem] = []
    if rng.random() < mix.p_multi:
        history.append(sample_problem(rng, mix.weights, exclude))
    slots = _switch_slots(rng, thinking, 2 + len(history))
    system = rng.choice(SYSTEM_TEXTS[1:]) if rng.random() < mix.p_system else ""
    messages = []
    if system or slots[0] is not None or rng.random() < 0.5:
        messages.append({"role": "system", "content": _place(rng, system, slots[0])})
    for i, p in enumerate(history):
        messages.append({"role": "user", "content": _place(rng, p.question, slots[1 + i])})
        past = p.answer_line
        if rng.random() < 0.5:  # the template must drop a past trace
            past = f"<think>\n{p.trace}</think>\n\n{past}"
        messages.append({"role": "assistant", "content": past})
    messages.append({"role": "user", "content": _place(rng, problem.question, slots[-1])})
    sample = Sample(messages, thinking, problem)
    if thinking and rng.random() < mix.p_cut:
        sample.cut_fraction = rng.random()
        sample.cut_midline = rng.random() < mix.p_cut_midline
    return sample


def _cut_point(trace_ids: list[int], pieces: list[str], sample: Sample) -> int:
    """Tokens of the trace kept: a line end or a mid-line position, drawn by cut_fraction."""
    ends = [i + 1 for i, p in enumerate(pieces[:-1]) if p.endswith("\n")]
    mids = [i + 1 for i, p in enumerate(pieces[:-1]) if not p.endswith("\n")]
    choices = mids if (sample.cut_midline and mids) or not ends else ends
    return choices[min(int(sample.cut_fraction * len(choices)), len(choices) - 1)]


def completion_parts(sample: Sample, encode: Encode, decode_one: Callable[[int], str]):
    """[(token ids, trained?)] of the assistant's reply after the generation prompt."""
    answer = encode(sample.problem.answer_line + "\n") + [EOS_ID]
    if not sample.thinking:
        return [(encode("\n\n") + answer, True)]
    trace = encode(sample.problem.trace)
    if sample.cut_fraction is None:
        return [(trace + encode(CLOSE), True), (answer, True)]
    cut = _cut_point(trace, [decode_one(t) for t in trace], sample)
    close = CLOSE if decode_one(trace[cut - 1]).endswith("\n") else CUT_PREFIX + CLOSE
    return [(trace[:cut], True), (encode(close), False), (answer, True)]


def encode_sample(sample: Sample, encode: Encode, decode_one: Callable[[int], str],
                  template: str | None = None) -> Example:
    prompt = encode(render_prompt(sample.messages, template))
    ids, mask = list(prompt), [False] * len(prompt)
    for part, trained in completion_parts(sample, encode, decode_one):
        ids += part
        mask += [trained] * len(part)
    return Example(ids, mask, len(prompt), sample)


def tokenizer_corpus(n: int = 4000, seed: int = 1) -> list[str]:
    """Text to train the vocabulary on: rendered conversations plus tiny's general corpus."""
    rng = random.Random(seed)
    texts = list(DEFAULT_CORPUS)
    for _ in range(n):
        s = make_sample(rng, Mix(p_multi=0.0))
        p = s.problem
        text = render_prompt(s.messages) + p.trace + CLOSE + CUT_PREFIX + p.answer_line + "\n"
        texts.append(text)
    return texts
