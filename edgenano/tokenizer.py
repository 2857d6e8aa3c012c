"""Tokenizer built from a GGUF's own vocabulary (tokenizer.ggml.*), equal to llama.cpp's.

The GGUF holds byte-level BPE tokens, merges and token types; the pre-tokenizer is known by name
(`tokenizer.ggml.pre`), so the split regex comes from the table below, as llama.cpp does it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from .errors import TokenizerError  # noqa: F401  (raised here; defined with the others)

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

        model = metadata.get("tokenizer.ggml.model")
        if model != "gpt2":
            raise TokenizerError(f"tokenizer.ggml.model is {model!r}; edgenano reads 'gpt2' (BPE)")
        pre = str(metadata.get("tokenizer.ggml.pre", "default"))
        if pre not in PRE_TOKENIZERS:
            raise TokenizerError(
                f"unknown pre-tokenizer {pre!r} (known: {', '.join(sorted(PRE_TOKENIZERS))})")
        regex, ignore_merges = PRE_TOKENIZERS[pre]
        tokens: Sequence[str] = list(metadata["tokenizer.ggml.tokens"])
        types = list(metadata.get("tokenizer.ggml.token_type", [TOKEN_TYPE_NORMAL] * len(tokens)))
        merges = [tuple(m.split(" ", 1)) for m in metadata.get("tokenizer.ggml.merges", [])]
        vocab = {t: i for i, t in enumerate(tokens)}

        tok = HFTokenizer(models.BPE(vocab=vocab, merges=merges, ignore_merges=ignore_merges))
        tok.pre_tokenizer = pre_tokenizers.Sequence([
            pre_tokenizers.Split(Regex(regex), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ])
        tok.decoder = decoders.ByteLevel()
        specials = [t for t, ty in zip(tokens, types) if ty == TOKEN_TYPE_CONTROL]
        user = [t for t, ty in zip(tokens, types) if ty == TOKEN_TYPE_USER_DEFINED]
        tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in specials])
        tok.add_tokens([AddedToken(t, special=False, normalized=False) for t in user])
        self._tok = tok
        self.tokens = tokens
        self.token_types = types
        self.n_vocab = len(tokens)
        self.bos_id = _opt_int(metadata.get("tokenizer.ggml.bos_token_id"))
        self.eos_id = _opt_int(metadata.get("tokenizer.ggml.eos_token_id"))
        self.add_bos = bool(metadata.get("tokenizer.ggml.add_bos_token", False))
        self.chat_template = metadata.get("tokenizer.chat_template")
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


def _opt_int(v) -> int | None:
    return None if v is None else int(v)


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
