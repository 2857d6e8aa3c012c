"""llama.cpp (llama-cpp-python 0.3.36) loads what our converter writes: logits against transformers
for every output type, llama.cpp's own type choices, and tokenization against the HF tokenizer."""

from __future__ import annotations

import ctypes
import sys
from pathlib import Path

import gguf
import numpy as np
import pytest

llama_cpp = pytest.importorskip("llama_cpp")

from edgenano.convert import plan_conversion  # noqa: E402
from edgenano.convert.cli import main as convert_cli  # noqa: E402
from edgenano.convert.presets import OUTTYPES  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))  # tests/ is no package (importlib mode)
from conftest import llama_logits as conftest_llama_logits  # noqa: E402
from conftest import nmse  # noqa: E402
from tolerances import NMSE_LLAMACPP_VS_HF, NMSE_LLAMACPP_VS_HF_DEQUANTIZED  # noqa: E402

K_TYPES = ("q4_k", "q5_k", "q6_k", "q4_k_m", "q5_k_m")

# name -> tiny_checkpoint arguments. "kwide": every matrix row a multiple of 256 (K-quants proper,
# no fallbacks) and 16 layers, so the _M mixtures pick different types for different layers.
CONFIGS = {
    "mix": ("mix", {}),
    "attn_first": ("attn_first", {}),
    "groups4": ("groups4", {}),
    "kwide": ("mix", dict(hybrid_override_pattern="M-*-" * 4, hidden_size=256,
                          intermediate_size=512, num_attention_heads=4, num_key_value_heads=2,
                          head_dim=64, mamba_num_heads=8, mamba_head_dim=32, n_groups=2,
                          ssm_state_size=16)),
}

# Longer than every config's chunk_size (8 or 16) and not a multiple of it.
PROMPT = np.random.default_rng(0).integers(16, 512, size=37).tolist()

# llama_model_quantize's file types for the outtypes whose per-tensor choices we mirror.
LLAMA_FTYPES = {"q4_k_m": (15, False), "q5_k_m": (17, False), "q6_k": (18, False),
                "q4_k": (14, True), "q5_k": (16, True), "q8_0": (7, True), "q4_0": (2, True),
                "q5_0": (8, True)}


def needs_quantizer(outtype: str) -> None:
    if outtype in K_TYPES:
        pytest.importorskip("edgenano.convert.quants", reason="K-quant quantizer not built yet")


class Case:
    """One tiny checkpoint: its HF model, reference logits and converted files (made on demand)."""

    def __init__(self, hf_dir: Path, out_dir: Path):
        from devtools import tiny

        self.hf_dir, self.out_dir = hf_dir, out_dir
        self.model, self.tokenizer = tiny.load_hf(hf_dir)
        self.ref = self.hf_logits()
        self.files: dict[str, Path] = {}

    def hf_logits(self) -> np.ndarray:
        import torch

        with torch.no_grad():
            return self.model(torch.tensor([PROMPT])).logits[0].double().numpy()

    def gguf(self, outtype: str) -> Path:
        """Converted through the command line, once per type."""
        if outtype not in self.files:
            out = self.out_dir / f"{outtype}.gguf"
            assert convert_cli([str(self.hf_dir), "-o", str(out), "--outtype", outtype,
                                "--no-progress"]) == 0
            self.files[outtype] = out
        return self.files[outtype]

    def dequantized_logits(self, path: Path) -> np.ndarray:
        """transformers' logits with every matrix replaced by the GGUF's dequantized values."""
        import torch

        sources = {t.spec.name: t.spec.source for t in plan_conversion(self.hf_dir).tensors
                   if t.spec.matrix}  # the rest is F32 in every type
        state = self.model.state_dict()
        saved = {k: v.clone() for k, v in state.items()}
        for t in gguf.GGUFReader(path).tensors:
            if t.name not in sources:
                continue
            key = sources[t.name]
            key = key if key in state else key.replace("backbone.", "model.", 1)
            state[key].copy_(torch.from_numpy(gguf.quants.dequantize(t.data, t.tensor_type)))
        try:
            return self.hf_logits()
        finally:
            self.model.load_state_dict(saved)


@pytest.fixture(scope="module")
def case(tiny_checkpoint, tmp_path_factory):
    cache: dict[str, Case] = {}

    def get(name: str) -> Case:
        if name not in cache:
            base, overrides = CONFIGS[name]
            cache[name] = Case(tiny_checkpoint(base, **overrides), tmp_path_factory.mktemp(name))
        return cache[name]

    return get


def llama_logits(path: Path, tokens: list[int]) -> np.ndarray:
    return conftest_llama_logits(path, tokens)


