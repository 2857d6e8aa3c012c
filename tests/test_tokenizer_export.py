"""Tokenizer export: GGUF tokenizer keys from tokenizer.json / tokenizer_config.json."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import gguf
import pytest
from gguf import TokenType

from devtools import tiny
from edgenano.convert import ConversionError, convert_checkpoint
from edgenano.convert.tokenizer import (
    chat_template,
    merges,
    pre_tokenizer_name,
    special_ids,
    tokenizer_kvs,
    vocab_table,
)

TEKKEN_PRE = {"type": "Sequence", "pretokenizers": [
    {"type": "Split", "pattern": {"Regex": tiny.TEKKEN_REGEX}, "behavior": "Isolated",
     "invert": False},
    {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": False},
]}


@pytest.fixture(scope="module")
def tok_dir(tmp_path_factory) -> Path:
    """tokenizer.json + tokenizer_config.json of the tiny vocabulary, plus non-special added
    tokens (user-defined in llama.cpp's terms)."""
    from tokenizers import AddedToken

    d = tmp_path_factory.mktemp("tok")
    tok = tiny.build_tokenizer(vocab_size=500)
    tok.add_tokens([AddedToken(t, special=False, normalized=False)
                    for t in ("<think>", "</think>", " custom word")])
    tiny.save_tokenizer(tok, d)
    return d


def kvs(d: Path, n_vocab: int = 512, config: dict | None = None) -> dict:
    return {kv.key: kv.value for kv in tokenizer_kvs(d, n_vocab, config)}


def test_token_types_and_padding(tok_dir):
    tok = json.loads((tok_dir / "tokenizer.json").read_text())
    tokens, types = vocab_table(tok, 512)
    assert len(tokens) == len(types) == 512
    assert tokens[:3] == ["<unk>", "<s>", "</s>"] and types[:16] == [TokenType.CONTROL] * 16
    assert tokens[500:503] == ["<think>", "</think>", " custom word"]
    assert types[500:503] == [TokenType.USER_DEFINED] * 3
    assert tokens[503] == "[PAD503]" and set(types[503:]) == {TokenType.UNUSED}
    assert set(types[16:500]) == {TokenType.NORMAL}
    assert tokens[16:500] == sorted(tok["model"]["vocab"], key=tok["model"]["vocab"].get)[16:500]


def test_tokenizer_larger_than_embedding_refused(tok_dir):
    tok = json.loads((tok_dir / "tokenizer.json").read_text())
    with pytest.raises(ConversionError, match="token id 502 but the embedding has only 400 rows"):
        vocab_table(tok, 400)


def test_merges_both_spellings():
    assert merges({"merges": [["Ġ", "t"], ["h", "e"]]}) == ["Ġ t", "h e"]
    assert merges({"merges": ["Ġ t", "h e"]}) == ["Ġ t", "h e"]


def test_pre_tokenizer_from_split_regex():
    assert pre_tokenizer_name({"pre_tokenizer": TEKKEN_PRE}) == "tekken"
    nested = {"type": "Sequence", "pretokenizers": [TEKKEN_PRE]}
    nested["pretokenizers"][0] = {"type": "Sequence",
                                  "pretokenizers": TEKKEN_PRE["pretokenizers"][:1]}
    nested["pretokenizers"].append(TEKKEN_PRE["pretokenizers"][1])
    assert pre_tokenizer_name({"pre_tokenizer": nested}) == "tekken"


@pytest.mark.parametrize("edit", [
    lambda p: p["pretokenizers"][0]["pattern"].update(Regex=r"\p{L}+|\s+"),
    lambda p: p["pretokenizers"][0].update(behavior="Removed"),
    lambda p: p["pretokenizers"][0].update(invert=True),
    lambda p: p["pretokenizers"][1].update(use_regex=True),  # a second, GPT-2 split
    lambda p: p["pretokenizers"].pop(0),
])
def test_unknown_pre_tokenizers_refused(edit):
    pre = json.loads(json.dumps(TEKKEN_PRE))
    edit(pre)
    with pytest.raises(ConversionError, match="not one llama.cpp is known to implement"):
        pre_tokenizer_name({"pre_tokenizer": pre})


def test_special_ids_from_config_and_tokenizer_config():
    tokens = ["<unk>", "<s>", "</s>", "x"]
    got = {kv.key: kv.value for kv in special_ids(
        tokens, {"bos_token": {"content": "<s>"}, "eos_token": "</s>"},
        {"pad_token_id": 3, "eos_token_id": [0, 3]})}
    assert got == {"tokenizer.ggml.bos_token_id": 1, "tokenizer.ggml.eos_token_id": 2,
                   "tokenizer.ggml.padding_token_id": 3}
    got = {kv.key: kv.value for kv in special_ids(tokens, {}, {"eos_token_id": [2, 3]})}
    assert got == {"tokenizer.ggml.eos_token_id": 2}
    with pytest.raises(ConversionError, match="names eos_token '<nope>'"):
        special_ids(tokens, {"eos_token": "<nope>"}, {})


def test_add_bos_from_post_processor(tok_dir, tmp_path):
    d = tmp_path / "t"
    shutil.copytree(tok_dir, d)
    cfg = json.loads((d / "tokenizer_config.json").read_text())
    del cfg["add_bos_token"]
    (d / "tokenizer_config.json").write_text(json.dumps(cfg))
    assert kvs(d)["tokenizer.ggml.add_bos_token"] is False  # no post-processor
    tok = json.loads((d / "tokenizer.json").read_text())
    tok["post_processor"] = {"type": "TemplateProcessing", "single": [
        {"SpecialToken": {"id": "<s>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}]}
    (d / "tokenizer.json").write_text(json.dumps(tok))
    got = kvs(d)
    assert got["tokenizer.ggml.add_bos_token"] is True
    assert got["tokenizer.ggml.add_eos_token"] is False


def test_chat_template_sources(tok_dir, tmp_path):
    d = tmp_path / "t"
    shutil.copytree(tok_dir, d)
    assert kvs(d)["tokenizer.chat_template"] == tiny.chat_template()
    cfg = json.loads((d / "tokenizer_config.json").read_text())
    cfg["chat_template"] = [{"name": "tool_use", "template": "T"}, {"name": "default",
                                                                   "template": "D"}]
    assert chat_template(d, cfg) == "D"
    del cfg["chat_template"]
    (d / "tokenizer_config.json").write_text(json.dumps(cfg))
    assert "tokenizer.chat_template" not in kvs(d)
    (d / "chat_template.jinja").write_text("{{ messages }}")
    assert kvs(d)["tokenizer.chat_template"] == "{{ messages }}"


@pytest.mark.parametrize("edit, match", [
    (lambda t: t["model"].update(type="Unigram"), "only byte-level BPE"),
    (lambda t: t["model"].update(byte_fallback=True), "only byte-level BPE"),
    (lambda t: t.update(normalizer={"type": "NFC"}), "normalizer \\(NFC\\)"),
])
def test_unsupported_tokenizers_refused(tok_dir, tmp_path, edit, match):
    d = tmp_path / "t"
    shutil.copytree(tok_dir, d)
    tok = json.loads((d / "tokenizer.json").read_text())
    edit(tok)
    (d / "tokenizer.json").write_text(json.dumps(tok))
    with pytest.raises(ConversionError, match=match):
        kvs(d)


def test_user_defined_tokens_in_llama_cpp(tiny_checkpoint, tok_dir, tmp_path):
    """Non-special added tokens (type 4) and [PAD] rows: llama.cpp tokenizes like HF."""
    llama_cpp = pytest.importorskip("llama_cpp")
    from transformers import AutoTokenizer

    src = tmp_path / "ckpt"
    shutil.copytree(tiny_checkpoint("mix"), src)
    for f in tok_dir.iterdir():
        shutil.copy(f, src / f.name)
    out = convert_checkpoint(src, tmp_path / "m.gguf")
    types = gguf.GGUFReader(out).fields["tokenizer.ggml.token_type"].contents()
    assert types[500] == TokenType.USER_DEFINED and types[511] == TokenType.UNUSED
    hf = AutoTokenizer.from_pretrained(src)
    llm = llama_cpp.Llama(str(out), vocab_only=True, verbose=False)
    try:
        for s in ["<think>\nhello</think>\n\nok", "a custom word here", "x<think>y",
                  "<SPECIAL_11>User\n<think>"]:
            want = hf.encode(s, add_special_tokens=False)
            assert llm.tokenize(s.encode(), add_bos=False, special=True) == want, s
        # user-defined tokens match even when special-token parsing is off
        assert llm.tokenize(b"x<think>y", add_bos=False, special=False)[1] == 500
    finally:
        llm.close()
