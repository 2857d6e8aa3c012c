"""The NumPy reference's MoE layer (SPEC section 1.4): its router and grouped experts against a
plain per-token loop, and whole tiny MoE models against transformers and llama.cpp."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))  # tests/ is no package (importlib mode)
from conftest import nmse  # noqa: E402
from tolerances import (  # noqa: E402
    NMSE_MOE_REFERENCE_VS_LLAMACPP,
    NMSE_REFERENCE_KERNEL_F64,
    NMSE_REFERENCE_VS_HF_F32,
)

from devtools.tiny import MOE_CONFIGS  # noqa: E402
from edgenano import reference as R  # noqa: E402
from edgenano.gguf_model import load_gguf  # noqa: E402

CONFIGS = list(MOE_CONFIGS)


def prompt(config: str, seed: int = 0) -> np.ndarray:
    """Longer than two SSD chunks and not a multiple of the chunk size."""
    return np.random.default_rng(seed).integers(0, 512, 2 * MOE_CONFIGS[config]["chunk_size"] + 5)


def test_grouped_experts_equal_a_per_token_loop():
    """Grouping tokens by expert changes nothing: float64, against each token's k experts."""
    rng = np.random.default_rng(1)
    T, E, X, F, k = 9, 12, 5, 7, 3
    h = rng.standard_normal((T, E))
    gate, bias = rng.standard_normal((X, E)), 0.3 * rng.standard_normal(X)
    up, down = rng.standard_normal((X, F, E)), rng.standard_normal((X, E, F))
    chosen, w = R.moe_route(h, gate, bias, k, True, 2.5)
    assert chosen.shape == (T, k) and np.allclose(w.sum(axis=1), 2.5, rtol=1e-6)
    got = R.moe_experts(h, chosen, w, up, down)
    want = np.zeros_like(h)
    for t in range(T):
        s = 1 / (1 + np.exp(-(gate @ h[t])))
        top = np.argsort(-(s + bias))[:k]
        assert sorted(top) == sorted(chosen[t])
        for e in top:
            want[t] += s[e] / s[top].sum() * 2.5 * (down[e] @ np.maximum(up[e] @ h[t], 0) ** 2)
    assert nmse(got, want) <= 1e-12  # the router runs in float32
    w64 = w.astype(np.float64)
    assert nmse(R.moe_experts(h, chosen, w64, up, down),
                R.moe_experts(h, chosen, w64, up, down)) <= NMSE_REFERENCE_KERNEL_F64


def test_bias_chooses_but_does_not_weigh():
    h = np.ones((1, 2), np.float32)
    gate = np.array([[1, 1], [0, 0], [-1, -1]], np.float32)  # scores ~0.88, 0.5, 0.12
    chosen, w = R.moe_route(h, gate, np.array([0, 0, 10], np.float32), 1, False, 1.0)
    assert chosen[0, 0] == 2 and w[0, 0] == pytest.approx(1 / (1 + np.exp(2)), rel=1e-6)


@pytest.fixture(scope="module")
def built(tiny_checkpoint, tmp_path_factory):
    from edgenano.convert import convert_checkpoint

    cache = {}

    def get(config: str):
        if config not in cache:
            hf_dir = tiny_checkpoint(config)
            out = tmp_path_factory.mktemp("gguf") / f"{config}-f32.gguf"
            cache[config] = hf_dir, convert_checkpoint(hf_dir, out, "f32")
        return cache[config]

    return get


@pytest.mark.parametrize("config", CONFIGS)
def test_prefill_and_decode_match_transformers(built, config):
    import torch

    from devtools import tiny

    hf_dir, path = built(config)
    ids = prompt(config)
    model, _ = tiny.load_hf(hf_dir)
    x = torch.tensor(ids, dtype=torch.long)[None]
    with torch.no_grad():
        hf_prefill = model(x).logits[0].numpy()
        past, hf_decode = None, []
        for t in range(len(ids)):
            out = model(x[:, t:t + 1], past_key_values=past, use_cache=True)
            past = out.past_key_values
            hf_decode.append(out.logits[0, -1].numpy())
    ref = R.ReferenceModel(load_gguf(path), chunk_size=MOE_CONFIGS[config]["chunk_size"])
    trace = {}
    got = ref.logits(ids, trace=trace)
    chosen = [v for k, v in trace.items() if k.endswith("moe_chosen")]
    assert chosen and all(len(np.unique(c)) > 1 for c in chosen)  # the tokens spread out
    assert nmse(got, hf_prefill) <= NMSE_REFERENCE_VS_HF_F32
    state = ref.new_state()
    dec = np.stack([ref.step(state, int(i)) for i in ids])
    assert nmse(dec, np.stack(hf_decode)) <= NMSE_REFERENCE_VS_HF_F32


@pytest.mark.parametrize("config", CONFIGS)
def test_matches_llama_cpp_on_the_same_file(built, config):
    llama_cpp = pytest.importorskip("llama_cpp")
    _, path = built(config)
    ids = prompt(config).tolist()
    llm = llama_cpp.Llama(str(path), n_ctx=128, n_batch=128, logits_all=True, n_threads=2,
                          verbose=False)
    try:
        llm.eval(ids)
        theirs = np.array(llm.scores[: len(ids)], dtype=np.float64)
    finally:
        llm.close()
    ours = R.ReferenceModel(load_gguf(path), chunk_size=MOE_CONFIGS[config]["chunk_size"])
    assert nmse(ours.logits(ids), theirs) <= NMSE_MOE_REFERENCE_VS_LLAMACPP
