"""The CUDA kernels (csrc/kernels/cuda) run on the CPU through the SIMT emulator, each against its
CPU twin (_C.kernels) on small shapes with several blocks, odd sizes and tails; bounds from
tests/tolerances.py. The same sources are what nvcc builds for the GPU backend."""

from __future__ import annotations

import re

import numpy as np
import pytest
from gguf import GGMLQuantizationType as QT

from edgenano import Model
from edgenano.backends import ReferenceBackend
from edgenano.engine import NativeBackend, NativeState
from edgenano.errors import BackendUnavailable
from edgenano.gguf_model import load_gguf

from .conftest import nmse
from .test_kernels import WEIGHT_TYPES, cache_rows, random_rows, rng_for, scan_inputs
from .tolerances import (
    CUDA_EMU_F32_NMSE,
    CUDA_EMU_GEMM_TF32_NMSE,
    CUDA_EMU_MATVEC_NMSE,
    CUDA_EMU_MODEL_F32_NMSE,
    CUDA_EMU_MODEL_PREFILL_NMSE,
    CUDA_EMU_SSD_NMSE,
    ENGINE_DECODE_VS_REFERENCE_NMSE,
    ENGINE_KV_CACHE_VS_REFERENCE_NMSE,
)

C = pytest.importorskip("edgenano._C")
K, E = C.kernels, C.cuda_emu
ENGINE = "cuda_emu"  # the model tests' backend; tests/test_cuda_gpu.py reruns them on "cuda"


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


def test_relu2_softplus():
    """Exact here (the host's expf / log1pf); within the f32 bound on a GPU's."""
    rng = rng_for("cu-act")
    x = rng.standard_normal((7, 333)).astype(np.float32)
    assert np.array_equal(E.relu2(x), K.relu2(x))
    v, b = (rng.standard_normal((6, 300)) * 12).astype(np.float32), rng.standard_normal(300)
    got, ref = E.softplus(v, b.astype(np.float32)), K.softplus(v, b.astype(np.float32))
    assert np.array_equal(got, ref) if E is C.cuda_emu else nmse(got, ref) <= CUDA_EMU_F32_NMSE


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


# Chunked SSD (prefill) against the CPU's chunk path: odd T, T not a multiple of the chunk, one
# chunk, one token past a chunk, several heads per group, N over one lane's 8 values per warp.
@pytest.mark.parametrize("T,chunk,H,G,N", [(37, 8, 6, 2, 24), (37, 16, 4, 1, 40),
                                           (64, 64, 6, 3, 24), (65, 64, 2, 2, 24),
                                           (130, 64, 4, 2, 130), (5, 256, 6, 2, 24)])
def test_ssm_scan_chunked(T, chunk, H, G, N):
    args = scan_inputs(T, H=H, P=10, N=N, G=G, seed=1)  # random nonzero initial state
    y, st = E.ssm_scan(*args, chunk=chunk)
    y_ref, st_ref = K.ssm_scan(*args, chunk=chunk)
    assert nmse(y, y_ref) <= CUDA_EMU_SSD_NMSE
    assert nmse(st, st_ref) <= CUDA_EMU_SSD_NMSE
    y_rec, st_rec = E.ssm_scan(*args)  # and the device's own recurrence
    assert nmse(y, y_rec) <= CUDA_EMU_SSD_NMSE
    assert nmse(st, st_rec) <= CUDA_EMU_SSD_NMSE


@pytest.mark.parametrize("kv_type", [QT.F32, QT.F16, QT.Q8_0], ids=lambda t: t.name)
def test_kv_store_exact(kv_type):
    x = rng_for("cu-kv", kv_type).standard_normal((9, 192)).astype(np.float32)
    assert np.array_equal(E.kv_store(x, int(kv_type)), K.kv_store(x, int(kv_type)))


@pytest.mark.parametrize("kv_type", [QT.F16, QT.Q8_0], ids=lambda t: t.name)
@pytest.mark.parametrize("T,n_past,d", [(1, 0, 64), (1, 37, 64), (1, 600, 64), (5, 3, 96),
                                        (3, 254, 64), (7, 9, 32), (17, 40, 64), (3, 5, 160)])
