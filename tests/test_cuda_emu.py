"""The CUDA kernels (csrc/kernels/cuda) run on the CPU through the SIMT emulator, each against its
CPU twin (_C.kernels) on small shapes with several blocks, odd sizes and tails; bounds from
tests/tolerances.py. The same sources are what nvcc builds for the GPU backend."""

from __future__ import annotations

import numpy as np
import pytest
from gguf import GGMLQuantizationType as QT

from .conftest import nmse
from .test_kernels import WEIGHT_TYPES, cache_rows, random_rows, rng_for, scan_inputs
from .tolerances import CUDA_EMU_F32_NMSE, CUDA_EMU_GEMM_TF32_NMSE, CUDA_EMU_MATVEC_NMSE

C = pytest.importorskip("edgenano._C")
K, E = C.kernels, C.cuda_emu


def cols_for(qtype) -> int:
    """Several warps' worth of blocks with a tail (K types: 3 super-blocks, a partial group of 4;
    32-value types: 17 blocks; float types: not a multiple of 32)."""
    bs = {QT.F32: 1, QT.F16: 1, QT.BF16: 1}.get(qtype, 0)
    return 83 if bs else 768 if qtype in (QT.Q4_K, QT.Q5_K, QT.Q6_K) else 544


@pytest.mark.parametrize("T", [1, 3])
@pytest.mark.parametrize("qtype", WEIGHT_TYPES, ids=lambda t: t.name)
def test_matvec(qtype, T):
    rng, cols = rng_for("cu-mv", qtype, T), cols_for(qtype)
    raw = random_rows(qtype, 37, cols, rng)  # 37 rows: 10 blocks of 4 warps, the last partial
    x = rng.standard_normal((T, cols)).astype(np.float32)
    got = E.matmul(raw, int(qtype), cols, x, path="vec")
    assert nmse(got, K.matmul(raw, int(qtype), cols, x, path="vec")) <= CUDA_EMU_MATVEC_NMSE


@pytest.mark.parametrize("T", [9, 70])  # 70: two token tiles, the second partial
@pytest.mark.parametrize("qtype", WEIGHT_TYPES, ids=lambda t: t.name)
def test_gemm(qtype, T):
    rng, cols = rng_for("cu-mm", qtype, T), cols_for(qtype)
    raw = random_rows(qtype, 70, cols, rng)  # 70 rows: two row tiles
    x = rng.standard_normal((T, cols)).astype(np.float32)
    got = E.matmul(raw, int(qtype), cols, x, path="gemm")
    assert nmse(got, K.matmul(raw, int(qtype), cols, x, path="gemm")) <= CUDA_EMU_GEMM_TF32_NMSE


def test_matmul_auto_switches_at_gemm_min_tokens():
    rng, cols = rng_for("cu-auto"), 64
    raw = random_rows(QT.Q8_0, 5, cols, rng)
    for T in (E.gemm_min_tokens() - 1, E.gemm_min_tokens()):
        x = rng.standard_normal((T, cols)).astype(np.float32)
        path = "vec" if T < E.gemm_min_tokens() else "gemm"
        assert np.array_equal(E.matmul(raw, int(QT.Q8_0), cols, x),
                              E.matmul(raw, int(QT.Q8_0), cols, x, path=path))


@pytest.mark.parametrize("qtype", WEIGHT_TYPES, ids=lambda t: t.name)
def test_embed(qtype):
    cols = cols_for(qtype)
    raw = random_rows(qtype, 11, cols, rng_for("cu-emb", qtype))
    ids = np.array([3, 0, 10, 3, 7], np.int32)
    assert np.array_equal(E.embed(raw, int(qtype), cols, ids),
                          K.dequantize(raw, int(qtype), cols)[ids])


@pytest.mark.parametrize("n", [70, 1100])  # under one block of 256 threads; several strides
def test_rmsnorm(n):
    rng = rng_for("cu-rms", n)
    x, w = (rng.standard_normal((6, n)) * 3).astype(np.float32), rng.standard_normal(n)
    w = w.astype(np.float32)
    assert nmse(E.rmsnorm(x, w, 1e-5), K.rmsnorm(x, w, 1e-5)) <= CUDA_EMU_F32_NMSE


