"""Batched decode (Model.eval_batch): one step for several sequences, each with its own state and
KV length, against the same sequences decoded alone, on the native engine per weight type and on
the NumPy reference (whose eval_batch is a loop, so it must agree exactly)."""

from __future__ import annotations

import gguf
import numpy as np
import pytest

from edgenano import Model
from edgenano.backends import ContextOverflow

from .conftest import nmse
from .tolerances import BATCH_DECODE_VS_SOLO_NMSE

_C = pytest.importorskip("edgenano._C")

KWIDE = dict(hybrid_override_pattern="M-*-M-", hidden_size=256, intermediate_size=512,
             num_attention_heads=4, num_key_value_heads=2, head_dim=64, mamba_num_heads=8,
             mamba_head_dim=32, n_groups=2, ssm_state_size=16)


@pytest.fixture(scope="module")
def gguf_file(tiny_checkpoint, tmp_path_factory):
    from edgenano.convert import convert_checkpoint

    cache: dict = {}

    def get(outtype: str):
        if outtype not in cache:
            out = tmp_path_factory.mktemp(f"batch_{outtype}") / "model.gguf"
            cache[outtype] = convert_checkpoint(tiny_checkpoint("mix", **KWIDE), out, outtype)
        return cache[outtype]

    return get


def _run(model, B: int, steps: int = 3, seed: int = 0):
    """(logits decoded alone, logits batched) after `steps` greedy steps of B sequences with
    prompts of different lengths (so different KV lengths in one batch)."""
    rng = np.random.default_rng(seed)
    prompts = [rng.integers(16, 400, size=3 + 5 * b).tolist() for b in range(B)]
    solo, batch = [], []
    for p in prompts:
        a, b = model.new_state(), model.new_state()
        model.eval(a, p)
        model.eval(b, p)
        solo.append(a)
        batch.append(b)
    nxt = rng.integers(16, 400, size=B).tolist()
    got_solo, got_batch = [], []
    for _ in range(steps):
        one = np.stack([model.eval(s, [t]) for s, t in zip(solo, nxt)])
        many = model.eval_batch(batch, nxt)
        got_solo.append(one)
        got_batch.append(many)
        nxt = [int(i) for i in one.argmax(1)]
    assert [s.n_past for s in solo] == [s.n_past for s in batch]
    return np.stack(got_solo), np.stack(got_batch)


# Float weights: batches below the switch to the f32 panels (4 rows) run the same dot kernels as
# one token, row by row: bit-identical.
@pytest.mark.parametrize("outtype,B", [("f32", 2), ("f32", 3), ("f16", 3)])
def test_small_float_batch_is_bit_identical(gguf_file, outtype, B):
    m = Model(gguf_file(outtype), n_ctx=256, n_threads=2)
    solo, batch = _run(m, B)
    assert np.array_equal(solo, batch)


# Otherwise the matmuls over B rows may take another kernel than one token (f32 panels, the
# multi-token int8 dots, int8 panels), which sums in another order; with quantized weights the
# activations are quantized to int8 after that, so a last-bit difference can move a code by one
# step: close, within the pinned bound per kind of weight (measured figures in tolerances.py).
@pytest.mark.parametrize("outtype,B", [("f32", 4), ("f32", 16), ("q8_0", 2), ("q8_0", 24),
                                       ("q4_0", 8), ("q4_k_m", 2), ("q4_k_m", 16)])
def test_batch_within_bound(gguf_file, outtype, B):
    m = Model(gguf_file(outtype), n_ctx=256, n_threads=2)
    solo, batch = _run(m, B)
    bound = BATCH_DECODE_VS_SOLO_NMSE["float" if outtype in ("f32", "f16") else "quantized"]
    assert nmse(batch, solo) <= bound


