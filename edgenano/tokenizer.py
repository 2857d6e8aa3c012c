"""Tokenizer built from a GGUF's own vocabulary (tokenizer.ggml.*), equal to llama.cpp's.

The GGUF holds byte-level BPE tokens, merges and token types; the pre-tokenizer is known by name
(`tokenizer.ggml.pre`), so the split regex comes from the table below, as llama.cpp does it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from .errors import TokenizerError

# The split regex of Mistral's tekken vocabulary (9B-v2's), exactly as its tokenizer.json writes
# it; llama.cpp's llama-vocab.cpp quotes the same regex for LLAMA_VOCAB_PRE_TYPE_TEKKEN.
TEKKEN_REGEX = (
    r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+|"
    r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*|"
    r"\p{N}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)

# llama.cpp pre-tokenizer name -> (split regex, ignore_merges). Only names we have verified
# against llama.cpp's tokenization are listed; anything else is refused (here and by the
# converter, which maps a tokenizer.json's regex back to the name).
PRE_TOKENIZERS: dict[str, tuple[str, bool]] = {
    "tekken": (TEKKEN_REGEX, True),
}

TOKEN_TYPE_NORMAL, TOKEN_TYPE_CONTROL, TOKEN_TYPE_USER_DEFINED = 1, 3, 4


class Tokenizer:
    """encode/decode with the GGUF's vocabulary; special tokens are parsed when `special=True`."""

    def __init__(self, metadata: Mapping[str, object]):
        from tokenizers import AddedToken, Regex, decoders, models, pre_tokenizers
        from tokenizers import Tokenizer as HFTokenizer

        v = _checked_vocab(metadata)
        tokens, types, merges = v["tokens"], v["types"], v["merges"]
        regex, ignore_merges = PRE_TOKENIZERS[v["pre"]]
        vocab = {t: i for i, t in enumerate(tokens)}

        try:
            tok = HFTokenizer(models.BPE(vocab=vocab, merges=merges, ignore_merges=ignore_merges))
            tok.pre_tokenizer = pre_tokenizers.Sequence([
                pre_tokenizers.Split(Regex(regex), behavior="isolated", invert=False),
                pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
            ])
            tok.decoder = decoders.ByteLevel()
            specials = [t for t, ty in zip(tokens, types) if ty == TOKEN_TYPE_CONTROL]
            user = [t for t, ty in zip(tokens, types) if ty == TOKEN_TYPE_USER_DEFINED]
            tok.add_special_tokens([AddedToken(t, special=True, normalized=False)
                                    for t in specials])
            tok.add_tokens([AddedToken(t, special=False, normalized=False) for t in user])
        except Exception as e:  # noqa: BLE001 - tokenizers raises a bare Exception
            raise TokenizerError(f"the vocabulary (tokenizer.ggml.*) cannot be built into a BPE "
                                 f"tokenizer: {e}") from None
        self._tok = tok
        self.tokens = tokens
        self.token_types = types
        self.n_vocab = len(tokens)
        self.bos_id, self.eos_id = v["bos_token_id"], v["eos_token_id"]
        self.add_bos = v["add_bos_token"]
        self.chat_template = v["chat_template"]
        self._control = {i for i, ty in enumerate(types) if ty == TOKEN_TYPE_CONTROL}

    def encode(self, text: str, *, add_bos: bool = False, special: bool = True) -> list[int]:
        """Token ids of `text`. special=False reads '<SPECIAL_11>' as plain text (llama.cpp's
        parse_special=False)."""
        if special:
            ids = self._tok.encode(text, add_special_tokens=False).ids
        else:
            ids = self._encode_plain(text)
        return ([self.bos_id] if add_bos and self.bos_id is not None else []) + ids

    def _encode_plain(self, text: str) -> list[int]:
        # Added tokens are matched before the model runs; to treat them as text, encode the pieces
        # between matches with the bare BPE pipeline.
        pre = self._tok.pre_tokenizer.pre_tokenize_str(text)
        out: list[int] = []
        for piece, _ in pre:
            out.extend(t.id for t in self._tok.model.tokenize(piece))
        return out

    def decode(self, ids: Sequence[int], *, skip_special: bool = False) -> str:
        return self._tok.decode(list(ids), skip_special_tokens=skip_special)

    def token_bytes(self, token_id: int) -> bytes:
        """The raw bytes a token stands for (a control token gives its text), for streaming."""
        if token_id in self._control:
            return self.tokens[token_id].encode()
        return _BYTE_DECODER_TABLE.decode_piece(self.tokens[token_id])

    def is_control(self, token_id: int) -> bool:
        return token_id in self._control


