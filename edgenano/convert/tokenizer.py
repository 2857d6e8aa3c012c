"""GGUF tokenizer keys (`tokenizer.ggml.*`, `tokenizer.chat_template`) from a HF checkpoint.

Byte-level BPE only (llama.cpp's "gpt2" model). The pre-tokenizer name llama.cpp needs is derived
from tokenizer.json's own split regex through a table of regexes verified against llama.cpp's
source; an unknown one is refused rather than guessed.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from gguf import GGUFValueType, TokenType

from ..tokenizer import PRE_TOKENIZERS as _RUNTIME_PRE_TOKENIZERS
from .errors import ConversionError

V = GGUFValueType

# Split regex (exactly as tokenizer.json writes it) -> llama.cpp's pre-tokenizer name; the one
# table of verified pre-tokenizers lives beside the runtime tokenizer that reads them back.
PRE_TOKENIZERS = {(regex,): name for name, (regex, _) in _RUNTIME_PRE_TOKENIZERS.items()}

# tokenizer_config.json key -> GGUF special-id key
SPECIAL_KEYS = {
    "bos_token": "tokenizer.ggml.bos_token_id",
    "eos_token": "tokenizer.ggml.eos_token_id",
    "unk_token": "tokenizer.ggml.unknown_token_id",
    "pad_token": "tokenizer.ggml.padding_token_id",
}
CONFIG_IDS = {"bos_token": "bos_token_id", "eos_token": "eos_token_id",
              "pad_token": "pad_token_id"}


@dataclass(frozen=True)
class KV:
    """One GGUF metadata entry with its exact value type (sub_type for arrays)."""

    key: str
    value: object
    type: GGUFValueType
    sub_type: GGUFValueType | None = None


def _read_json(path: Path, required: bool = True) -> dict:
    if not path.is_file():
        if required:
            raise ConversionError(f"{path} not found: the tokenizer is needed to write the GGUF")
        return {}
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ConversionError(f"cannot read {path}: {e}") from e


def tokenizer_kvs(hf_dir: str | Path, n_vocab: int, config: dict | None = None) -> list[KV]:
    """Every tokenizer key for a vocabulary padded to `n_vocab` (the embedding's row count)."""
    hf_dir = Path(hf_dir)
    tok = _read_json(hf_dir / "tokenizer.json")
    tcfg = _read_json(hf_dir / "tokenizer_config.json", required=False)
    model = tok.get("model") or {}
    if model.get("type") != "BPE" or model.get("byte_fallback"):
        raise ConversionError(
            f"{hf_dir / 'tokenizer.json'}: only byte-level BPE tokenizers are supported "
            f"(found model type {model.get('type')!r})")
    if tok.get("normalizer") is not None:
        raise ConversionError(f"{hf_dir / 'tokenizer.json'}: a normalizer "
                              f"({tok['normalizer'].get('type')}) has no llama.cpp counterpart")
    tokens, types = vocab_table(tok, n_vocab)
    kvs = [
        KV("tokenizer.ggml.model", "gpt2", V.STRING),
        KV("tokenizer.ggml.pre", pre_tokenizer_name(tok), V.STRING),
        KV("tokenizer.ggml.tokens", tokens, V.ARRAY, V.STRING),
        KV("tokenizer.ggml.token_type", types, V.ARRAY, V.INT32),
        KV("tokenizer.ggml.merges", merges(model), V.ARRAY, V.STRING),
    ]
    kvs += special_ids(tokens, tcfg, config or {})
    kvs += add_flags(tok, tcfg)
    template = chat_template(hf_dir, tcfg)
    if template is not None:
        kvs.append(KV("tokenizer.chat_template", template, V.STRING))
    return kvs


def vocab_table(tok: dict, n_vocab: int) -> tuple[list[str], list[int]]:
    """Token strings and llama.cpp token types by id, padded with unused [PADn] entries."""
    by_id: dict[int, tuple[str, int]] = {i: (t, TokenType.NORMAL)
                                         for t, i in tok["model"]["vocab"].items()}
    for a in tok.get("added_tokens", []):
        kind = TokenType.CONTROL if a.get("special") else TokenType.USER_DEFINED
        by_id[a["id"]] = (a["content"], kind)
    if by_id and max(by_id) >= n_vocab:
        raise ConversionError(f"the tokenizer has token id {max(by_id)} but the embedding has "
                              f"only {n_vocab} rows (config vocab_size)")
    table = [by_id.get(i, (f"[PAD{i}]", TokenType.UNUSED)) for i in range(n_vocab)]
    return [t for t, _ in table], [int(k) for _, k in table]


def merges(model: dict) -> list[str]:
    """Merges as llama.cpp wants them: "left right" strings (tokenizers writes pairs or strings)."""
    return [m if isinstance(m, str) else " ".join(m) for m in model.get("merges", [])]


def _split_regexes(pre: dict | None) -> list[dict]:
    """Every Split pre-tokenizer inside a (possibly nested) Sequence, in order."""
    if pre is None:
        return []
    if pre.get("type") == "Sequence":
        return [s for p in pre.get("pretokenizers", []) for s in _split_regexes(p)]
    return [pre] if pre.get("type") == "Split" else []


def pre_tokenizer_name(tok: dict) -> str:
    """llama.cpp's name for tokenizer.json's pre-tokenizer, or a ConversionError."""
    pre = tok.get("pre_tokenizer")
    splits = _split_regexes(pre)
    regexes = tuple(s.get("pattern", {}).get("Regex") for s in splits)
    isolated = all(s.get("behavior") == "Isolated" and not s.get("invert") for s in splits)
    name = PRE_TOKENIZERS.get(regexes) if isolated else None
    if name is None or not _byte_level_without_regex(pre):
        raise ConversionError(
            "tokenizer.json's pre-tokenizer is not one llama.cpp is known to implement "
            f"(split regex {regexes or 'none'!r}); known: {', '.join(PRE_TOKENIZERS.values())}")
    return name


def _byte_level_without_regex(pre: dict | None) -> bool:
    steps = pre.get("pretokenizers", []) if pre and pre.get("type") == "Sequence" else [pre]
    return any(p and p.get("type") == "ByteLevel" and not p.get("use_regex", True) for p in steps)


def _token_text(v) -> str | None:
    return v.get("content") if isinstance(v, dict) else v


def special_ids(tokens: list[str], tcfg: dict, config: dict) -> list[KV]:
    """bos/eos/unk/pad ids: tokenizer_config's token strings first, config.json's ids second."""
    index = {t: i for i, t in enumerate(tokens)}
    out = []
    for tkey, gkey in SPECIAL_KEYS.items():
        text = _token_text(tcfg.get(tkey))
        tid = index.get(text) if text is not None else None
        if tid is None and CONFIG_IDS.get(tkey) in config:
            tid = config[CONFIG_IDS[tkey]]
            tid = tid[0] if isinstance(tid, list) else tid
        if text is not None and tid is None:
            raise ConversionError(f"tokenizer_config.json names {tkey} {text!r}, "
                                  "which is not in the vocabulary")
        if tid is not None:
            out.append(KV(gkey, int(tid), V.UINT32))
    return out


def _post_processor_adds(tok: dict, which: str) -> bool:
    """Whether tokenizer.json's TemplateProcessing puts a special token first/last."""
    post = tok.get("post_processor") or {}
    single = post.get("single") if post.get("type") == "TemplateProcessing" else None
    if not single:
        return False
    item = single[0] if which == "bos" else single[-1]
    return "SpecialToken" in item


def add_flags(tok: dict, tcfg: dict) -> list[KV]:
    out = []
    for which in ("bos", "eos"):
        flag = tcfg.get(f"add_{which}_token")
        if flag is None:
            flag = _post_processor_adds(tok, which)
        out.append(KV(f"tokenizer.ggml.add_{which}_token", bool(flag), V.BOOL))
    return out


def chat_template(hf_dir: Path, tcfg: dict) -> str | None:
    """tokenizer_config's chat_template (the "default" one of a list) or chat_template.jinja."""
    t = tcfg.get("chat_template")
    if isinstance(t, list):
        named = {e.get("name"): e.get("template") for e in t}
        t = named.get("default")
    if t is None and (hf_dir / "chat_template.jinja").is_file():
        t = (hf_dir / "chat_template.jinja").read_text(encoding="utf-8")
    return t
