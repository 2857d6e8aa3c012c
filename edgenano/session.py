"""Stateful chat sessions that never re-prefill their history (SPEC section 2).

Turn n+1's prompt is not turn n's prompt plus its output: the template drops past reasoning. So a
session keeps a snapshot of the backend state at the end of the part of the prompt that the next
turn's rendering shares (up to `<SPECIAL_11>Assistant\\n`, before `<think>`), restores it next
turn and feeds only what is new: the answer, the end of turn and the new user message.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

from . import chat as chatfmt
from .generation import Outcome, StopCutter, generate_steps, partial_suffix
from .sampling import SamplingParams
from .template import history_prefix, probe, render_prompt

# Sampling settings a session keeps; any other SamplingParams field is passed per call.
_SESSION_SAMPLING = ("temperature", "top_p", "top_k", "min_p", "repeat_penalty", "seed")

STATE_FORMAT = "edgenano.chat_state"
STATE_VERSION = 1


# The JSON types each saved setting may have (None where the session allows it).
_NUM, _INT = (int, float), (int,)
_SETTING_TYPES = {
    "thinking": (bool,), "thinking_budget": _INT, "tools": (list, type(None)), "grace": _INT,
    "close_text": (str,), "cut_prefix": (str,), "temperature": (*_NUM, type(None)),
    "top_p": (*_NUM, type(None)), "top_k": _INT, "min_p": _NUM, "repeat_penalty": _NUM,
    "seed": (int, type(None)), "template_kwargs": (dict,),
}


def _checked_settings(saved: dict) -> dict:
    """The saved settings a session keeps, each of its type (TypeError naming one that is not);
    their values are checked where the session uses them."""
    out = {}
    for k, v in saved.items():
        if k not in _SETTING_TYPES:
            continue
        ok = _SETTING_TYPES[k]
        if not isinstance(v, ok) or (isinstance(v, bool) and bool not in ok):
            raise TypeError(f"setting {k!r} is {v!r:.40}, not "
                            f"{' or '.join(t.__name__ for t in ok)}")
        out[k] = v
    return out


@dataclass
class Reply:
    reasoning: str | None
    content: str
    tool_calls: list[dict]
    finish_reason: str
    usage: dict
    text: str  # everything generated, as generated
    steps: list = field(default_factory=list, repr=False)  # generation.Step per token


@dataclass
class Turn:
    """What one turn asks of the generation, beyond the session's settings."""

    max_tokens: int | None = 1024  # None: up to the end of the context
    budget: int = -1
    stop: Sequence[str] = ()
    outcome: Outcome | None = None
    sampling: dict = field(default_factory=dict)
    constraint: object = None  # a grammar over the answer (edgenano.grammar), or None
    logprobs: int | None = None  # top alternatives to report per token (None: no logprobs)


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
    template_kwargs: dict = field(default_factory=dict)  # more chat_template_kwargs
    messages: list[dict] = field(default_factory=list)
    _snap: _Snapshot | None = field(default=None, repr=False)
    # The snapshot the last turn started from: when a reply ends inside its reasoning, the history
    # renders that turn differently from what was fed, `_snap` no longer prefixes the new prompt,
    # and this one bounds the re-prefill to that turn instead of the whole conversation.
    _base: _Snapshot | None = field(default=None, repr=False)
    prefill_tokens: int = 0  # tokens fed into the backend by the last send (for tests, stats)
    last_prompt: str = ""  # the prompt the last turn rendered, generation prompt included

    def __post_init__(self):
        if self.system is not None and not self.messages:
            self.messages = [{"role": "system", "content": self.system}]
            word = chatfmt.thinking_switch(self.system)[0]
            self.thinking = self.thinking if word is None else word
        chatfmt.BudgetRule(self.thinking_budget, self.grace)  # validates

    # -- the turn ---------------------------------------------------------------------------
    def send(self, text: str, *, stream: bool = False, max_tokens: int | None = 1024,
             thinking: bool | None = None, thinking_budget: int | None = None,
             stop=(), outcome: Outcome | None = None, **sampling):
        """Send a user message. Returns a Reply, or with stream=True a generator of
        StreamEvents (reasoning and answer pieces) whose Reply is `session.last_reply` after.

        The mode of the turn: budget 0 is off; else a `/think` or `/no_think` word in `text`
        (which also sets `self.thinking` from then on); else `thinking`; else `self.thinking`.
        A turn that does not finish (the stream closed early, Ctrl-C, an error) leaves the
        session as it was before it."""
        if not isinstance(text, str):
            raise TypeError(f"send() takes the user's text as a str, got {type(text).__name__}")
        if max_tokens is not None and (isinstance(max_tokens, bool) or not isinstance(
                max_tokens, int) or max_tokens < 1):
            raise ValueError(f"max_tokens must be an int >= 1 or None, got {max_tokens!r}")
        budget = self.thinking_budget if thinking_budget is None else thinking_budget
        chatfmt.BudgetRule(budget, self.grace)  # validates, before a stream starts
        word = chatfmt.thinking_switch(text)[0]
        on = False if budget == 0 else (word if word is not None else (
            self.thinking if thinking is None else thinking))
        msgs = self.messages + [{"role": "user", "content": text}]
        gen = self._turn(msgs, on, word, Turn(max_tokens=max_tokens, budget=budget, stop=stop,
                                                outcome=outcome, sampling=sampling))
        if stream:
            return gen
        for _ in gen:
            pass
        return self.last_reply

    def respond(self, messages: list[dict], *, thinking: bool, stream: bool = False,
                turn: Turn | None = None):
        """Continue the conversation `messages` (already normalized; it may end with a user,
        tool or assistant message) without changing `self.messages`' meaning: they become the
        history. Used by create_chat_completion."""
        gen = self._turn(list(messages), thinking, None, turn or Turn(), append=False)
        if stream:
            return gen
        for _ in gen:
            pass
        return self.last_reply

    def _turn(self, msgs: list[dict], on: bool, word: bool | None, turn: Turn,
              append: bool = True) -> Iterator[StreamEvent]:
        before = (self._snap, self._base, self.thinking)
        done = False
        try:
            prompt, ids, n_shared = self._render(msgs, on)
            self.last_prompt = prompt.text
            state, logits = self._prefill(ids, n_shared)
            opened = prompt.thinking
            params = self._sampling(opened, turn.sampling)
            rule = chatfmt.BudgetRule(turn.budget, self.grace, self.close_text, self.cut_prefix)
            out = turn.outcome if turn.outcome is not None else Outcome()
            splitter, cutter = _ReasoningSplitter(opened), StopCutter(turn.stop)
            pieces, steps = [], []
            room = self.model.n_ctx - len(ids)
            n_max = room if turn.max_tokens is None else min(turn.max_tokens, room)
            gen = generate_steps(self.model, state, logits, max_tokens=n_max,
                                 sampling=params, stop_ids=self.model.stop_ids,
                                 thinking=opened, budget=rule, history=ids, outcome=out,
                                 constraint=turn.constraint, logprobs=turn.logprobs)
            for step in gen:
                pieces.append(step.text)
                steps.append(step)
                for ev in splitter.feed(step.text):
                    if ev.reasoning:
                        yield ev
                        continue
                    safe = cutter.feed(ev.text)
                    if safe:
                        yield StreamEvent(safe, False)
                if cutter.hit:
                    out.finish_reason = "stop"
                    gen.close()
                    break
            if not cutter.hit:
                for ev in splitter.flush():
                    if ev.reasoning:
                        yield ev
                    elif safe := cutter.feed(ev.text):
                        yield StreamEvent(safe, False)
                if rest := cutter.flush():
                    yield StreamEvent(rest, False)
            self._finish(msgs, "".join(pieces), opened, len(ids), out, cutter, steps, append)
            if word is not None:
                self.thinking = word
            done = True
        finally:
            if not done:
                self._snap, self._base, self.thinking = before

    def _render(self, msgs: list[dict], thinking: bool):
        """(the prompt, its ids, how many of them the next turn's prompt will share)."""
        m = self.model
        template = m.chat_template
        view = msgs if probe(template).reads_switches else chatfmt.strip_switches(msgs)
        kw = dict(self.template_kwargs)
        prompt = render_prompt(template, view, thinking=thinking, tools=self.tools, **kw)
        ids = m.tokenize(prompt.text)
        nxt = m.tokenize(history_prefix(template, view, thinking=thinking, tools=self.tools,
                                        **kw))
        n = 0
        for a, b in zip(ids, nxt):
            if a != b:
                break
            n += 1
        return prompt, ids, min(n, len(ids) - 1)

    def _prefill(self, ids: list[int], n_shared: int):
        """Restore the latest snapshot the new prompt extends, feed the rest up to the shared
        prefix, snapshot there, then feed the generation prompt."""
        snap = next((x for x in (self._snap, self._base) if x is not None
                     and len(x.tokens) < len(ids) and ids[: len(x.tokens)] == x.tokens), None)
        if snap is not None:
            state, done = snap.state.copy(), len(snap.tokens)
        else:
            state, done = self.model.new_state(), 0
        self._base = snap
        logits = None
        if n_shared > done:
            logits = self.model.eval(state, ids[done:n_shared])
            self._snap = _Snapshot(state.copy(), list(ids[:n_shared]))
        elif snap is not None and done == n_shared:
            self._snap = snap
        if len(ids) > max(done, n_shared):
            logits = self.model.eval(state, ids[max(done, n_shared):])
        self.prefill_tokens = len(ids) - done
        return state, logits

    def _sampling(self, thinking: bool, overrides: dict) -> SamplingParams:
        def pick(name, default):
            v = overrides.get(name)
            return getattr(self, name) if v is None and getattr(self, name) is not None else (
                default if v is None else v)

        extra = {k: v for k, v in overrides.items() if k not in _SESSION_SAMPLING
                 and v is not None}
        temp = pick("temperature", 0.6 if thinking else 0.0)
        top_p = pick("top_p", 0.95 if thinking else 1.0)
        return SamplingParams(temperature=temp, top_p=top_p, top_k=pick("top_k", 0),
                              min_p=pick("min_p", 0.0),
                              repeat_penalty=pick("repeat_penalty", 1.0), seed=pick("seed", None),
                              **extra)

    def _finish(self, msgs: list[dict], text: str, thinking: bool, n_prompt: int,
                out: Outcome, cutter: StopCutter, steps: list, append: bool) -> None:
        reasoning, answer = chatfmt.split_reasoning(text, thinking)
        if cutter.hit:
            answer = cutter.text.strip()
        # tool calls only where tools were offered (tool_choice 'none' offers none)
        content, calls = chatfmt.parse_tool_calls(answer) if self.tools else (answer, [])
        n_reason = out.reasoning_tokens if thinking or reasoning is not None else 0
        usage = {"prompt_tokens": n_prompt, "completion_tokens": out.completion_tokens,
                 "total_tokens": n_prompt + out.completion_tokens,
                 "reasoning_tokens": n_reason,
                 "completion_tokens_details": {"reasoning_tokens": n_reason}}
        finish = "tool_calls" if calls else out.finish_reason
        self.last_reply = Reply(reasoning, content, calls, finish, usage, text, steps)
        msg = {"role": "assistant", "content": content}
        if reasoning:
            msg["reasoning_content"] = reasoning
        if calls:
            msg["tool_calls"] = calls
        self.messages = msgs + [msg] if append else self.messages

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

    _SETTINGS = tuple(_SETTING_TYPES)

    def save(self, path) -> None:
        """Write the session (messages, settings, state, tokens) to a GGUF state file."""
        from . import state_file

        m = self.model
        snap = self._snap or _Snapshot(m.new_state(), [])
        state_file.save(path, fingerprint=m.fingerprint, backend=m.backend_name,
                        tokens=snap.tokens, messages=self.messages,
                        settings={k: getattr(self, k) for k in self._SETTINGS},
                        tensors=m.export_state(snap.state))

    @classmethod
    def load(cls, path, model) -> ChatSession:
        """A session saved by `save`, continued on `model` (which must be the same model). A file
        that does not fit is a StateFileError saying what is wrong."""
        from . import state_file
        from .errors import StateFileError

        d = state_file.load(path, fingerprint=model.fingerprint, backend=model.backend_name)
        try:
            settings = _checked_settings(d["settings"])
            s = cls(model, **settings)
            s._sampling(True, {}), s._sampling(False, {})  # the saved values are in range
            if d["messages"]:
                chatfmt.normalize_messages(d["messages"])
        except (TypeError, ValueError) as e:
            raise StateFileError(f"{path}: {e}; {state_file.DAMAGED}") from None
        s.messages = d["messages"]
        if d["tokens"]:
            try:
                state = model.import_state(d["tensors"], d["tokens"])
            except (TypeError, ValueError) as e:
                raise StateFileError(f"{path}: {e}") from None
            s._snap = _Snapshot(state, d["tokens"])
        return s

    def reset(self) -> None:
        """Forget the conversation (all but the system message) and its snapshots; keep every
        setting, the current mode included."""
        self.messages = [dict(m) for m in self.messages[:1] if m.get("role") == "system"]
        self._snap = self._base = None
        self.last_prompt, self.prefill_tokens = "", 0

    def fork(self) -> ChatSession:
        other = ChatSession(self.model, system=None, thinking=self.thinking,
                            thinking_budget=self.thinking_budget, tools=self.tools,
                            grace=self.grace, close_text=self.close_text,
                            cut_prefix=self.cut_prefix, temperature=self.temperature,
                            top_p=self.top_p, top_k=self.top_k, min_p=self.min_p,
                            repeat_penalty=self.repeat_penalty, seed=self.seed,
                            template_kwargs=dict(self.template_kwargs))
        other.restore(self.snapshot())
        return other


