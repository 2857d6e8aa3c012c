"""Chat templates: render them as transformers does, and learn by rendering (never by reading
their text) what each one does with reasoning, so that every way of choosing the mode gives a
prompt that really opens or closes `<think>` (SPEC section 2).

Three families are known to differ: the template published with 9B-v2 ignores `enable_thinking`
and tests `/think` / `/no_think` as substrings of system and user text (deleting them); Nemotron 3
Nano's ChatML one reads `enable_thinking` and leaves message text alone; edgenano's own (the tiny
reasoner's) reads both. `probe` finds which behaviour a template has; `render_prompt` asks it for
a mode and, where the template cannot be asked, puts the probed generation prompt of that mode in
place of the other one.
"""

from __future__ import annotations

import json
import os
import warnings
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache

from .errors import ChatTemplateError

THINK_OPEN, THINK_CLOSE = "<think>", "</think>"
ROLES = ("system", "user", "assistant", "tool")


def _tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
    return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators,
                      sort_keys=sort_keys)


def _raise(message):
    from jinja2.exceptions import TemplateError

    raise TemplateError(message)


@lru_cache(maxsize=16)
def _compile(template: str):
    from jinja2.exceptions import TemplateSyntaxError
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    # Hugging Face's settings for chat templates.
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                        extensions=["jinja2.ext.loopcontrols"])
    env.filters["tojson"] = _tojson
    env.globals["raise_exception"] = _raise
    env.globals["strftime_now"] = lambda fmt: datetime.now().strftime(fmt)
    try:
        return env.from_string(template)
    except TemplateSyntaxError as e:
        raise ChatTemplateError(f"the chat template does not parse: {e}") from None


def render(template: str, messages: list[dict], *, add_generation_prompt: bool = True,
           enable_thinking: bool | None = None, tools: list | None = None, **extra) -> str:
    """Render a chat template exactly as transformers' apply_chat_template(tokenize=False)."""
    from jinja2.exceptions import TemplateError

    if not isinstance(template, str) or not template:
        raise ChatTemplateError("this model has no chat template (tokenizer.chat_template); "
                                "pass chat_template= to Model, or use create_completion")
    kw = dict(extra)
    if enable_thinking is not None:
        kw["enable_thinking"] = enable_thinking
    try:
        return _compile(template).render(messages=messages,
                                         add_generation_prompt=add_generation_prompt,
                                         tools=tools or None, **kw)
    except TemplateError as e:
        raise ChatTemplateError(f"the chat template cannot render these messages: {e}") from None
    except (TypeError, KeyError, IndexError, AttributeError, ValueError) as e:
        raise ChatTemplateError(f"the chat template failed on these messages "
                                f"({type(e).__name__}: {e})") from None


def opens_reasoning(prompt: str) -> bool:
    """True when `prompt` ends inside an open `<think>`: the model's next text is reasoning."""
    return prompt.rfind(THINK_OPEN) > prompt.rfind(THINK_CLOSE)


@dataclass(frozen=True)
class TemplateProfile:
    """What a template does with reasoning, found by rendering a one-message conversation."""

    reads_enable_thinking: bool  # enable_thinking=False changes the generation prompt
    reads_switches: bool         # "/no_think" in a user message changes it
    strips_switches: bool        # ... and the word is deleted from the rendered text
    default_on: bool             # with neither, the prompt opens `<think>`
    on_prompt: str | None        # the generation prompt that opens reasoning
    off_prompt: str | None       # the one that closes it (None: the template has no such mode)
    continues_final: bool        # a final assistant message is continued, not closed

    @property
    def can_switch(self) -> bool:
        return self.on_prompt is not None and self.off_prompt is not None


_PROBE_TEXT = "Hi"
_PREFILL = "\x02prefill"


