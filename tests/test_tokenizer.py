"""edgenano's tokenizer, built from the GGUF's own vocabulary, against the HF tokenizer of the
checkpoint and llama.cpp's tokenization of the same GGUF."""

from __future__ import annotations

import pytest

from edgenano.gguf_model import load_gguf
from edgenano.tokenizer import Tokenizer, TokenizerError

TEXTS = [
    "Hello world", "Résumé naïve Größe", "日本語のテキスト 中文", "emoji 🙂👍🏽 ©",
    "12345 + 678 = 7023", "  runs   of  spaces\n\n\nand\t\ttabs \n ",
    "<SPECIAL_11>Assistant\n<think>\n", "x</think>y /think a/no_think", "<s>not bos</s>", "",
]


@pytest.fixture(scope="module")
def gguf_path(tiny_checkpoint, tmp_path_factory):
    from edgenano.convert import convert_checkpoint

    out = tmp_path_factory.mktemp("tok") / "mix.gguf"
    convert_checkpoint(tiny_checkpoint("mix"), out, "q8_0")
    return out


@pytest.fixture(scope="module")
def tok(gguf_path):
    return Tokenizer(load_gguf(gguf_path).metadata)


def test_equals_hf(tok, tiny_checkpoint):
    from transformers import AutoTokenizer

    hf = AutoTokenizer.from_pretrained(tiny_checkpoint("mix"))
    for t in TEXTS:
        assert tok.encode(t) == hf(t, add_special_tokens=False)["input_ids"], t
        assert tok.decode(tok.encode(t)) == t


def test_equals_llamacpp(tok, gguf_path):
    llama_cpp = pytest.importorskip("llama_cpp")
    llm = llama_cpp.Llama(str(gguf_path), n_ctx=64, verbose=False, vocab_only=True)
    for t in TEXTS:
        for special in (True, False):
            ref = llm.tokenize(t.encode(), add_bos=False, special=special)
            assert tok.encode(t, special=special) == ref, (t, special)
    ids = tok.encode("Résumé 🙂 <SPECIAL_12>")
    assert b"".join(tok.token_bytes(i) for i in ids) == b"".join(
        llm.detokenize([i], special=True) for i in ids)


def test_refuses_unknown_pretokenizer(tok, gguf_path):
    md = dict(load_gguf(gguf_path).metadata)
    md["tokenizer.ggml.pre"] = "no-such-pre"
    with pytest.raises(TokenizerError, match="unknown pre-tokenizer 'no-such-pre'"):
        Tokenizer(md)
    md["tokenizer.ggml.model"] = "llama"
    with pytest.raises(TokenizerError, match="gpt2"):
        Tokenizer(md)
