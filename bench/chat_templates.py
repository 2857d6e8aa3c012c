"""The reasoning switch on every chat template variant, as a table: for each way of choosing the
mode, the tail of the prompt edgenano renders and how the reply is split. The published
templates are read from llama-cpp-python 0.3.36's sdist (never committed); the two derived
variants reproduce the other published revisions' layouts (SPEC section 2).

    python bench/chat_templates.py [--sdist llama_cpp_python-0.3.36.tar.gz]
"""

from __future__ import annotations

import argparse
import tarfile
from pathlib import Path

SDIST = "llama_cpp_python-0.3.36.tar.gz"
PUBLISHED = {
    "nano-v2": "vendor/llama.cpp/models/templates/NVIDIA-Nemotron-Nano-v2.jinja",
    "nemotron3-nano": "vendor/llama.cpp/models/templates/NVIDIA-Nemotron-3-Nano-30B-A3B-BF16.jinja",
}
VARIANTS = ["own", "nano-v2", "nano-v2-blank-lines", "nano-v2-model-card", "nemotron3-nano"]
# A derived variant: (published template, [(text, replacement)]).
_DERIVED = {
    "nano-v2-blank-lines": ("nano-v2", [("'\n<SPECIAL_12>\n'", "'\n<SPECIAL_12>\n\n'"),
                                        ("'<think>\n'", "'<think>\n\n'")]),
    "nano-v2-model-card": ("nano-v2", [("{{- '\n\n' -}}\n{%- set messages = messages[1:]",
                                        "{{- '\n' -}}\n{%- set messages = messages[1:]")]),
}


def read_published(sdist: str | Path, name: str) -> str:
    with tarfile.open(sdist) as tar:
        member = f"{Path(sdist).name[: -len('.tar.gz')]}/{PUBLISHED[name]}"
        return tar.extractfile(member).read().decode()


def variant(name: str, own: str, published) -> str:
    """The text of a variant; `published(name)` reads a published template."""
    if name == "own":
        return own
    if name in PUBLISHED:
        return published(name)
    base, edits = _DERIVED[name]
    text = published(base)
    for old, new in edits:
        if old not in text:
            raise ValueError(f"{name}: the published template's layout changed ({old!r})")
        text = text.replace(old, new)
    return text


WAYS = [  # label, session settings, send() arguments, message
    ("on (default)", {}, {}, "What is 21 + 34?"),
    ("off by session", {"thinking": False}, {}, "What is 21 + 34?"),
    ("off by message", {}, {}, "What is 21 + 34? /no_think"),
    ("budget 0", {"thinking_budget": 0}, {}, "What is 21 + 34?"),
    ("off, </think> in text", {"thinking": False}, {}, "What is </think> for?"),
]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sdist", default=str(Path.home() / ".cache/edgenano/sdist" / SDIST))
    p.add_argument("-n", "--max-tokens", type=int, default=48)
    a = p.parse_args(argv)
    from edgenano import Model

    base = Model(n_ctx=1024)
    for name in VARIANTS:
        tmpl = variant(name, base.chat_template, lambda n: read_published(a.sdist, n))
        m = Model(base.path, n_ctx=1024, chat_template=tmpl)
        print(f"## {name}")
        print("| way | prompt tail | reasoning | content |\n|---|---|---|---|")
        for label, settings, call, text in WAYS:
            s = m.chat(temperature=0.0, **settings)
            r = s.send(text, max_tokens=a.max_tokens, **call)
            tail = s.last_prompt[-30:].replace("\n", "\\n")
            reasoning = "None" if r.reasoning is None else f"{len(r.reasoning)} chars"
            print(f"| {label} | `...{tail}` | {reasoning} | {r.content[:40]!r} |")
        print()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