def test_attention(kv_type, T, n_past, d):
    """GQA 6 query heads over 2 KV heads. One query: split-K (600 keys: three splits, the last
    partial). Prefill: query tiles of 16 (17: a second, partial tile) against key tiles of 32
    (254+3 keys: a partial last tile); d=96: lanes with a partial third element; d=160: past the
    tiled kernel's 128, so split-K for every query."""
    rng, Hq, Hkv = rng_for("cu-attn", kv_type, T, n_past, d), 6, 2
    q = rng.standard_normal((T, Hq, d)).astype(np.float32)
    k, v = (rng.standard_normal((n_past + T, Hkv, d)).astype(np.float32) for _ in range(2))
    kc, vc = cache_rows(k, kv_type), cache_rows(v, kv_type)
    got = E.attention(q, kc, vc, n_past, Hkv, int(kv_type))
    assert nmse(got, K.attention(q, kc, vc, n_past, Hkv, int(kv_type))) <= CUDA_EMU_F32_NMSE


def test_gather_scatter_rows_exact():
    """The routed experts' row moves: a copy, and one multiply-add per element (the CPU's)."""
    rng = rng_for("cu-rows")
    src = rng.standard_normal((9, 300)).astype(np.float32)
    rows = np.array([7, 0, 3, 8], np.int32)
    assert np.array_equal(E.gather_rows(src, rows), src[rows])
    y, scale = src[:4] * 2, rng.random(4).astype(np.float32)
    dst = rng.standard_normal((9, 300)).astype(np.float32)
    want = dst.copy()
    want[rows] += scale[:, None] * y
    got = E.scatter_add_rows(y, rows, scale, dst)
    # a GPU may fuse the multiply-add (one rounding): within the f32 bound there
    assert np.array_equal(got, want) if E is C.cuda_emu else nmse(got, want) <= CUDA_EMU_F32_NMSE


# ---------------------------------------------------------------- the whole model, emulated


@pytest.fixture(scope="module")
def kwide(tiny_checkpoint, tmp_path_factory):
    """kwide(outtype) -> GGUF path of the engine tests' "kwide" tiny model (K-quants apply)."""
    from edgenano.convert import convert_checkpoint

    from .test_engine import CONFIGS

    cache: dict = {}

    def get(outtype):
        if outtype not in cache:
            base, overrides = CONFIGS["kwide"]
            out = tmp_path_factory.mktemp(f"cuemu_{outtype}") / "model.gguf"
            cache[outtype] = convert_checkpoint(tiny_checkpoint(base, **overrides), out, outtype)
        return cache[outtype]

    return get


def _run(path, engine, kv_type, prompt, split):
    """Logits after a prefill of prompt[:split] and after each decode step of the rest."""
    b = NativeBackend(load_gguf(path), path, n_ctx=128, kv_type=kv_type, engine=engine)
    s = b.new_state()
    out = [b.eval(s, prompt[:split])]
    out += [b.eval(s, [t]) for t in prompt[split:]]
    return np.array(out), b, s


PROMPT = np.random.default_rng(0).integers(16, 512, size=36).tolist()
SPLIT = 30  # >= gemm_min_tokens: the prefill of quantized weights runs the tensor-core tiles


@pytest.mark.parametrize("outtype,kv_type", [("f32", "f16"), ("f32", "q8_0"), ("q8_0", "f16"),
                                             ("q4_k_m", "f16")])
def test_model_prefill_decode_vs_reference(kwide, outtype, kv_type):
    path = kwide(outtype)
    got, b, _ = _run(path, ENGINE, kv_type, PROMPT, SPLIT)
    assert b.name == ENGINE and b.impl.backend == ENGINE
    ref = ReferenceBackend(load_gguf(path), dtype=np.float64).logits(PROMPT)[SPLIT - 1:]
    errs = [nmse(g, r) for g, r in zip(got, ref)]
    if outtype == "f32":
        bound = CUDA_EMU_MODEL_F32_NMSE + (ENGINE_KV_CACHE_VS_REFERENCE_NMSE[kv_type]
                                           if kv_type != "f16" else 0)
        assert max(errs) <= bound
    else:
        assert errs[0] <= CUDA_EMU_MODEL_PREFILL_NMSE
        assert max(errs[1:]) <= ENGINE_DECODE_VS_REFERENCE_NMSE[outtype]