@pytest.mark.parametrize("groups", [1, 4])
def test_gated_rmsnorm(groups):
    rng = rng_for("cu-gated", groups)
    y, z, w = (rng.standard_normal(s).astype(np.float32) for s in ((5, 600), (5, 600), (600,)))
    got = E.gated_rmsnorm(y, 3 * z, w, groups, 1e-5)
    assert nmse(got, K.gated_rmsnorm(y, 3 * z, w, groups, 1e-5)) <= CUDA_EMU_F32_NMSE


def test_relu2_softplus_exact():
    rng = rng_for("cu-act")
    x = rng.standard_normal((7, 333)).astype(np.float32)
    assert np.array_equal(E.relu2(x), K.relu2(x))
    v, b = (rng.standard_normal((6, 300)) * 12).astype(np.float32), rng.standard_normal(300)
    assert np.array_equal(E.softplus(v, b.astype(np.float32)), K.softplus(v, b.astype(np.float32)))


@pytest.mark.parametrize("T", [1, 11])  # one decode step; a chunk
@pytest.mark.parametrize("k", [3, 4])
def test_causal_conv(T, k):
    rng = rng_for("cu-conv", T, k)
    args = [rng.standard_normal(s).astype(np.float32) for s in ((T, 300), (k - 1, 300), (300, k),
                                                                 (300,))]
    y, st = E.causal_conv(*args, silu=True)
    y_ref, st_ref = K.causal_conv(*args, silu=True)
    assert nmse(y, y_ref) <= CUDA_EMU_F32_NMSE
    assert np.array_equal(st, st_ref)  # the state is a copy of inputs


@pytest.mark.parametrize("T,N", [(1, 24), (5, 24), (37, 24), (3, 128), (2, 200)])
def test_ssm_scan(T, N):
    args = scan_inputs(T, H=6, P=10, N=N, G=2)  # 60 (h, p) rows: 15 blocks of 4 warps
    y, st = E.ssm_scan(*args)
    y_ref, st_ref = K.ssm_scan(*args, chunk=0)
    assert nmse(y, y_ref) <= CUDA_EMU_F32_NMSE
    assert nmse(st, st_ref) <= CUDA_EMU_F32_NMSE


@pytest.mark.parametrize("kv_type", [QT.F32, QT.F16, QT.Q8_0], ids=lambda t: t.name)
def test_kv_store_exact(kv_type):
    x = rng_for("cu-kv", kv_type).standard_normal((9, 192)).astype(np.float32)
    assert np.array_equal(E.kv_store(x, int(kv_type)), K.kv_store(x, int(kv_type)))


@pytest.mark.parametrize("kv_type", [QT.F16, QT.Q8_0], ids=lambda t: t.name)
@pytest.mark.parametrize("T,n_past,d", [(1, 0, 64), (1, 37, 64), (1, 600, 64), (5, 3, 96),
                                        (3, 254, 64), (7, 9, 32)])
def test_attention(kv_type, T, n_past, d):
    """GQA 6 query heads over 2 KV heads; 600 and 254+3 keys: several key splits, the last
    partial; d=96: lanes with a partial third element."""
    rng, Hq, Hkv = rng_for("cu-attn", kv_type, T, n_past, d), 6, 2
    q = rng.standard_normal((T, Hq, d)).astype(np.float32)
    k, v = (rng.standard_normal((n_past + T, Hkv, d)).astype(np.float32) for _ in range(2))
    kc, vc = cache_rows(k, kv_type), cache_rows(v, kv_type)
    got = E.attention(q, kc, vc, n_past, Hkv, int(kv_type))
    assert nmse(got, K.attention(q, kc, vc, n_past, Hkv, int(kv_type))) <= CUDA_EMU_F32_NMSE
