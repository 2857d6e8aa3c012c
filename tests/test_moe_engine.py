"""The native engine's MoE layer (SPEC section 1.4) against the NumPy reference and llama.cpp on
the same files: ours, and files written by llama.cpp's own converter."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))  # tests/ is no package (importlib mode)
from conftest import _llama_sdist, gguf_converter, nmse  # noqa: E402
from conftest import llama_logits as conftest_llama_logits  # noqa: E402
from tolerances import (  # noqa: E402
    ENGINE_DECODE_VS_REFERENCE_NMSE,
    ENGINE_PREFILL_VS_REFERENCE_NMSE,
    ENGINE_SPLIT_VS_WHOLE_NMSE,
    NMSE_MOE_ENGINE_VS_LLAMACPP,
    NMSE_MOE_LLAMACPP_FILE_VS_OURS,
    NMSE_MOE_REFERENCE_VS_LLAMACPP,
)

from devtools.tiny import MOE_CONFIGS  # noqa: E402
from edgenano import Model  # noqa: E402
from edgenano.backends import ReferenceBackend  # noqa: E402
from edgenano.gguf_model import load_gguf  # noqa: E402

pytest.importorskip("edgenano._C")

K_WIDE = dict(hybrid_override_pattern="ME*E" * 3, hidden_size=256, num_attention_heads=4,
              num_key_value_heads=2, head_dim=64, mamba_num_heads=8, mamba_head_dim=32,
              n_groups=2, ssm_state_size=16, n_routed_experts=4, num_experts_per_tok=2,
              moe_intermediate_size=256, moe_shared_expert_intermediate_size=512)
CONFIGS = {name: (name, {}) for name in MOE_CONFIGS} | {"moe_kwide": ("moe", K_WIDE)}
PROMPT = np.random.default_rng(0).integers(16, 512, size=45).tolist()
SPLIT = 30


@pytest.fixture(scope="module")
def gguf_file(tiny_checkpoint, tmp_path_factory):
    """gguf_file(config, outtype) -> path, converted once per module."""
    return gguf_converter(tiny_checkpoint, tmp_path_factory, CONFIGS)


def reference(path, prompt=PROMPT) -> np.ndarray:
    return ReferenceBackend(load_gguf(path), dtype=np.float64).logits(prompt)


def native(path, **kw) -> Model:
    kw.setdefault("n_threads", 2)
    return Model(path, backend="native", **kw)


def llama_logits(path, prompt=PROMPT) -> np.ndarray:
    return conftest_llama_logits(path, prompt)


@pytest.mark.parametrize("config", list(MOE_CONFIGS))
def test_prefill_and_decode_match_reference(gguf_file, config):
    """f32 weights and KV: prefill (experts on gathered token groups) and decode (one token, its
    k experts) equal the float64 reference to rounding."""
    path = gguf_file(config)
    ref = reference(path)
    m = native(path, kv_type="f32")
    assert nmse(m.logits(PROMPT), ref) <= ENGINE_PREFILL_VS_REFERENCE_NMSE
    s = m.new_state()
    m.eval(s, PROMPT[:SPLIT])
    dec = np.stack([m.eval(s, [t]) for t in PROMPT[SPLIT:]])
    assert nmse(dec, ref[SPLIT:]) <= ENGINE_DECODE_VS_REFERENCE_NMSE["f32"]


def test_batch_chunks_equal_one_batch(gguf_file):
    path = gguf_file("moe_latent")
    whole = native(path, kv_type="f32").logits(PROMPT)
    for n_batch in (1, 7):
        chunks = native(path, kv_type="f32", n_batch=n_batch).logits(PROMPT)
        assert nmse(chunks, whole) <= ENGINE_SPLIT_VS_WHOLE_NMSE


def test_profile_has_expert_operations(gguf_file):
    m = native(gguf_file("moe"), kv_type="f32")
    m.backend.profiling = True
    m.logits(PROMPT[:9])
    ops = {r["op"] for r in m.backend.profile(reset=True)}
    assert {"gather_rows", "scatter_add_rows"} <= ops


@pytest.mark.parametrize("outtype", ["f32", "f16", "q8_0", "q4_0", "q4_k", "q6_k", "q4_k_m"])
def test_against_llama_cpp(gguf_file, outtype):
    """Our engine and llama.cpp on the same file (both f16 KV), each against the reference."""
    pytest.importorskip("llama_cpp")
    path = gguf_file("moe_kwide", outtype)
    theirs, ours, ref = llama_logits(path), native(path).logits(PROMPT), reference(path)
    print(f"{outtype}: ours vs llama.cpp {nmse(ours, theirs):.2e}, ours vs reference "
          f"{nmse(ours, ref):.2e}, llama.cpp vs reference {nmse(theirs, ref):.2e}")
    assert nmse(ours, theirs) <= NMSE_MOE_ENGINE_VS_LLAMACPP[outtype]


@pytest.mark.parametrize("config", ["moe", "moe_attn_first"])
def test_files_from_llama_cpp_converter(tiny_checkpoint, gguf_file, tmp_path, config):
    """llama.cpp's own convert_hf_to_gguf.py (llama-cpp-python 0.3.36's sdist) on the same
    checkpoint: we load its file, and our engine, our reference and llama.cpp agree on it and
    with our own file. (Its converter refuses moe_latent's Mamba head width 40.)"""
    pytest.importorskip("llama_cpp")
    theirs_file = tmp_path / "llama.gguf"
    subprocess.run([sys.executable, "-m", "devtools.llama_convert", str(_llama_sdist()),
                    str(tiny_checkpoint(config)), str(theirs_file), "--outtype", "f32"],
                   check=True, capture_output=True, cwd=Path(__file__).resolve().parents[1],
                   timeout=600)
    m = load_gguf(theirs_file)
    assert m.metadata["general.architecture"] == "nemotron_h_moe"
    ours_file = gguf_file(config)
    ref = reference(theirs_file)
    eng = native(theirs_file, kv_type="f32").logits(PROMPT)
    assert nmse(eng, ref) <= ENGINE_PREFILL_VS_REFERENCE_NMSE
    assert nmse(llama_logits(theirs_file), ref) <= NMSE_MOE_REFERENCE_VS_LLAMACPP
    assert nmse(ref, reference(ours_file)) <= NMSE_MOE_LLAMACPP_FILE_VS_OURS


def test_batched_decode_equals_solo(gguf_file):
    """Model.eval_batch (the server's batched decode) on a MoE file: the B rows are routed as
    tokens of one batch; each sequence's logits equal its solo decode (f32 weights and KV)."""
    m = native(gguf_file("moe_latent"), kv_type="f32")
    prompts = [PROMPT[:5], PROMPT[7:19], PROMPT[20:23]]
    solo, batch = [], []
    for p in prompts:
        s = m.new_state()
        m.eval(s, p)
        solo.append(s.copy())
        batch.append(s)
    nxt = [40, 41, 42]
    many = m.eval_batch(batch, nxt)
    one = np.stack([m.eval(s, [t]) for s, t in zip(solo, nxt, strict=True)])
    assert nmse(many, one) <= ENGINE_SPLIT_VS_WHOLE_NMSE