def test_model_emulated_against_cpu_backend(kwide):
    """The emulated CUDA backend and the CPU backend on the same file agree (f32 weights)."""
    path = kwide("f32")
    emu, _, _ = _run(path, ENGINE, "f16", PROMPT, SPLIT)
    cpu, _, _ = _run(path, "cpu", "f16", PROMPT, SPLIT)
    assert max(nmse(e, c) for e, c in zip(emu, cpu)) <= CUDA_EMU_MODEL_F32_NMSE


def test_model_chunked_prefill_against_cpu_backend(kwide):
    """A 70-token prefill (>= the model's chunked-scan threshold: the SSD kernels, two chunks of
    64, the second partial) then decode steps: the emulated backend agrees with the CPU's."""
    path = kwide("f32")
    prompt = np.random.default_rng(1).integers(16, 512, size=74).tolist()
    emu, _, _ = _run(path, ENGINE, "f16", prompt, 70)
    cpu, _, _ = _run(path, "cpu", "f16", prompt, 70)
    assert max(nmse(e, c) for e, c in zip(emu, cpu)) <= CUDA_EMU_MODEL_F32_NMSE


def test_model_snapshots_and_state_export(kwide):
    """Device-to-device snapshots and export/import through the host give the same continuation
    as the original state (the same backend: identical bits)."""
    path = kwide("q4_k_m")
    _, b, s = _run(path, ENGINE, "q8_0", PROMPT[:20], 18)
    snap = b.impl.copy_state(s.impl)
    exported = b.export_state(s)
    restored = b.import_state(exported, PROMPT[:20])
    cont = [b.eval(s, PROMPT[20:23])]
    cont_snap = [b.eval(NativeState(b, snap), PROMPT[20:23])]
    cont_restored = [b.eval(restored, PROMPT[20:23])]
    assert np.array_equal(cont, cont_snap) and np.array_equal(cont, cont_restored)


def test_cuda_backend_without_gpu_says_why(kwide):
    available, reason = C.backend_registry()["cuda"]
    if available:
        pytest.skip("a CUDA device is present (tests/test_cuda_gpu.py covers it)")
    assert reason  # "not built into this edgenano" or the driver's / device's own words
    with pytest.raises(BackendUnavailable, match="'cuda' is not available: " + re.escape(reason)):
        Model(kwide("f32"), backend="cuda")


def test_model_api_selects_the_backend(kwide):
    """Model(path, backend=...) reaches the C++ backend by name, all-position logits included."""
    path = kwide("f32")
    m = Model(path, backend=ENGINE, n_ctx=64)
    assert m.backend.name == ENGINE and m.backend.impl.backend == ENGINE
    got = m.logits(PROMPT[:12])  # 12 tokens: the prefill kernels (f32 dots here, tiled attn)
    ref = Model(path, backend="native", n_ctx=64).logits(PROMPT[:12])
    assert got.shape == ref.shape and nmse(got, ref) <= CUDA_EMU_MODEL_F32_NMSE


def test_model_batched_decode_matches_solo(kwide):
    """eval_batch (several sequences' decode steps as one batch, the server's path) on the CUDA
    backend: the same bits as each sequence decoded alone (below gemm_min_tokens rows the
    matmuls are per-token int8 dots; conv, scan and attention run per sequence)."""
    path = kwide("q4_k_m")
    b = NativeBackend(load_gguf(path), path, n_ctx=64, engine=ENGINE)
    prompts = [PROMPT[:5], PROMPT[7:16], PROMPT[20:22]]
    batch = [b.new_state() for _ in prompts]
    solo = [b.new_state() for _ in prompts]
    for st, st2, p in zip(batch, solo, prompts):
        b.eval(st, p)
        b.eval(st2, p)
    for step in range(3):
        ids = [PROMPT[30 + step + i] for i in range(len(prompts))]
        got = b.eval_batch(batch, ids)
        ref = np.stack([b.eval(st, [t]) for st, t in zip(solo, ids)])
        assert np.array_equal(got, ref)


def _decode(path, mode, prompt, split, kv_type="f16", n_ctx=128):
    """Logits of each decode step after a prefill, with decode graphs in `mode` (1 on, 0 off,
    2 the planted bug: the first graph replayed without updates), and the graph counters."""
    b = NativeBackend(load_gguf(path), path, n_ctx=n_ctx, kv_type=kv_type, engine=ENGINE)
    b.impl.set_graph_mode(mode)
    s = b.new_state()
    if split:
        b.eval(s, prompt[:split])
    out = np.array([b.eval(s, [t]) for t in prompt[split:]])
    return out, b.impl.graph_stats()