class _ReasoningSplitter:
    """Turns the generated text stream into reasoning and answer events, hiding `</think>` and
    the blank lines around the answer even when they arrive split across tokens. A reply to a
    prompt that did not open reasoning may open it itself (`<think>` first): split it too."""

    def __init__(self, thinking: bool):
        self.reasoning = thinking
        self.buf = ""
        self.strip_lead = True
        self.lead = not thinking  # still looking for a `<think>` the model opens itself

    def feed(self, piece: str) -> Iterator[StreamEvent]:
        if self.lead:
            self.buf += piece
            head = self.buf.lstrip()
            if head and chatfmt.THINK_OPEN.startswith(head):
                return  # could still become `<think>`
            self.lead, self.buf = False, ""
            if head.startswith(chatfmt.THINK_OPEN):
                self.reasoning = True
                piece = head[len(chatfmt.THINK_OPEN):].lstrip("\n")
            else:
                piece = head
        if not self.reasoning:
            if self.strip_lead:
                piece = piece.lstrip()
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
        keep = partial_suffix(self.buf, (close,))
        emit, self.buf = self.buf[: len(self.buf) - keep], self.buf[len(self.buf) - keep:]
        if emit:
            yield StreamEvent(emit, True)

    def flush(self) -> Iterator[StreamEvent]:
        if self.buf:
            text = self.buf.lstrip() if self.lead or not self.reasoning else self.buf
            self.buf, self.lead = "", False
            if text:
                yield StreamEvent(text, self.reasoning)