def test_more_sequences_than_a_scratch_batch(gguf_file):
    """More sequences than n_batch rows: run in groups, same results as groups run alone."""
    m = Model(gguf_file("f32"), n_ctx=256, n_threads=2, n_batch=2)
    solo, batch = _run(m, 5, steps=2)
    assert np.array_equal(solo, batch)


def test_reference_eval_batch_is_its_loop(gguf_file):
    m = Model(gguf_file("f32"), backend="reference", n_ctx=256)
    solo, batch = _run(m, 3, steps=2)
    assert np.array_equal(solo, batch)


def test_native_batch_matches_reference(gguf_file):
    nat = Model(gguf_file("q8_0"), n_ctx=256, n_threads=2)
    ref = Model(gguf_file("q8_0"), backend="reference", n_ctx=256)
    _, a = _run(nat, 4, steps=2)
    _, b = _run(ref, 4, steps=2)
    from .tolerances import ENGINE_DECODE_VS_REFERENCE_NMSE

    assert nmse(a, b) <= ENGINE_DECODE_VS_REFERENCE_NMSE["q8_0"]


def test_bad_batches_are_refused(gguf_file):
    m = Model(gguf_file("f32"), n_ctx=8, n_threads=2)
    a, b = m.new_state(), m.new_state()
    with pytest.raises(ValueError, match="ids for"):
        m.eval_batch([a, b], [1])
    with pytest.raises(ValueError, match="twice"):
        m.eval_batch([a, a], [1, 2])
    with pytest.raises(ValueError, match="out of range"):
        m.eval_batch([a, b], [1, 10**6])
    m.eval(a, list(range(16, 24)))  # full
    with pytest.raises(ContextOverflow):
        m.eval_batch([a, b], [1, 2])
    assert b.n_past == 0  # nothing was fed on refusal


@pytest.mark.parametrize("outtype", ["q8_0", "q4_0", "q4_k_m"])
def test_packed_weights_agree_with_file_layout(gguf_file, outtype, monkeypatch):
    """With AVX-512 VNNI the CPU backend packs its Q4_0/Q5_0/Q8_0/Q4_K matmul weights at load into
    the row-lane dots' 16-row layout (EDGENANO_REPACK=0 keeps the file's). Several tokens take the
    same kernel either way; one token (the logits of a prefill too) takes the one-token dots from
    the file's rows, which sum in another order: within the batch bound. With the AVX-512 dots
    switched off after loading, the packed model unpacks its rows for the AVX2 kernels: bit-identical
    to the file's layout on them."""
    if not _C.kernels.packable(int(gguf.GGMLQuantizationType.Q8_0)):
        pytest.skip("no AVX-512 VNNI on this CPU (or not built): nothing is packed")
    path = gguf_file(outtype)
    packed = Model(path, n_ctx=256, n_threads=2)
    monkeypatch.setenv("EDGENANO_REPACK", "0")
    plain = Model(path, n_ctx=256, n_threads=2)
    assert packed.backend.impl.packed_bytes > 0 and plain.backend.impl.packed_bytes == 0
    rng = np.random.default_rng(5)
    prompts = [rng.integers(16, 400, size=n).tolist() for n in (7, 12, 3)]

    def run(m):
        states = [m.new_state() for _ in prompts]
        pre = [m.eval(s, p) for s, p in zip(states, prompts)]
        step = m.eval_batch(states, [17, 18, 19])
        one = m.eval(states[0], [20])
        return np.stack(pre), step, one

    a, b = run(packed), run(plain)
    for x, y in zip(a, b):
        assert nmse(x, y) <= BATCH_DECODE_VS_SOLO_NMSE["quantized"]
    _C.kernels.set_allow_avx512(False)
    try:
        c, d = run(packed), run(plain)
    finally:
        _C.kernels.set_allow_avx512(True)
    for x, y in zip(c, d):
        assert np.array_equal(x, y)
    assert nmse(c[1], a[1]) <= BATCH_DECODE_VS_SOLO_NMSE["quantized"]