def check_type(c: Case, outtype: str) -> tuple[float, float]:
    path = c.gguf(outtype)
    got = llama_logits(path, PROMPT)
    vs_hf = nmse(got, c.ref)
    vs_deq = nmse(got, c.dequantized_logits(path)) if outtype != "f32" else vs_hf
    print(f"{outtype:7s} NMSE vs transformers {vs_hf:.2e}, vs dequantized weights {vs_deq:.2e}")
    assert vs_hf <= NMSE_LLAMACPP_VS_HF[outtype]
    assert vs_deq <= NMSE_LLAMACPP_VS_HF_DEQUANTIZED[outtype]
    return vs_hf, vs_deq


@pytest.mark.parametrize("name", ["mix", "attn_first", "groups4"])
def test_f32_logits_match_transformers(case, name):
    check_type(case(name), "f32")


@pytest.mark.parametrize("outtype", list(OUTTYPES))
def test_every_type_loads_and_agrees(case, outtype):
    """The fast default: every output type on the config where K-quants are K-quants."""
    needs_quantizer(outtype)
    check_type(case("kwide"), outtype)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["mix", "attn_first", "groups4"])
@pytest.mark.parametrize("outtype", [t for t in OUTTYPES if t != "f32"])
def test_type_matrix(case, name, outtype):
    needs_quantizer(outtype)
    check_type(case(name), outtype)


@pytest.mark.parametrize("name", ["mix", "kwide"])
@pytest.mark.parametrize("outtype", list(LLAMA_FTYPES))
def test_types_match_llama_quantize(case, tmp_path, name, outtype):
    """Our per-tensor types equal llama_model_quantize's on our f32 file (presets, fallbacks)."""
    c = case(name)
    ftype, pure = LLAMA_FTYPES[outtype]
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype, params.pure, params.nthread = ftype, pure, 2
    out = tmp_path / "llama.gguf"
    rc = llama_cpp.llama_model_quantize(str(c.gguf("f32")).encode(), str(out).encode(),
                                        ctypes.byref(params))
    assert rc == 0
    reader = gguf.GGUFReader(out)
    theirs = {t.name: t.tensor_type for t in reader.tensors}
    ours = {t.spec.name: t.type for t in plan_conversion(c.hf_dir, outtype).tensors}
    assert ours == theirs
    assert reader.fields["general.file_type"].contents() == int(OUTTYPES[outtype].ftype)


def tokenization_strings(tokenizer) -> list[str]:
    chat = tokenizer.apply_chat_template(
        [{"role": "system", "content": "Be brief."},
         {"role": "user", "content": "What is 2+2? /think"},
         {"role": "assistant", "content": "<think>\nadd\n</think>\n\n4"},
         {"role": "user", "content": "And 3+3? /no_think"}],
        tokenize=False, add_generation_prompt=True)
    return [
        "Hello world", "The quick brown fox jumps over the lazy dog.",
        "Résumé, naïve café, Größe; ÀÉÎÕÜ ǅ ᾈ", "Ελληνικά русский текст",
        "日本語のテキスト, 中文文本。", "emoji 🙂👍🏽 and symbols ©®™ ← → ∑ √",
        "digits 0123456789 3.14159 1,000,000 2024-06-01", "don't I'm they'll O'Neil",
        "  two  spaces   three    four", "\n", "\n\n\nthree newlines\n", " ", "",
        "tab\there\r\nCRLF\rCR", "x  \n  y \t\n\tz", "    indented code(x) {\n\treturn x;\n}",
        "<SPECIAL_11>User\nhi<SPECIAL_12>", "<s>bos</s> <unk><SPECIAL_10>System\n",
        "<think>\nreasoning\n</think>\n\nanswer", "<TOOLCALL>[{\"name\": \"f\"}]</TOOLCALL>",
        chat,
    ]


@pytest.mark.parametrize("name", ["mix"])
def test_tokenization_matches_hf(case, name):
    c = case(name)
    llm = llama_cpp.Llama(str(c.gguf("f32")), vocab_only=True, verbose=False)
    try:
        strings = tokenization_strings(c.tokenizer)
        assert "<SPECIAL_11>Assistant\n" in strings[-1]
        for s in strings:
            want = c.tokenizer.encode(s, add_special_tokens=False)
            assert llm.tokenize(s.encode(), add_bos=False, special=True) == want, repr(s)
        # specials are single control tokens; with special=False they are plain text
        assert llm.tokenize(b"<SPECIAL_12>", add_bos=False, special=True) == [12]
        assert len(llm.tokenize(b"<SPECIAL_12>", add_bos=False, special=False)) > 1
        assert (llm.token_bos(), llm.token_eos()) == (1, 12)
    finally:
        llm.close()
