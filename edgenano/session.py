"""Stateful chat sessions that never re-prefill their history (SPEC section 2).

Turn n+1's prompt is not turn n's prompt plus its output: the template drops past reasoning. So a
session keeps a snapshot of the backend state at the end of the part of the prompt that the next
turn's rendering shares (up to `<SPECIAL_11>Assistant\\n`, before `<think>`), restores it next
turn and feeds only what is new: the answer, the end of turn and the new user message.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass, field

from . import chat as chatfmt
from .generation import Outcome, generate_steps
from .sampling import SamplingParams

STATE_FORMAT = "edgenano.chat_state"
STATE_VERSION = 1


@dataclass
class Reply:
    reasoning: str | None
    content: str
    tool_calls: list[dict]
    finish_reason: str
    usage: dict
    text: str  # everything generated, as generated


@dataclass
class StreamEvent:
    text: str
    reasoning: bool


@dataclass
class _Snapshot:
    state: object
    tokens: list[int]


@dataclass
class ChatSession:
    model: object
    system: str | None = None
    thinking: bool = True
    thinking_budget: int = -1
    tools: list | None = None
    grace: int = 500
    close_text: str = "</think>\n\n"
    cut_prefix: str = ".\n"
    temperature: float | None = None  # None: 0.6 with reasoning on, greedy with it off (NVIDIA)
    top_p: float | None = None
    top_k: int = 0
    min_p: float = 0.0
    repeat_penalty: float = 1.0
    seed: int | None = None
    messages: list[dict] = field(default_factory=list)
    _snap: _Snapshot | None = field(default=None, repr=False)
    # The snapshot the last turn started from: when a reply ends inside its reasoning, the history
    # renders that turn differently from what was fed, `_snap` no longer prefixes the new prompt,
    # and this one bounds the re-prefill to that turn instead of the whole conversation.
    _base: _Snapshot | None = field(default=None, repr=False)
    prefill_tokens: int = 0  # tokens fed into the backend by the last send (for tests, stats)

    def __post_init__(self):
        if self.system is not None and not self.messages:
            self.messages = [{"role": "system", "content": self.system}]
        chatfmt.BudgetRule(self.thinking_budget, self.grace)  # validates

    # -- the turn ---------------------------------------------------------------------------
    def send(self, text: str, *, stream: bool = False, max_tokens: int = 1024,
             thinking: bool | None = None, thinking_budget: int | None = None,
             stop=(), outcome: Outcome | None = None, **sampling):
        """Send a user message. Returns a Reply, or with stream=True a generator of
        StreamEvents (reasoning and answer pieces) whose Reply is `session.last_reply` after."""
        gen = self._turn(text, max_tokens, thinking, thinking_budget, stop, outcome, sampling)
        if stream:
            return gen
        for _ in gen:
            pass
        return self.last_reply

    def _turn(self, text, max_tokens, thinking, budget, stop, outcome, sampling) -> Iterator:
        budget = self.thinking_budget if budget is None else budget
        default = self.thinking if thinking is None else thinking
        if budget == 0:
            default = False
        msgs = self.messages + [{"role": "user", "content": text}]
        on, msgs = chatfmt.resolve_thinking(msgs, default)
        if budget == 0:
            on = False
        prompt, shared = self._render(msgs, on)
        state, logits = self._prefill(shared, prompt)
        params = self._sampling(on, sampling)
        rule = chatfmt.BudgetRule(budget, self.grace, self.close_text, self.cut_prefix)
        out = outcome if outcome is not None else Outcome()
        splitter = _ReasoningSplitter(on)
        pieces = []
        for step in generate_steps(self.model, state, logits, max_tokens=max_tokens,
                                   sampling=params, stop_ids=self.model.stop_ids, stop=stop,
                                   thinking=on, budget=rule, history=prompt, outcome=out):
            pieces.append(step.text)
            yield from splitter.feed(step.text)
        yield from splitter.flush()
        self._finish(text, "".join(pieces), on, len(prompt), out)

    def _render(self, msgs: list[dict], thinking: bool) -> tuple[list[int], list[int]]:
        """(prompt ids, ids of the prefix the next turn will share)."""
        m = self.model
        prompt = chatfmt.render(m.chat_template, msgs, enable_thinking=thinking, tools=self.tools)
        probe = chatfmt.render(m.chat_template, msgs + [{"role": "assistant", "content": "\x00"}],
                               add_generation_prompt=False, enable_thinking=thinking,
                               tools=self.tools)
        shared = os.path.commonprefix([prompt, probe[: probe.index("\x00")]])
        shared_ids = m.tokenize(shared)
        return shared_ids + m.tokenize(prompt[len(shared):]), shared_ids

    def _prefill(self, shared: list[int], prompt: list[int]):
        """Restore the last snapshot if the new prompt extends it, feed the rest up to the
        shared prefix, snapshot there, then feed the generation prompt."""
        snap = next((x for x in (self._snap, self._base)
                     if x is not None and shared[: len(x.tokens)] == x.tokens), None)
        if snap is not None:
            state, done = snap.state.copy(), len(snap.tokens)
        else:
            state, done = self.model.new_state(), 0
        self._base = snap
        logits = None
        if len(shared) > done:
            logits = self.model.eval(state, shared[done:])
        self._snap = _Snapshot(state.copy(), list(shared))
        if len(prompt) > len(shared):
            logits = self.model.eval(state, prompt[len(shared):])
        self.prefill_tokens = len(prompt) - done
        return state, logits

    def _sampling(self, thinking: bool, overrides: dict) -> SamplingParams:
        def pick(name, default):
            v = overrides.get(name)
            return getattr(self, name) if v is None and getattr(self, name) is not None else (
                default if v is None else v)

        temp = pick("temperature", 0.6 if thinking else 0.0)
        top_p = pick("top_p", 0.95 if thinking else 1.0)
        return SamplingParams(temperature=temp, top_p=top_p, top_k=pick("top_k", 0),
                              min_p=pick("min_p", 0.0),
                              repeat_penalty=pick("repeat_penalty", 1.0), seed=pick("seed", None))

    def _finish(self, user_text: str, text: str, thinking: bool, n_prompt: int,
                out: Outcome) -> None:
        reasoning, answer = chatfmt.split_reasoning(text, thinking)
        content, calls = chatfmt.parse_tool_calls(answer)
        usage = {"prompt_tokens": n_prompt, "completion_tokens": out.completion_tokens,
                 "total_tokens": n_prompt + out.completion_tokens,
                 "reasoning_tokens": out.reasoning_tokens if thinking else 0}
        finish = "tool_calls" if calls else out.finish_reason
        self.last_reply = Reply(reasoning, content, calls, finish, usage, text)
        self.messages.append({"role": "user", "content": user_text})
        msg = {"role": "assistant", "content": answer}
        self.messages.append(msg)

    # -- state ------------------------------------------------------------------------------
    def snapshot(self) -> dict:
        """Everything needed to continue from here: messages and the recurrent/KV state."""
        snap = None if self._snap is None else _Snapshot(self._snap.state.copy(),
                                                         list(self._snap.tokens))
        return {"messages": [dict(m) for m in self.messages], "snap": snap}

    def restore(self, snap: dict) -> None:
        self.messages = [dict(m) for m in snap["messages"]]
        s = snap["snap"]
        self._snap = None if s is None else _Snapshot(s.state.copy(), list(s.tokens))

    _SETTINGS = ("thinking", "thinking_budget", "tools", "grace", "close_text", "cut_prefix",
                 "temperature", "top_p", "top_k", "min_p", "repeat_penalty", "seed")

    def save(self, path) -> None:
        """Write the session (messages, settings, state, tokens) to a GGUF state file."""
        from . import state_file

        m = self.model
        snap = self._snap or _Snapshot(m.new_state(), [])
        state_file.save(path, fingerprint=m.fingerprint, backend=m.backend_name,
                        tokens=snap.tokens, messages=self.messages,
                        settings={k: getattr(self, k) for k in self._SETTINGS},
                        tensors=m.backend.export_state(snap.state))

    @classmethod
    def load(cls, path, model) -> ChatSession:
        """A session saved by `save`, continued on `model` (which must be the same model)."""
        from . import state_file

        d = state_file.load(path, fingerprint=model.fingerprint, backend=model.backend_name)
        s = cls(model, **d["settings"])
        s.messages = d["messages"]
        if d["tokens"]:
            s._snap = _Snapshot(model.backend.import_state(d["tensors"], d["tokens"]),
                                d["tokens"])
        return s

    def fork(self) -> ChatSession:
        other = ChatSession(self.model, system=None, thinking=self.thinking,
                            thinking_budget=self.thinking_budget, tools=self.tools,
                            grace=self.grace, close_text=self.close_text,
                            cut_prefix=self.cut_prefix, temperature=self.temperature,
                            top_p=self.top_p, top_k=self.top_k, min_p=self.min_p,
                            repeat_penalty=self.repeat_penalty, seed=self.seed)
        other.restore(self.snapshot())
        return other


class _ReasoningSplitter:
    """Turns the generated text stream into reasoning and answer events, hiding `</think>` and
    the blank line after it even when they arrive split across tokens."""

    def __init__(self, thinking: bool):
        self.reasoning = thinking
        self.buf = ""
        self.strip_lead = False

    def feed(self, piece: str) -> Iterator[StreamEvent]:
        if not self.reasoning:
            if self.strip_lead:
                piece = piece.lstrip("\n")
                self.strip_lead = not piece
            if piece:
                yield StreamEvent(piece, False)
            return
        self.buf += piece
        close = chatfmt.THINK_CLOSE
        if close in self.buf:
            before, after = self.buf.split(close, 1)
            if before:
                yield StreamEvent(before, True)
            self.reasoning, self.buf, self.strip_lead = False, "", True
            yield from self.feed(after)
            return
        keep = max((k for k in range(1, len(close)) if self.buf.endswith(close[:k])), default=0)
        emit, self.buf = self.buf[: len(self.buf) - keep], self.buf[len(self.buf) - keep:]
        if emit:
            yield StreamEvent(emit, True)

    def flush(self) -> Iterator[StreamEvent]:
        if self.buf:
            yield StreamEvent(self.buf, self.reasoning)
            self.buf = ""
