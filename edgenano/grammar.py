"""Constrained decoding of the answer: response_format's JSON (object or schema) via llguidance.

Why llguidance: it is built for exactly this (token masks from a grammar over any tokenizer) and
is what llama.cpp's and vLLM's structured output use; the masks are computed in Rust in well
under a millisecond a token; it compiles JSON Schema and Lark grammars; it is a small wheel with
no torch dependency. xgrammar, the other fast engine, pulls torch and triton; outlines-core
compiles a regex-per-schema index up front (slow for large schemas) and covers less of JSON
Schema.

The constraint covers the answer only: the caller creates it (or `reset()`s it) once `</think>`
is closed, and never feeds it tokens forced by the thinking budget. The JSON must start at the
first token it sees: llguidance's JSON allows no leading whitespace (as llama-cpp-python's JSON
grammar, `root ::= object`), so a newline the model would put first is masked away.
"""

from __future__ import annotations

import json
import weakref
from collections.abc import Iterable, Mapping

import numpy as np

from .tokenizer import TOKEN_TYPE_USER_DEFINED, Tokenizer

_LLTOKENIZERS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()

# Whitespace between JSON tokens, bounded as llama.cpp's JSON grammars bound it (one run of up to
# 20 spaces/tabs, or one or two newlines and an indent of up to 20): llguidance's default,
# [ \t\n\r]+, lets a model pad forever. A schema's own "x-guidance" whitespace_pattern wins.
JSON_OPTIONS = {"whitespace_pattern": r"[\x20\x09]{1,20}|\x0A{1,2}[\x20\x09]{0,20}"}


class _Vocab:
    """What llguidance.TokenizerWrapper reads: each token's bytes, the special ids, eos/bos, and
    a text -> ids callable."""

    def __init__(self, tok: Tokenizer):
        # Control tokens, and user-defined ones spelled like <...>, carry llguidance's special
        # marker byte 0xFF (as its llama.cpp adapter writes them), so no grammar text matches
        # them: they can never appear inside the JSON.
        special = [tok.is_control(i) or (tok.token_types[i] == TOKEN_TYPE_USER_DEFINED
                                         and tok.tokens[i].startswith("<")
                                         and tok.tokens[i].endswith(">"))
                   for i in range(tok.n_vocab)]
        self.tokens = [(b"\xff" if s else b"") + tok.token_bytes(i) for i, s in enumerate(special)]
        self.special_token_ids = [i for i, s in enumerate(special) if s]
        self.eos_token_id = tok.eos_id
        self.bos_token_id = tok.bos_id
        self._tok = tok

    def __call__(self, text: str) -> list[int]:
        # TokenizerWrapper probes with bytes first; refusing them makes it pass str.
        if not isinstance(text, str):
            raise TypeError("text only")
        return self._tok.encode(text, special=False)


def ll_tokenizer(tok: Tokenizer):
    """The llguidance.LLTokenizer of `tok` (built once per Tokenizer object: it walks the
    whole vocabulary)."""
    import llguidance

    lt = _LLTOKENIZERS.get(tok)
    if lt is None:
        if tok.eos_id is None:
            raise ValueError("constrained decoding needs the vocabulary's eos token")
        lt = llguidance.LLTokenizer(llguidance.TokenizerWrapper(_Vocab(tok)))
        _LLTOKENIZERS[tok] = lt
    return lt