# Token types llama.cpp knows (llama-vocab.h): undefined, normal, unknown, control,
# user-defined, unused, byte.
TOKEN_TYPES = range(0, 7)
_IDS = ("bos_token_id", "eos_token_id", "padding_token_id", "unknown_token_id")


def _checked_vocab(md: Mapping[str, object]) -> dict:
    """The tokenizer.ggml.* keys a tokenizer needs, each of the right type and in range, or a
    TokenizerError naming the key and what is wrong with it."""
    p = "tokenizer.ggml."
    model = md.get(p + "model")
    if model != "gpt2":
        raise TokenizerError(f"{p}model is {model!r}; edgenano reads 'gpt2' (BPE)")
    pre = md.get(p + "pre", "default")
    if not isinstance(pre, str) or pre not in PRE_TOKENIZERS:
        raise TokenizerError(
            f"unknown pre-tokenizer {pre!r} (known: {', '.join(sorted(PRE_TOKENIZERS))})")
    if p + "tokens" not in md:
        raise TokenizerError(f"no {p}tokens key: the file has no vocabulary (re-convert it with "
                             "`edgenano convert`)")
    tokens = _str_list(md, p + "tokens")
    if not tokens:
        raise TokenizerError(f"{p}tokens is empty")
    n = len(tokens)
    types = md.get(p + "token_type")
    if types is None:
        types = [TOKEN_TYPE_NORMAL] * n
    elif not _is_list(types, int) or len(types) != n:
        raise TokenizerError(f"{p}token_type must be {n} integers (one per token), found "
                             f"{_describe(types)}")
    bad = next((i for i, t in enumerate(types) if t not in TOKEN_TYPES), None)
    if bad is not None:
        raise TokenizerError(f"{p}token_type of token {bad} is {types[bad]}, not a llama.cpp "
                             "token type (0-6)")
    merges = []
    if p + "merges" in md:
        vocab = set(tokens)
        for i, m in enumerate(_str_list(md, p + "merges")):
            a, sep, b = m.partition(" ")
            if not sep or a not in vocab or b not in vocab or a + b not in vocab:
                raise TokenizerError(f"{p}merges entry {i} ({m[:40]!r}) is not two tokens of "
                                     "the vocabulary, separated by a space, whose join is one")
            merges.append((a, b))
    out = {"pre": pre, "tokens": tokens, "types": list(types), "merges": merges}
    for key in _IDS:
        v = md.get(p + key)
        if v is not None and (isinstance(v, bool) or not isinstance(v, int) or not 0 <= v < n):
            raise TokenizerError(f"{p}{key} is {v!r}; it must be a token id in [0, {n})")
        out[key] = v
    add_bos = md.get(p + "add_bos_token", False)
    if not isinstance(add_bos, bool):
        raise TokenizerError(f"{p}add_bos_token must be a bool, found {_describe(add_bos)}")
    out["add_bos_token"] = add_bos
    template = md.get("tokenizer.chat_template")
    if template is not None and not isinstance(template, str):
        raise TokenizerError(f"tokenizer.chat_template must be a string, found "
                             f"{_describe(template)}")
    out["chat_template"] = template
    return out


def _is_list(v, item: type) -> bool:
    return isinstance(v, (list, tuple)) and all(
        isinstance(x, item) and not isinstance(x, bool) for x in v)


def _str_list(md: Mapping[str, object], key: str) -> list[str]:
    v = md[key]
    if not _is_list(v, str):
        raise TokenizerError(f"{key} must be an array of strings, found {_describe(v)}")
    return list(v)


def _describe(v) -> str:
    if isinstance(v, (list, tuple)):
        kinds = sorted({type(x).__name__ for x in v[:1000]})
        return f"a list of {len(v)} ({'/'.join(kinds) or 'nothing'})"
    return f"{type(v).__name__} {v!r:.40}"


class _ByteDecoder:
    """Inverse of GPT-2's bytes_to_unicode map: token text -> the bytes it encodes."""

    def __init__(self):
        printable = (list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
                     + list(range(ord("®"), ord("ÿ") + 1)))
        chars = list(printable)
        n = 0
        for b in range(256):
            if b not in printable:
                printable.append(b)
                chars.append(256 + n)
                n += 1
        self.table = {chr(c): b for b, c in zip(printable, chars)}

    def decode_piece(self, piece: str) -> bytes:
        try:
            return bytes(self.table[ch] for ch in piece)
        except KeyError:  # a user-defined token stored as plain text
            return piece.encode()


_BYTE_DECODER_TABLE = _ByteDecoder()