@lru_cache(maxsize=16)
def probe(template: str) -> TemplateProfile:
    """Learn a template's behaviour by rendering it (cached per template text)."""

    def gen_prompt(content: str, **kw) -> str:
        msgs = [{"role": "user", "content": content}]
        head = render(template, msgs, add_generation_prompt=False, **kw)
        full = render(template, msgs, add_generation_prompt=True, **kw)
        return full[len(os.path.commonprefix([head, full])):]

    by_flag = {v: gen_prompt(_PROBE_TEXT, enable_thinking=v) for v in (True, False)}
    by_word = {v: gen_prompt(f"{_PROBE_TEXT} {'/think' if v else '/no_think'}")
               for v in (True, False)}
    default = gen_prompt(_PROBE_TEXT)
    on = off = None
    for cand in (*by_flag.values(), *by_word.values(), default):
        if opens_reasoning(cand):
            on = on or cand
        else:
            off = off or cand
    worded = render(template, [{"role": "user", "content": f"{_PROBE_TEXT} /no_think"}],
                    add_generation_prompt=True)
    prefill = render(template, [{"role": "user", "content": _PROBE_TEXT},
                                {"role": "assistant", "content": _PREFILL}],
                     add_generation_prompt=True)
    return TemplateProfile(
        reads_enable_thinking=by_flag[True] != by_flag[False],
        reads_switches=by_word[True] != by_word[False],
        strips_switches="/no_think" not in worded,
        default_on=opens_reasoning(default),
        on_prompt=on, off_prompt=off,
        continues_final=prefill.rstrip().endswith(_PREFILL))


@dataclass(frozen=True)
class Prompt:
    """A rendered prompt and what it really asks of the model."""

    text: str
    thinking: bool      # the prompt ends inside `<think>`: the reply starts as reasoning
    enforced: bool      # edgenano had to replace the template's generation prompt


def _swap_generation_prompt(text: str, want_on: bool, prof: TemplateProfile,
                            tail: str) -> str | None:
    """Put the probed generation prompt of the wanted mode in place of the other one, which
    must be the last thing in `text` before `tail` (a continued final message)."""
    have, want = (prof.off_prompt, prof.on_prompt) if want_on else (prof.on_prompt,
                                                                    prof.off_prompt)
    i = text.rfind(have)
    if i < 0 or text[i + len(have):] != tail:
        return None
    return text[:i] + want + tail


def render_prompt(template: str, messages: list[dict], *, thinking: bool,
                  tools: list | None = None, **extra) -> Prompt:
    """Render `messages` for generation with reasoning on or off, whatever the template reads.

    1. ask the template (enable_thinking, and the messages as given); 2. if it still renders the
    other mode, swap in the probed generation prompt of the wanted one. A final assistant message
    is continued (HF's continue_final_message where the template does not do it itself)."""
    prof = probe(template)
    continue_final = bool(messages) and messages[-1].get("role") == "assistant"
    tail = ""
    if continue_final and not prof.continues_final:
        text = _continue_final(template, messages, thinking=thinking, tools=tools, **extra)
    else:
        text = render(template, messages, add_generation_prompt=True, enable_thinking=thinking,
                      tools=tools, **extra)
        if continue_final:
            tail = (messages[-1].get("content") or "").strip()
            tail = tail if text.endswith(tail) else None
    enforced = False
    if opens_reasoning(text) != thinking and prof.can_switch and tail is not None:
        swapped = _swap_generation_prompt(text, thinking, prof, tail)
        if swapped is not None:
            text, enforced = swapped, True
    if opens_reasoning(text) != thinking and prof.can_switch and not continue_final:
        warnings.warn(f"the chat template would not render reasoning "
                      f"{'on' if thinking else 'off'}; the reply is split by what it renders",
                      stacklevel=3)
    return Prompt(text, opens_reasoning(text), enforced)


def _continue_final(template: str, messages: list[dict], **kw) -> str:
    """transformers' continue_final_message: render the conversation closed and cut it right
    after the final message's text, so the model continues that text."""
    final = messages[-1].get("content") or ""
    text = render(template, messages, add_generation_prompt=False, **kw)
    key = final.strip()
    i = text.rfind(key) if key else -1
    if i < 0:
        raise ChatTemplateError("cannot continue the final assistant message: the template "
                                "does not render its text verbatim")
    return text[: i + len(key)]


def history_prefix(template: str, messages: list[dict], *, thinking: bool,
                   tools: list | None = None, **extra) -> str:
    """The text the *next* turn's prompt will begin with once a reply to `messages` is in the
    history: the conversation rendered with an assistant turn and a user turn after it, cut
    where the assistant's text would start."""
    marker = "\x00"
    msgs = messages + [{"role": "assistant", "content": marker}, {"role": "user", "content": "."}]
    text = render(template, msgs, add_generation_prompt=False, enable_thinking=thinking,
                  tools=tools, **extra)
    i = text.find(marker)
    return text[:i] if i >= 0 else ""