@pytest.mark.parametrize("outtype,kv_type", [("q4_k_m", "f16"), ("f32", "q8_0")])
def test_decode_graph_replays_the_eager_bits(kwide, outtype, kv_type):
    """Twelve decode steps (the KV length grows each step: attention's length and the cache row
    are recorded parameters) as graph replays give the eager steps' bits; the graph is
    instantiated once and updated in place after that."""
    path = kwide(outtype)
    eager, st0 = _decode(path, 0, PROMPT, 24, kv_type)
    graph, st = _decode(path, 1, PROMPT, 24, kv_type)
    assert st0 == {"captured": 0, "instantiated": 0, "updated": 0, "aborted": 0}
    # every step recorded but those where device scratch had to grow first (they run eagerly)
    assert st["captured"] + st["aborted"] == 12 and st["captured"] >= 10
    assert st["instantiated"] == 1 and st["updated"] == st["captured"] - 1
    assert np.array_equal(graph, eager)


def test_decode_graph_steps_eagerly_while_scratch_grows(kwide):
    """A fresh model's first step finds its device scratch empty, and a recording cannot grow
    it: that step's capture is dropped and it runs eagerly, the next ones replay; all give the
    eager bits."""
    path = kwide("q8_0")
    eager, _ = _decode(path, 0, PROMPT[:10], 0)
    graph, st = _decode(path, 1, PROMPT[:10], 0)
    assert st["aborted"] == 1 and st["captured"] == 9
    assert np.array_equal(graph, eager)


def test_stale_decode_graph_is_caught(kwide):
    """The planted bug: replaying the first instantiated graph without updating it (its KV
    length, cache row and attention split frozen) gives wrong logits, which the comparison
    with eager steps catches."""
    path = kwide("f32")
    eager, _ = _decode(path, 0, PROMPT, 24)
    stale, st = _decode(path, 2, PROMPT, 24)
    assert st["captured"] >= 10 and st["updated"] == 0
    assert not np.array_equal(stale, eager)
    assert max(nmse(s, e) for s, e in zip(stale, eager)) > 1e-4


def test_decode_graph_off_while_profiling(kwide):
    """The profiler times each operation as it runs: no graphs while it is on."""
    path = kwide("f32")
    b = NativeBackend(load_gguf(path), path, n_ctx=64, engine=ENGINE)
    b.impl.profiling = True
    s = b.new_state()
    b.eval(s, PROMPT[:5])
    for t in PROMPT[5:8]:
        b.eval(s, [t])
    assert b.impl.graph_stats()["captured"] == 0
    b.impl.profiling = False
    b.eval(s, [PROMPT[8]])
    b.eval(s, [PROMPT[9]])
    assert b.impl.graph_stats()["captured"] >= 1


@pytest.fixture(scope="module")
def moe_file(tiny_checkpoint, tmp_path_factory):
    from devtools.tiny import MOE_CONFIGS

    from .conftest import gguf_converter

    return gguf_converter(tiny_checkpoint, tmp_path_factory, {n: (n, {}) for n in MOE_CONFIGS})


@pytest.mark.parametrize("config", ["moe", "moe_latent"])
def test_moe_model_on_the_device(moe_file, config):
    """A tiny MoE model (routed experts: gathered token rows, weighted scatter-add back, on the
    device; the latent variant too) prefills and decodes on cuda_emu as on the cpu backend; its
    decode steps run eagerly (the router's top-k is on the host): no graphs."""
    path = moe_file(config)
    counted = hasattr(E, "launches")  # the emulator counts launches per kernel
    before = dict(E.launches()) if counted else {}
    emu, b, _ = _run(path, ENGINE, "f16", PROMPT, SPLIT)
    cpu, _, _ = _run(path, "cpu", "f16", PROMPT, SPLIT)
    if counted:
        after = dict(E.launches())
        for k in ("gather_rows_kernel", "scatter_add_rows_kernel"):
            assert after.get(k, 0) > before.get(k, 0)
    assert b.impl.graph_stats()["captured"] == 0
    assert max(nmse(e, c) for e, c in zip(emu, cpu)) <= CUDA_EMU_MODEL_F32_NMSE