class Constraint:
    """An llguidance grammar over the answer, driven token by token:
    `mask(logits)` -> `sample` -> `advance(id)`, until `is_done()`.

    `stop_ids` are the tokens that end the answer (the model's end-of-turn set); they are
    allowed only where the grammar is complete (`accepts_eos()`). Default: the eos token."""

    def __init__(self, tok: Tokenizer, grammar: str, stop_ids: Iterable[int] | None = None):
        import llguidance

        self._lt = ll_tokenizer(tok)
        is_error, messages = llguidance.LLMatcher.validate_grammar_with_warnings(grammar, self._lt)
        if is_error:
            raise ValueError(f"llguidance rejected the grammar: {messages[0]}")
        self._matcher = llguidance.LLMatcher(self._lt, grammar, log_level=0)
        if self._matcher.is_error():
            raise ValueError(f"llguidance rejected the grammar: {self._matcher.get_error()}")
        self.stop_ids = np.array(sorted({tok.eos_id} if stop_ids is None else set(stop_ids)),
                                 dtype=np.int64)
        self._words = np.full((self._lt.vocab_size + 31) // 32, -1, dtype=np.int32)
        self._ended = False

    def allowed(self) -> np.ndarray:
        """Boolean mask over the vocabulary of the tokens that may come next."""
        self._matcher.unsafe_compute_mask_ptr(self._words.ctypes.data, self._words.nbytes)
        if self._matcher.is_error():
            raise RuntimeError(f"llguidance: {self._matcher.get_error()}")
        bits = np.unpackbits(self._words.view(np.uint8), bitorder="little")
        ok = bits[:self._lt.vocab_size].astype(bool)
        ok[self.stop_ids] = self.accepts_eos()
        return ok

    def mask(self, logits: np.ndarray) -> np.ndarray:
        """A copy of `logits` with the tokens the grammar forbids at -inf (a logits processor's
        body; logits longer than the vocabulary, as padded output layers give, are cut off)."""
        ok = self.allowed()
        out = np.full(logits.shape, -np.inf, dtype=logits.dtype)
        n = min(ok.size, logits.shape[-1])
        out[:n] = np.where(ok[:n], logits[:n], -np.inf)
        return out

    def advance(self, token_id: int) -> None:
        """Consume a sampled token; a token the grammar forbids raises ValueError."""
        if token_id in self.stop_ids and self.accepts_eos():
            self._ended = True
            return
        if not self._matcher.consume_token(int(token_id)):
            raise ValueError(f"token {token_id} breaks the grammar: {self._matcher.get_error()}")

    def accepts_eos(self) -> bool:
        """The text so far is complete: a stop token may end it here."""
        return self._matcher.is_accepting()

    def is_done(self) -> bool:
        """Nothing more can follow (or a stop token was taken): the generation should end."""
        return self._ended or self._matcher.is_stopped()

    def reset(self) -> None:
        """Back to the start of the grammar (for a fresh answer)."""
        self._matcher.reset()
        self._ended = False


def json_grammar(response_format: Mapping) -> str | None:
    """llguidance grammar for an OpenAI / llama-cpp-python response_format, or None for text.

    {"type": "text"}: no constraint. {"type": "json_object"}: any JSON object (llama-cpp-python
    also reads a "schema" key here). {"type": "json_schema", "json_schema": {"name": ...,
    "schema": {...}, "strict": ...}}: that schema; it is enforced whatever `strict` says."""
    import llguidance

    if not isinstance(response_format, Mapping):
        raise TypeError(f"response_format must be a dict, got {type(response_format).__name__}")
    kind = response_format.get("type")
    if kind == "text":
        return None
    if kind == "json_object":
        schema = response_format.get("schema", {"type": "object"})
    elif kind == "json_schema":
        spec = response_format.get("json_schema")
        if not isinstance(spec, Mapping):
            raise ValueError("response_format json_schema needs a 'json_schema' object "
                             "({'name': ..., 'schema': {...}})")
        if "name" in spec and not isinstance(spec["name"], str):
            raise TypeError("response_format json_schema 'name' must be a string")
        if spec.get("strict") is not None and not isinstance(spec["strict"], bool):
            raise TypeError("response_format json_schema 'strict' must be a boolean")
        if "schema" not in spec:
            raise ValueError("response_format json_schema has no 'schema'")
        schema = spec["schema"]
    else:
        raise ValueError(f"response_format type must be 'text', 'json_object' or 'json_schema',"
                         f" got {kind!r}")
    if not isinstance(schema, Mapping):
        raise TypeError(f"a JSON schema must be an object, got {type(schema).__name__}")
    try:
        return llguidance.LLMatcher.grammar_from_json_schema(json.dumps(schema),
                                                             defaults=JSON_OPTIONS)
    except ValueError as e:
        raise ValueError(f"llguidance rejected the JSON schema: {e}") from None


class JsonConstraint(Constraint):
    """The answer as response_format's JSON (see `json_grammar`)."""

    def __init__(self, tok: Tokenizer, response_format: Mapping,
                 stop_ids: Iterable[int] | None = None):
        grammar = json_grammar(response_format)
        if grammar is None:
            raise ValueError("response_format type 'text' has no constraint")
        try:
            super().__init__(tok, grammar, stop_ids)
        except ValueError as e:
            raise ValueError(f"response_format: {e}") from None


def response_format_constraint(tok: Tokenizer, response_format: Mapping | None,
                               stop_ids: Iterable[int] | None = None) -> JsonConstraint | None:
    """The constraint response_format asks for; None for no response_format or type 'text'."""
    if response_format is None or (isinstance(response_format, Mapping)
                                   and response_format.get("type") == "text"):
        return None
    return JsonConstraint(tok, response_format, stop_ids)


def _lark_str(s: str) -> str:
    return json.dumps(s)  # a JSON string literal is a Lark string literal


# Tool-call JSON as the 9B-v2 template writes it: `{"name": ..., "arguments": {...}}`, with
# ", " and ": " separators and no other whitespace (a forced call has nothing to pad).
_COMPACT = {"whitespace_flexible": False, "item_separator": ", ", "key_separator": ": "}


def _call_schema(fn: Mapping) -> dict:
    params = fn.get("parameters") or {"type": "object"}
    return {"type": "object", "properties": {"name": {"const": fn["name"]}, "arguments": params},
            "required": ["name", "arguments"], "additionalProperties": False}


def _xml_call_rule(i: int, fn: Mapping) -> list[str]:
    """Nemotron 3 Nano's form: `<tool_call>\\n<function=NAME>\\n` then one
    `<parameter=P>\\nvalue\\n</parameter>\\n` per parameter (required ones in order, the rest
    optional), `</function>\\n</tool_call>`. Strings are raw text, other values JSON."""
    props = (fn.get("parameters") or {}).get("properties") or {}
    required = set((fn.get("parameters") or {}).get("required") or [])
    rules, parts = [], []
    for j, (p, schema) in enumerate(props.items()):
        value = ("/[^<]+/" if schema.get("type") == "string"
                 else f"%json {json.dumps({'x-guidance': _COMPACT, **schema})}")
        opener, closer = _lark_str(f"<parameter={p}>\n"), _lark_str("\n</parameter>\n")
        rules.append(f"p{i}_{j}: {opener} {value} {closer}")
        parts.append(f"p{i}_{j}" + ("" if p in required else "?"))
    head = _lark_str(f"<tool_call>\n<function={fn['name']}>\n")
    tail = _lark_str("</function>\n</tool_call>")
    rules.insert(0, f"call{i}: {head} {' '.join(parts)} {tail}")
    return rules


def tool_call_grammar(functions: list[Mapping], syntax: str) -> str:
    """A Lark grammar (llguidance's dialect) for exactly one call of one of `functions`, in the
    template's syntax: 'json' (9B-v2's `<TOOLCALL>[{"name": ..., "arguments": {...}}]`) or 'xml'
    (Nemotron 3 Nano's `<tool_call><function=...>`)."""
    if not functions:
        raise ValueError("a forced tool call needs at least one tool")
    if syntax == "json":
        schema = {"anyOf": [_call_schema(f) for f in functions]} if len(functions) > 1 \
            else _call_schema(functions[0])
        schema = {"x-guidance": _COMPACT, **schema}
        return (f'start: "<TOOLCALL>[" %json {json.dumps(schema)} "]</TOOLCALL>"')
    if syntax == "xml":
        rules = [r for i, f in enumerate(functions) for r in _xml_call_rule(i, f)]
        alts = " | ".join(f"call{i}" for i in range(len(functions)))
        return "\n".join([f"start: {alts}", *rules])
    raise ValueError(f"unknown tool-call syntax {syntax!r}")


def tool_call_constraint(tok: Tokenizer, functions: list[Mapping], syntax: str,
                         stop_ids: Iterable[int] | None = None) -> Constraint:
    """The answer as one call of one of `functions` (tool_choice 'required' or a named one)."""
    import llguidance

    try:
        grammar = llguidance.LLMatcher.grammar_from_lark(tool_call_grammar(functions, syntax))
        return Constraint(tok, grammar, stop_ids)
    except ValueError as e:
        raise ValueError(f"tool_choice: cannot build the call's grammar: {e}") from None
