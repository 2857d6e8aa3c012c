"""The chat format of Nemotron-Nano-9B-v2 (SPEC section 2): template rendering as Hugging Face
does it, the /think switch, the thinking-budget rule, and parsing a reply into reasoning, answer
and tool calls."""

from __future__ import annotations

import json
import re
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from functools import lru_cache

THINK_OPEN, THINK_CLOSE = "<think>", "</think>"

# `/think` or `/no_think` as a word of its own: not part of `</think>`, a path (`a/think`) or a
# longer word (`/thinking`). The reference template tests substrings instead, so `</think>` in a
# user's text would switch reasoning on there; ours does not.
_SWITCH = re.compile(r"(?<![\w<])/(no_)?think(?![\w-])")


def thinking_switch(text: str) -> tuple[bool | None, str]:
    """(the last switch in `text`: True for /think, False for /no_think, None if none; text
    with the switches removed)."""
    found = list(_SWITCH.finditer(text))
    if not found:
        return None, text
    on = found[-1].group(1) is None
    cleaned = _SWITCH.sub("", text)
    cleaned = re.sub(r"[ \t]{2,}", " ", cleaned).strip()
    return on, cleaned


def resolve_thinking(messages: list[dict], default: bool = True) -> tuple[bool, list[dict]]:
    """Apply the switches in system and user messages (the last one wins) over `default`; return
    the decision and the messages with the switches removed."""
    thinking = default
    out = []
    for m in messages:
        if m.get("role") in ("system", "user") and isinstance(m.get("content"), str):
            on, text = thinking_switch(m["content"])
            if on is not None:
                thinking = on
            m = dict(m, content=text)
        out.append(m)
    return thinking, out


def _tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
    return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators,
                      sort_keys=sort_keys)


def _raise(message):
    from jinja2.exceptions import TemplateError

    raise TemplateError(message)


@lru_cache(maxsize=8)
def _compile(template: str):
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    # Hugging Face's settings for chat templates.
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                        extensions=["jinja2.ext.loopcontrols"])
    env.filters["tojson"] = _tojson
    env.globals["raise_exception"] = _raise
    env.globals["strftime_now"] = lambda fmt: datetime.now().strftime(fmt)
    return env.from_string(template)


def render(template: str, messages: list[dict], *, add_generation_prompt: bool = True,
           enable_thinking: bool | None = None, tools: list | None = None, **extra) -> str:
    """Render a chat template exactly as transformers' apply_chat_template(tokenize=False)."""
    kw = dict(extra)
    if enable_thinking is not None:
        kw["enable_thinking"] = enable_thinking
    return _compile(template).render(messages=messages, add_generation_prompt=add_generation_prompt,
                                     tools=tools, **kw)


# -- thinking budget ---------------------------------------------------------------------------

@dataclass
class BudgetRule:
    """NVIDIA's rule for 9B-v2: after `budget` reasoning tokens, close the reasoning at the next
    newline; if none comes within `grace` tokens, close it at budget + grace. Closing forces
    `close_text` (preceded by `cut_prefix` when the last reasoning token did not end a line).
    budget -1 = unlimited; 0 = reasoning off (handled by the prompt, never by this rule)."""

    budget: int = -1
    grace: int = 500
    close_text: str = "</think>\n\n"
    cut_prefix: str = ".\n"

    def __post_init__(self):
        if self.budget < -1 or self.grace < 0:
            raise ValueError("thinking_budget must be -1 (unlimited), 0 (off) or > 0; grace >= 0")


@dataclass
class BudgetTracker:
    """Follows generated text token by token; says when and what to force."""

    rule: BudgetRule
    reasoning_tokens: int = 0
    closed: bool = False
    forced: bool = False
    _tail: str = field(default="", repr=False)

    def observe(self, piece: str) -> str | None:
        """Feed one generated token's text (while reasoning). Returns the text to force now, or
        None to go on generating."""
        if self.closed:
            return None
        self._tail = (self._tail + piece)[-len(THINK_CLOSE) - 8:]
        if THINK_CLOSE in self._tail:  # the model closed its reasoning itself
            self.closed = True
            return None
        self.reasoning_tokens += 1
        b = self.rule.budget
        if b < 0:
            return None
        ends_line = piece.endswith("\n")
        n, rule = self.reasoning_tokens, self.rule
        if n >= b and (ends_line or n >= b + rule.grace):
            self.closed = self.forced = True
            return rule.close_text if ends_line else rule.cut_prefix + rule.close_text
        return None


# -- replies -----------------------------------------------------------------------------------

_TOOLCALL = re.compile(r"<TOOLCALL>(.*?)</TOOLCALL>", re.S)


def split_reasoning(text: str, thinking: bool) -> tuple[str | None, str]:
    """(reasoning, answer) of generated text. With reasoning on the prompt already opened
    `<think>`, so the text starts inside it; an unclosed trace is all reasoning."""
    if not thinking:
        return None, text.strip()
    if THINK_CLOSE not in text:
        return text.strip(), ""
    reasoning, answer = text.split(THINK_CLOSE, 1)
    return reasoning.strip(), answer.strip()


def parse_tool_calls(answer: str) -> tuple[str, list[dict]]:
    """Strip `<TOOLCALL>[...]</TOOLCALL>` from an answer into OpenAI-shaped tool calls. Malformed
    JSON is left in the text (the caller sees what the model wrote)."""
    calls: list[dict] = []

    def take(m: re.Match) -> str:
        try:
            items = json.loads(m.group(1))
        except json.JSONDecodeError:
            return m.group(0)
        for it in items if isinstance(items, list) else [items]:
            if not isinstance(it, dict) or "name" not in it:
                continue
            args = it.get("arguments", {})
            calls.append({
                "id": f"call_{uuid.uuid4().hex[:24]}",
                "type": "function",
                "function": {"name": it["name"],
                             "arguments": args if isinstance(args, str) else json.dumps(args)},
            })
        return ""

    text = _TOOLCALL.sub(take, answer).strip()
    return text, calls
