"""The chat format of Nemotron-Nano-9B-v2 (SPEC section 2): the /think switch as edgenano reads
it (whole words), messages as templates expect them, the thinking-budget rule, and parsing a reply
into reasoning, answer and tool calls. Rendering and probing templates: edgenano.template."""

from __future__ import annotations

import json
import re
import uuid
from dataclasses import dataclass, field

from .template import THINK_CLOSE, THINK_OPEN, render  # noqa: F401  (re-exported)

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


def message_switch(message: dict) -> bool | None:
    """The switch a system or user message carries (whole words only), or None."""
    if message.get("role") in ("system", "user") and isinstance(message.get("content"), str):
        return thinking_switch(message["content"])[0]
    return None


def requested_thinking(messages: list[dict], *, explicit: bool | None = None,
                       default: bool = True) -> bool:
    """The mode a stateless request asks for: a switch in the last user message, else
    `explicit` (enable_thinking), else the last switch in earlier messages, else `default`."""
    users = [i for i, m in enumerate(messages) if m.get("role") == "user"]
    if users and (on := message_switch(messages[users[-1]])) is not None:
        return on
    if explicit is not None:
        return explicit
    for m in reversed(messages):
        if (on := message_switch(m)) is not None:
            return on
    return default


def strip_switches(messages: list[dict]) -> list[dict]:
    """The messages with edgenano's switch words removed from system and user text (for
    templates that do not read them, so the model never reads a command as text)."""
    out = []
    for m in messages:
        if m.get("role") in ("system", "user") and isinstance(m.get("content"), str):
            m = dict(m, content=thinking_switch(m["content"])[1])
        out.append(m)
    return out


def normalize_messages(messages) -> list[dict]:
    """OpenAI-shaped messages as chat templates expect them: `developer` is `system`, content
    parts are joined into text, tool-call arguments are objects (transformers' convention; JSON
    strings are parsed), `reasoning` is `reasoning_content`. Refuses what no template can take."""
    if not isinstance(messages, (list, tuple)) or not messages:
        raise ValueError("messages must be a non-empty list of {'role': ..., 'content': ...}")
    out = []
    for i, m in enumerate(messages):
        if not isinstance(m, dict):
            raise TypeError(f"messages[{i}] must be a dict, got {type(m).__name__}")
        role = m.get("role")
        role = "system" if role == "developer" else role
        if role not in ("system", "user", "assistant", "tool"):
            raise ValueError(f"messages[{i}] has role {m.get('role')!r}; use system, developer, "
                             "user, assistant or tool")
        m = dict(m, role=role, content=_text(m.get("content"), i))
        if "reasoning" in m:
            r = m.pop("reasoning")
            m.setdefault("reasoning_content", r)
        if m.get("tool_calls"):
            m["tool_calls"] = [_call_for_template(c) for c in m["tool_calls"]]
        out.append(m)
    return out


def _text(content, i: int) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = []
        for p in content:
            if isinstance(p, str):
                parts.append(p)
            elif isinstance(p, dict) and p.get("type") == "text":
                parts.append(str(p.get("text", "")))
            else:
                kind = p.get("type") if isinstance(p, dict) else type(p).__name__
                raise ValueError(f"messages[{i}]: content part {kind!r} is not supported "
                                 "(text only)")
        return "".join(parts)
    raise TypeError(f"messages[{i}]['content'] must be a string or a list of text parts")


def _call_for_template(call: dict) -> dict:
    fn = dict(call.get("function", call))
    args = fn.get("arguments")
    if isinstance(args, str):
        try:
            parsed = json.loads(args) if args.strip() else {}
        except json.JSONDecodeError:
            parsed = None
        if isinstance(parsed, dict):
            fn["arguments"] = parsed
    return {**call, "function": fn} if "function" in call else fn


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
        for name, lo in (("budget", -1), ("grace", 0)):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < lo:
                raise ValueError("thinking_budget must be an int: -1 (unlimited), 0 (off) or > 0;"
                                 f" grace an int >= 0 (got {name}={v!r})")


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

# The two tool-call syntaxes of the family: 9B-v2's JSON list and Nemotron 3 Nano's XML form.
_TOOLCALL = re.compile(r"<TOOLCALL>(.*?)</TOOLCALL>", re.S)
_XML_CALL = re.compile(r"<tool_call>\s*<function=([^>\n]+)>(.*?)</function>\s*</tool_call>", re.S)
_XML_PARAM = re.compile(r"<parameter=([^>\n]+)>\n?(.*?)\n?</parameter>", re.S)
TOOL_CALL_OPENERS = ("<TOOLCALL>", "<tool_call>")


def split_reasoning(text: str, thinking: bool) -> tuple[str | None, str]:
    """(reasoning, answer) of generated text. With `thinking` the prompt opened `<think>`, so
    the text starts inside it (an unclosed trace is all reasoning); without, a reply that opens
    `<think>` itself is split the same way."""
    if not thinking:
        stripped = text.lstrip()
        if not stripped.startswith(THINK_OPEN):
            return None, text.strip()
        text = stripped[len(THINK_OPEN):]
    if THINK_CLOSE not in text:
        return text.strip(), ""
    reasoning, answer = text.split(THINK_CLOSE, 1)
    return reasoning.strip(), answer.strip()


def _call(name: str, args) -> dict:
    return {"id": f"call_{uuid.uuid4().hex[:24]}", "type": "function",
            "function": {"name": name,
                         "arguments": args if isinstance(args, str) else json.dumps(args)}}


def _xml_value(v: str):
    try:
        return json.loads(v)
    except json.JSONDecodeError:
        return v


def parse_tool_calls(answer: str) -> tuple[str, list[dict]]:
    """Strip tool calls (`<TOOLCALL>[...]</TOOLCALL>` or `<tool_call><function=...>`) from an
    answer into OpenAI-shaped tool calls. Malformed ones are left in the text (the caller sees
    what the model wrote)."""
    calls: list[dict] = []

    def take_json(m: re.Match) -> str:
        try:
            items = json.loads(m.group(1))
        except json.JSONDecodeError:
            return m.group(0)
        items = items if isinstance(items, list) else [items]
        good = [it for it in items if isinstance(it, dict) and isinstance(it.get("name"), str)]
        if not good:
            return m.group(0)
        calls.extend(_call(it["name"], it.get("arguments", {})) for it in good)
        return ""

    def take_xml(m: re.Match) -> str:
        args = {k.strip(): _xml_value(v) for k, v in _XML_PARAM.findall(m.group(2))}
        calls.append(_call(m.group(1).strip(), args))
        return ""

    text = _XML_CALL.sub(take_xml, _TOOLCALL.sub(take_json, answer)).strip()
    return text, calls
