"""The tiny reasoner's conversations as the evaluation renders them: the prompt through edgenano's
chat template, and the text that closes a trace (train/data.py builds the training data on these).
"""

from __future__ import annotations

from collections.abc import Callable

from ..template import render

CLOSE = "</think>\n\n"      # after a trace that ends a line
CUT_PREFIX = ".\n"          # forced first when the cut falls mid-line

Encode = Callable[[str], list[int]]


def render_prompt(messages: list[dict], template: str | None = None) -> str:
    """The prompt text up to and including the generation prompt, as transformers renders it."""
    from ..models import chat_template

    return render(template or chat_template(), messages, add_generation_prompt=True)


def hf_codec(tok) -> tuple[Encode, Callable[[int], str]]:
    """(encode, decode one token) for a `tokenizers.Tokenizer`."""
    return (lambda s: tok.encode(s, add_special_tokens=False).ids,
            lambda i: tok.decode([i], skip_special_tokens=False))
