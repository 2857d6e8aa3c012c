"""The native CPU kernels (edgenano._C.kernels) against the NumPy reference, per weight type,
on both the AVX2 and the forced-scalar path; bounds from tests/tolerances.py."""

from __future__ import annotations

import zlib

import gguf
import numpy as np
import pytest
from gguf import GGMLQuantizationType as QT

from edgenano import reference as R

from .conftest import nmse
from .tolerances import (
    KERNEL_ATTENTION_Q8_CACHE_NMSE,
    KERNEL_F32_ORACLE_FACTOR,
    KERNEL_F32_ORACLE_FLOOR,
    KERNEL_MATMUL_INT8_NMSE,
    KERNEL_SCALAR_VS_AVX2_NMSE,
    KERNEL_SCAN_CHUNKED_VS_RECURRENT_NMSE,
)

K = pytest.importorskip("edgenano._C").kernels

WEIGHT_TYPES = [QT.F32, QT.F16, QT.BF16, QT.Q8_0, QT.Q4_0, QT.Q5_0, QT.Q4_1, QT.Q5_1, QT.Q4_K,
                QT.Q5_K, QT.Q6_K]
FLOAT_TYPES = {QT.F32, QT.F16, QT.BF16}
# Byte offsets of the f16 scales (d, and m / dmin for Q4_1/Q5_1/Q4_K/Q5_K) inside each block.
SCALE_OFFSETS = {QT.Q8_0: [0], QT.Q4_0: [0], QT.Q5_0: [0], QT.Q4_1: [0, 2], QT.Q5_1: [0, 2],
                 QT.Q4_K: [0, 2], QT.Q5_K: [0, 2],
                 QT.Q6_K: [208]}


def random_rows(qtype, rows: int, cols: int, rng) -> np.ndarray:
    """Raw GGUF rows (rows, bytes per row): random codes with sane f16 scales, any type."""
    if qtype in FLOAT_TYPES:
        x = rng.standard_normal((rows, cols)).astype(np.float32)
        raw = x if qtype == QT.F32 else gguf.quants.quantize(x, qtype)
        return np.ascontiguousarray(raw).view(np.uint8).reshape(rows, -1)
    bs, bb = gguf.GGML_QUANT_SIZES[qtype]
    data = rng.integers(0, 256, size=(rows, cols // bs, bb), dtype=np.uint8)
    for off in SCALE_OFFSETS[qtype]:
        d = (rng.uniform(0.5, 1.5, size=(rows, cols // bs)) * 0.01).astype(np.float16)
        data[:, :, off:off + 2] = d.view(np.uint8).reshape(rows, cols // bs, 2)
    return data.reshape(rows, -1)


def dequant(raw: np.ndarray, qtype, cols: int) -> np.ndarray:
    if qtype == QT.F32:
        return raw.view(np.float32).reshape(-1, cols)
    if qtype == QT.F16:
        return raw.view(np.float16).astype(np.float32).reshape(-1, cols)
    return gguf.quants.dequantize(raw, qtype).reshape(-1, cols)


def f64(*arrays):
    return [np.asarray(a, np.float64) for a in arrays]


def _matmul_sequential(a, b):
    """a @ b.T summed one term at a time in the inputs' precision (float64 inputs give the
    oracle): the plain float32 reference. NumPy's own float32 matmul is not a fixed one: its
    BLAS changes the summation order, and so the error, between versions."""
    acc = np.zeros((a.shape[0], b.shape[0]), dtype=a.dtype)
    for j in range(a.shape[1]):
        acc += a[:, j, None] * b[None, :, j]
    return acc


def assert_oracle(got, fn, *args):
    """Flash-attention rule: error vs the float64 oracle within a factor of the reference's own
    float32 error (plus a floor for ops the float32 reference computes exactly)."""
    ref64 = fn(*f64(*args))
    ref32 = fn(*[np.asarray(a, np.float32) for a in args])
    bound = KERNEL_F32_ORACLE_FACTOR * nmse(ref32, ref64) + KERNEL_F32_ORACLE_FLOOR
    assert nmse(got, ref64) <= bound


@pytest.fixture(params=["avx512", "avx2", "scalar"])
def simd(request):
    """Run the test on the AVX-512 VNNI path, on the AVX2 path and with the scalar path forced."""
    if request.param == "avx2" and not K.cpu_has_avx2():
        pytest.skip("no AVX2 on this CPU")
    if request.param == "avx512" and not K.cpu_has_avx512():
        pytest.skip("no AVX-512 VNNI on this CPU (or not built)")
    K.set_force_scalar(request.param == "scalar")
    K.set_allow_avx512(request.param == "avx512")
    assert K.isa() == {"avx512": "avx512-vnni", "avx2": "avx2", "scalar": "scalar"}[request.param]
    yield request.param
    K.set_force_scalar(False)
    K.set_allow_avx512(True)


@pytest.fixture(params=["avx512", "avx2"])
def vector_isa(request):
    """The AVX-512 VNNI and the AVX2 kernel tables (the int8 panels have no scalar twin: their
    oracle is the dots)."""
    if not K.cpu_has_avx2():
        pytest.skip("no AVX2 on this CPU")
    if request.param == "avx512" and not K.cpu_has_avx512():
        pytest.skip("no AVX-512 VNNI on this CPU (or not built)")
    K.set_allow_avx512(request.param == "avx512")
    assert K.isa() == {"avx512": "avx512-vnni", "avx2": "avx2"}[request.param]
    yield request.param
    K.set_allow_avx512(True)


def rng_for(*key) -> np.random.Generator:
    """A generator seeded from the test's parameters (stable across runs)."""
    return np.random.default_rng(zlib.crc32(repr(key).encode()))


# ------------------------------------------------------------------------------------ matmul


def cols_for(qtype) -> int:
    """Spans several 256-value panels with a short tail where the block size allows."""
    return 768 if gguf.GGML_QUANT_SIZES[qtype][0] == 256 else 544


@pytest.mark.parametrize("qtype", WEIGHT_TYPES, ids=lambda t: t.name)
def test_dequantize_matches_gguf(qtype, simd):
    cols = cols_for(qtype)
    raw = random_rows(qtype, 7, cols, rng_for("dq", qtype))
    assert np.array_equal(K.dequantize(raw, int(qtype), cols), dequant(raw, qtype, cols))


@pytest.mark.parametrize("path", ["vec", "gemm", "i8gemm"])
@pytest.mark.parametrize("T", [1, 5, 19, 70])  # 70: past one 64-token block of the int8 tiles
@pytest.mark.parametrize("qtype", WEIGHT_TYPES, ids=lambda t: t.name)
def test_matmul(qtype, T, path, simd):
    # i8gemm draws vec's data: where it falls back (no int8 panels) the same case runs again.
    key = "vec" if path == "i8gemm" else path
    rng, cols, rows = rng_for("mm", qtype, T, key), cols_for(qtype), 37  # 37: a partial panel
    raw = random_rows(qtype, rows, cols, rng)
    w = dequant(raw, qtype, cols)
    x = rng.standard_normal((T, cols)).astype(np.float32)
    y = K.matmul(raw, int(qtype), cols, x, path=path, n_threads=2)
    ran = K.matmul_path(int(qtype), T, path)  # i8gemm: I8_PANEL_TYPES on AVX2 only
    assert ran == path or path == "i8gemm"
    if ran == "gemm" or qtype in FLOAT_TYPES:  # f32 activations
        assert_oracle(y, _matmul_sequential, x, w)
    else:  # activations quantized to int8 blocks on the fly
        assert nmse(y, f64(x)[0] @ f64(w)[0].T) <= KERNEL_MATMUL_INT8_NMSE[qtype.name]


@pytest.mark.parametrize("T", [3, 17, 70])  # the int8 tiles, K-quant token groups, token blocks
@pytest.mark.parametrize("qtype", WEIGHT_TYPES, ids=lambda t: t.name)
def test_matmul_scalar_matches_avx2(qtype, T):
    if not K.cpu_has_avx2():
        pytest.skip("no AVX2 on this CPU")
    rng, cols = rng_for("sv", qtype, T), cols_for(qtype)
    raw, x = random_rows(qtype, 40, cols, rng), rng.standard_normal((T, cols)).astype(np.float32)
    out = {}
    for scalar in (False, True):
        K.set_force_scalar(scalar)
        out[scalar] = [K.matmul(raw, int(qtype), cols, x, path=p) for p in ("vec", "gemm")]
    K.set_force_scalar(False)
    for a, b in zip(out[False], out[True], strict=True):
        assert nmse(a, b) <= KERNEL_SCALAR_VS_AVX2_NMSE


AVX512_DOT_TYPES = [QT.Q8_0, QT.Q4_0, QT.Q5_0, QT.Q4_K, QT.Q5_K, QT.Q6_K]  # Q8_0: AVX2's dot


@pytest.mark.parametrize("blocks", [1, 7, 8, 9, 35, 140])  # 8 blocks a step, tails, odd counts
@pytest.mark.parametrize("qtype", AVX512_DOT_TYPES, ids=lambda t: t.name)
def test_avx512_decode_dots_match_scalar(qtype, blocks):
    """The AVX-512 VNNI one-token dots compute the scalar kernels' integer sums (another float
    order only) for every block count: whole 8-block steps, their tails, one block."""
    if not K.cpu_has_avx512():
        pytest.skip("no AVX-512 VNNI on this CPU (or not built)")
    bs = gguf.GGML_QUANT_SIZES[qtype][0]
    if bs == 256 and blocks > 18:
        blocks //= 8
    rng, cols = rng_for("v512", qtype, blocks), bs * blocks
    raw, x = random_rows(qtype, 37, cols, rng), rng.standard_normal((1, cols)).astype(np.float32)
    out = {}
    for isa in ("avx512", "scalar"):
        K.set_force_scalar(isa == "scalar")
        out[isa] = K.matmul(raw, int(qtype), cols, x, path="vec", n_threads=2)
        assert K.isa() == ("avx512-vnni" if isa == "avx512" else "scalar")
    K.set_force_scalar(False)
    assert nmse(out["avx512"], out["scalar"]) <= KERNEL_SCALAR_VS_AVX2_NMSE


EXTREMES = {QT.Q8_0: (127, -128), QT.Q4_0: (7, -8), QT.Q5_0: (15, -16)}


def extreme_rows(qtype, sign: np.ndarray, rows: int, rng) -> tuple[np.ndarray, np.ndarray]:
    """Rows of a *_0 type whose every code is at an extreme of its range, scale 0.01: row 0 of the
    sign of `sign` (one row of +-1), row 1 of the opposite, the rest random. (raw, dequantized)"""
    cols = sign.size
    hi, lo = EXTREMES[qtype]
    codes = np.where(rng.random((rows, cols)) < 0.5, lo, hi)
    codes[0] = np.where(sign > 0, hi, lo)
    codes[1] = np.where(sign > 0, lo, hi)
    nb = cols // 32
    d = np.full((rows, nb), 0.01, np.float16).view(np.uint8).reshape(rows, nb, 2)
    if qtype == QT.Q8_0:
        body = codes.astype(np.int8).view(np.uint8).reshape(rows, nb, 32)
    else:  # u = q + zero; Q5_0's fifth bits in qh; nibbles of values i and i + 16 paired
        u = (codes - lo).reshape(rows, nb, 32).astype(np.uint32)
        nib = ((u[:, :, :16] & 15) | ((u[:, :, 16:] & 15) << 4)).astype(np.uint8)
        body = nib
        if qtype == QT.Q5_0:
            qh = ((u >> 4) << np.arange(32, dtype=np.uint32)).sum(axis=2).astype("<u4")
            body = np.concatenate([qh[..., None].view(np.uint8), nib], axis=2)
    raw = np.concatenate([d, body], axis=2).reshape(rows, -1)
    w = dequant(raw, qtype, cols)
    assert set(np.unique(np.rint(w / float(np.float16(0.01))))) == {lo, hi}  # blocks as built
    return raw, w


@pytest.mark.parametrize("qtype", [QT.Q8_0, QT.Q5_0], ids=lambda t: t.name)
def test_avx512_decode_dots_extreme_codes(qtype):
    """At the bound of the integer sums: Q8_0 codes -128 / 127 (the AVX2 dot, kept in the AVX-512
    table) and Q5_0 codes 0 / 31 (unsigned for vpdpbusd) against activation codes +-127, one
    sign per row's products."""
    if not K.cpu_has_avx512():
        pytest.skip("no AVX-512 VNNI on this CPU (or not built)")
    rng, cols, rows = rng_for("v512x", qtype), 1120, 9
    x = np.where(rng.random((1, cols)) < 0.5, -1.0, 1.0).astype(np.float32)
    raw, w = extreme_rows(qtype, x[0], rows, rng)
    y = K.matmul(raw, int(qtype), cols, x, path="vec")
    assert K.isa() == "avx512-vnni"
    assert nmse(y, f64(x)[0] @ f64(w)[0].T) <= KERNEL_SCALAR_VS_AVX2_NMSE


ROW_LANE_TYPES = [QT.Q8_0, QT.Q4_0, QT.Q5_0, QT.Q4_K]


# under one group of 16 rows, one, one and a half, groups and a tail;
# 301: several groups in each thread's rows
@pytest.mark.parametrize("rows", [5, 8, 16, 24, 37, 301])
@pytest.mark.parametrize("T", [2, 3, 7, 8, 9, 17, 64, 96])  # partial and whole token groups
@pytest.mark.parametrize("qtype", ROW_LANE_TYPES, ids=lambda t: t.name)
def test_avx512_row_lanes_dots_match_scalar(qtype, T, rows):
    """The AVX-512 row-lane dots (several tokens; one row per lane, blocks transposed in registers,
    activations interleaved by block with the zero point's integer term) compute the scalar
    kernels' integer sums: equal to rounding for every row and token count, tails included."""
    if not K.cpu_has_avx512():
        pytest.skip("no AVX-512 VNNI on this CPU (or not built)")
    assert K.matmul_path(int(qtype), T) == "vec"  # batched decode and expert groups land here
    blocks = 35 if T < 64 else 9
    rng = rng_for("r8", qtype, T, rows)
    cols = gguf.GGML_QUANT_SIZES[qtype][0] * (blocks if qtype != QT.Q4_K else blocks // 4)
    raw, x = random_rows(qtype, rows, cols, rng), rng.standard_normal((T, cols)).astype(np.float32)
    out = {}
    for isa in ("avx512", "scalar"):
        K.set_force_scalar(isa == "scalar")
        out[isa] = K.matmul(raw, int(qtype), cols, x, path="vec", n_threads=2)
    K.set_force_scalar(False)
    assert nmse(out["avx512"], out["scalar"]) <= KERNEL_SCALAR_VS_AVX2_NMSE
    assert np.array_equal(out["avx512"], K.matmul(raw, int(qtype), cols, x, n_threads=1))
    # each token alone (the one-token dots) gives the same rows
    one = np.stack([K.matmul(raw, int(qtype), cols, x[t : t + 1], path="vec")[0] for t in range(T)])
    assert nmse(out["avx512"], one) <= KERNEL_SCALAR_VS_AVX2_NMSE


def scalar_matmul(raw, qtype, cols, x):
    """The scalar kernels' product (2 threads), whatever ISA is in use."""
    K.set_force_scalar(True)
    try:
        return K.matmul(raw, int(qtype), cols, x, path="vec", n_threads=2)
    finally:
        K.set_force_scalar(False)


@pytest.mark.parametrize("qtype", ROW_LANE_TYPES, ids=lambda t: t.name)
def test_avx512_row_lanes_one_token_large_matrix(qtype):
    """One token over a matrix of 16 MB or more takes the row-lane dots as well (their L2 stream
    pays there): the scalar kernels' sums to rounding, and the one-token dots' rows on the same
    matrix cut under the size (a slice of its rows)."""
    if not K.cpu_has_avx512():
        pytest.skip("no AVX-512 VNNI on this CPU (or not built)")
    rng, rows = rng_for("r1big", qtype), 7301  # 456 groups of 16 and a tail of 5
    cols = 4096 if qtype == QT.Q4_K else 4480
    raw, x = random_rows(qtype, rows, cols, rng), rng.standard_normal((1, cols)).astype(np.float32)
    assert raw.nbytes >= 16 << 20
    y = K.matmul(raw, int(qtype), cols, x, path="vec", n_threads=2)
    assert nmse(y, scalar_matmul(raw, qtype, cols, x)) <= KERNEL_SCALAR_VS_AVX2_NMSE
    part = K.matmul(np.ascontiguousarray(raw[:64]), int(qtype), cols, x, path="vec")  # small
    assert nmse(y[:, :64], part) <= KERNEL_SCALAR_VS_AVX2_NMSE


@pytest.mark.parametrize("qtype", ROW_LANE_TYPES[:3], ids=lambda t: t.name)
def test_avx512_row_lanes_extreme_codes(qtype):
    """The row-lane dots at the bound of their integer sums: every weight code at its extreme (Q8_0
    -128 / 127, Q4_0 -8 / 7, Q5_0 -16 / 15) against activation codes +-127 of one sign per row, so
    each 32-value sum is as large as it gets, with the zero point's term folded in first."""
    if not K.cpu_has_avx512():
        pytest.skip("no AVX-512 VNNI on this CPU (or not built)")
    rng, cols, rows, T = rng_for("r8x", qtype), 1120, 11, 4
    x = np.where(rng.random((T, cols)) < 0.5, -1.0, 1.0).astype(np.float32)
    raw, w = extreme_rows(qtype, x[0], rows, rng)
    y = K.matmul(raw, int(qtype), cols, x, path="vec")
    xx, ww = f64(x, w)
    assert nmse(y, xx @ ww.T) <= KERNEL_SCALAR_VS_AVX2_NMSE


def test_avx512_row_lanes_q4_k_extreme_codes():
    """Q4_K's row-lane dots at the bound of their integer sums: every scale and minimum 63 (all 12
    packed bytes 0xff), codes 0 / 15 against activation codes +-127 of one sign per row: each
    sub-block sum times its scale, over the block, and the minimums' pairs, all at their largest."""
    if not K.cpu_has_avx512():
        pytest.skip("no AVX-512 VNNI on this CPU (or not built)")
    rng, cols, rows, T = rng_for("r8k"), 1024, 11, 5
    x = np.where(rng.random((T, cols)) < 0.5, -1.0, 1.0).astype(np.float32)
    codes = np.where(rng.random((rows, cols)) < 0.5, 0, 15)
    codes[0] = np.where(x[0] > 0, 15, 0)
    codes[1] = np.where(x[0] > 0, 0, 15)
    nb = cols // 256
    u = codes.reshape(rows, nb, 4, 2, 32).astype(np.uint8)  # chunk c: sub-blocks 2c, 2c + 1
    qs = (u[:, :, :, 0, :] | (u[:, :, :, 1, :] << 4)).reshape(rows, nb, 128)
    dd = np.full((rows, nb, 2), 0.01, np.float16).view(np.uint8).reshape(rows, nb, 4)
    raw = np.concatenate([dd, np.full((rows, nb, 12), 0xFF, np.uint8), qs], axis=2)
    raw = raw.reshape(rows, -1)
    w = dequant(raw, QT.Q4_K, cols)
    step = float(np.float16(0.01)) * 63
    assert set(np.unique(np.rint(w / step))) == {-1, 14}  # d*63*q - dmin*63, q in {0, 15}
    y = K.matmul(raw, int(QT.Q4_K), cols, x, path="vec")
    xx, ww = f64(x, w)
    assert nmse(y, xx @ ww.T) <= KERNEL_SCALAR_VS_AVX2_NMSE


@pytest.mark.parametrize("rows", [5, 16, 37, 301])
@pytest.mark.parametrize("qtype", ROW_LANE_TYPES, ids=lambda t: t.name)
def test_packed_rows_round_trip(qtype, rows):
    """pack_rows16 (the row-lane dots' layout, made at load) rearranges each whole group of 16 rows
    in place of its bytes, leaves the last rows % 16 as they are, and unpack_rows16 undoes it."""
    rng = rng_for("pack", qtype, rows)
    cols = gguf.GGML_QUANT_SIZES[qtype][0] * (9 if qtype != QT.Q4_K else 3)
    raw = random_rows(qtype, rows, cols, rng)
    packed = K.pack_rows16(raw, int(qtype), cols)
    assert packed.shape == raw.shape
    full = rows // 16 * 16
    assert np.array_equal(packed[full:], raw[full:])
    if full:
        assert not np.array_equal(packed[:full], raw[:full])
        # a group's bytes stay its own: packing 16 rows alone gives the same bytes
        assert np.array_equal(K.pack_rows16(np.ascontiguousarray(raw[:16]), int(qtype), cols),
                              packed[:16])
    assert np.array_equal(K.unpack_rows16(packed, int(qtype), cols), raw)


@pytest.mark.parametrize("qtype", ROW_LANE_TYPES, ids=lambda t: t.name)
def test_avx512_packer_writes_the_portable_bytes(qtype):
    """With AVX-512 the groups are packed through the row-lane dots' transposes (a 9B model's 6
    GB at load): byte for byte what the portable packer writes, tails included."""
    if not K.packable(int(qtype)):
        pytest.skip("no AVX-512 VNNI on this CPU (or not built)")
    rng = rng_for("pack512", qtype)
    cols = gguf.GGML_QUANT_SIZES[qtype][0] * (35 if qtype != QT.Q4_K else 5)
    raw = random_rows(qtype, 16 * 7 + 3, cols, rng)
    fast = K.pack_rows16(raw, int(qtype), cols)
    K.set_allow_avx512(False)
    try:
        portable = K.pack_rows16(raw, int(qtype), cols)
    finally:
        K.set_allow_avx512(True)
    assert np.array_equal(fast, portable)


def test_packed_rows_refuse_other_types():
    raw = random_rows(QT.Q6_K, 16, 256, rng_for("pack6"))
    with pytest.raises(ValueError, match="no packed layout"):
        K.pack_rows16(raw, int(QT.Q6_K), 256)


@pytest.mark.parametrize("rows", [5, 16, 24, 37, 301])
@pytest.mark.parametrize("T", [1, 2, 4, 9, 17])
@pytest.mark.parametrize("qtype", ROW_LANE_TYPES, ids=lambda t: t.name)
def test_avx512_packed_rows_match_file_rows(qtype, T, rows):
    """The row-lane dots over packed rows (plain loads, Q8_0 pre-biased, Q5_0's high bits
    reordered) compute what they compute from the file's rows: the same integer sums in the same
    order, so equal bits from 2 tokens on; one token (on file rows the one-token dots) to rounding,
    and both to the scalar kernels' rounding."""
    if not K.packable(int(qtype)):
        pytest.skip("no AVX-512 VNNI on this CPU (or not built)")
    rng = rng_for("packmm", qtype, T, rows)
    cols = gguf.GGML_QUANT_SIZES[qtype][0] * (35 if qtype != QT.Q4_K else 8)
    raw, x = random_rows(qtype, rows, cols, rng), rng.standard_normal((T, cols)).astype(np.float32)
    packed = K.pack_rows16(raw, int(qtype), cols)
    y = K.matmul(packed, int(qtype), cols, x, n_threads=2, packed=True)
    ref = K.matmul(raw, int(qtype), cols, x, path="vec", n_threads=2)
    if T >= 2:
        assert np.array_equal(y, ref)
    assert nmse(y, scalar_matmul(raw, qtype, cols, x)) <= KERNEL_SCALAR_VS_AVX2_NMSE
    assert nmse(y, ref) <= KERNEL_SCALAR_VS_AVX2_NMSE


@pytest.mark.parametrize("qtype", ROW_LANE_TYPES[:3], ids=lambda t: t.name)
def test_avx512_packed_rows_extreme_codes(qtype):
    """Packed rows at the bound of the integer sums (as test_avx512_row_lanes_extreme_codes): every
    code at its extreme, 2 whole groups and a tail, so Q5_0's reordered high bits all count."""
    if not K.packable(int(qtype)):
        pytest.skip("no AVX-512 VNNI on this CPU (or not built)")
    rng, cols, rows, T = rng_for("packx", qtype), 1120, 37, 3
    x = np.where(rng.random((T, cols)) < 0.5, -1.0, 1.0).astype(np.float32)
    raw, w = extreme_rows(qtype, x[0], rows, rng)
    y = K.matmul(K.pack_rows16(raw, int(qtype), cols), int(qtype), cols, x, packed=True)
    xx, ww = f64(x, w)
    assert nmse(y, xx @ ww.T) <= KERNEL_SCALAR_VS_AVX2_NMSE


I8_PANEL_TYPES = [QT.Q8_0, QT.Q4_0, QT.Q5_0, QT.Q4_K, QT.Q5_K, QT.Q6_K]


@pytest.mark.parametrize("T", [1, 5, 12, 70, 131])
@pytest.mark.parametrize("qtype", I8_PANEL_TYPES, ids=lambda t: t.name)
def test_int8_panels_match_dots(qtype, T, vector_isa):
    """The int8 panels (prefill of Q8_0/Q4_0/Q5_0/Q4_K/Q5_K/Q6_K on AVX2) compute the dots' integer
    sums over the same int8 activations, only summed in another float order: equal to rounding,
    across chunks of the reduced dimension with a tail (70 blocks of 32; 9 of 256), partial row
    tiles (37 rows) and partial token quads."""
    if not K.cpu_has_avx2():
        pytest.skip("no AVX2 on this CPU")
    assert K.matmul_path(int(qtype), 1) == "vec"
    assert K.matmul_path(int(qtype), 1, "i8gemm") == "i8gemm"
    rng = rng_for("i8", qtype, T)
    cols = 2240 if gguf.GGML_QUANT_SIZES[qtype][0] == 32 else 2304
    raw, x = random_rows(qtype, 37, cols, rng), rng.standard_normal((T, cols)).astype(np.float32)
    panels = K.matmul(raw, int(qtype), cols, x, path="i8gemm", n_threads=2)
    dots = K.matmul(raw, int(qtype), cols, x, path="vec")
    assert nmse(panels, dots) <= KERNEL_SCALAR_VS_AVX2_NMSE


def test_int8_panels_q8_0_extreme_codes(vector_isa):
    """Q8_0's panels at the bound of their integer sums: codes -128 and 127 against activation
    codes +-127 (x = +-1 quantizes exactly), signs chosen so every product of a row has one sign
    (maddubs words of 2 * 128 * 127, block sums of 32 * 128 * 127): no saturation, no wrap."""
    if not K.cpu_has_avx2():
        pytest.skip("no AVX2 on this CPU")
    rng, cols, rows, T = rng_for("i8x"), 2240, 37, 9
    x = np.where(rng.random((T, cols)) < 0.5, -1.0, 1.0).astype(np.float32)
    codes = np.where(rng.random((rows, cols)) < 0.5, -128, 127)
    codes[0] = np.where(x[0] > 0, 127, -128)  # row 0 . token 0: all products positive
    codes[1] = np.where(x[0] > 0, -128, 127)  # row 1 . token 0: all negative
    data = np.zeros((rows, cols // 32, 34), dtype=np.uint8)
    data[:, :, 0:2] = np.full((rows, cols // 32), 0.01, np.float16).view(np.uint8).reshape(
        rows, cols // 32, 2)
    data[:, :, 2:] = codes.astype(np.int8).view(np.uint8).reshape(rows, cols // 32, 32)
    raw = data.reshape(rows, -1)
    w = dequant(raw, QT.Q8_0, cols)
    panels = K.matmul(raw, int(QT.Q8_0), cols, x, path="i8gemm", n_threads=2)
    assert nmse(panels, f64(x)[0] @ f64(w)[0].T) <= KERNEL_SCALAR_VS_AVX2_NMSE


def test_int8_panels_q6_k_extreme_codes(vector_isa):
    """Q6_K's panels at the bound of their integer sums: codes 0 and 63 (held as -32 / 31 for the
    sign trick), scales 127 and -128, activation codes +-127, signs chosen so every product of a
    row has one sign (fold words of 8 * 32 * 127 = 32512, inside int16): no saturation, no wrap."""
    if not K.cpu_has_avx2():
        pytest.skip("no AVX2 on this CPU")
    rng, cols, rows, T = rng_for("i8x6"), 2304, 37, 9
    x = np.where(rng.random((T, cols)) < 0.5, -1.0, 1.0).astype(np.float32)
    q = np.where(rng.random((rows, cols)) < 0.5, 0, 63)
    q[0] = np.where(x[0] > 0, 63, 0)  # row 0 . token 0: every code's sign follows x's
    q[1] = np.where(x[0] > 0, 0, 63)
    nb = cols // 256
    q = q.reshape(rows, nb, 2, 128)  # (row, block, half h, element k of the half)
    low, high = q & 15, q >> 4
    ql = low[..., :64] | (low[..., 64:] << 4)  # byte k: element k, element 64 + k
    qh = sum(high[..., 32 * s:32 * s + 32] << (2 * s) for s in range(4))  # bits 2s: 32s + i
    scales = np.where(rng.random((rows, nb, 16)) < 0.5, -128, 127)
    scales[0:2] = 127
    d = np.full((rows, nb, 1), 0.001, np.float16).view(np.uint8)
    raw = np.concatenate([ql.reshape(rows, nb, 128), qh.reshape(rows, nb, 64),
                          scales.astype(np.int8).view(np.uint8), d], axis=2).astype(np.uint8)
    raw = raw.reshape(rows, -1)
    w = dequant(raw, QT.Q6_K, cols)
    assert set(np.unique(np.abs(np.rint(w / (127 * float(np.float16(0.001))))))) <= {31, 32}
    panels = K.matmul(raw, int(QT.Q6_K), cols, x, path="i8gemm", n_threads=2)
    assert nmse(panels, f64(x)[0] @ f64(w)[0].T) <= KERNEL_SCALAR_VS_AVX2_NMSE


def test_matmul_threads_bit_identical():
    rng = rng_for("threads")
    raw, x = random_rows(QT.Q4_0, 301, 512, rng), rng.standard_normal((9, 512)).astype(np.float32)
    for path in ("vec", "gemm", "i8gemm"):
        a = K.matmul(raw, int(QT.Q4_0), 512, x, path=path, n_threads=1)
        b = K.matmul(raw, int(QT.Q4_0), 512, x, path=path, n_threads=2)
        assert np.array_equal(a, b)


@pytest.mark.parametrize("items", [1, 3, 64, 70000])  # 70000: more than one job word holds
def test_pool_runs_every_item_once(items):
    reps = 200 if items < 1000 else 3
    assert np.all(K.pool_probe(items, 10, 2, reps) == reps)


def test_matmul_rejects_bad_shapes():
    raw = random_rows(QT.Q8_0, 4, 64, rng_for("bad"))
    x = np.zeros((1, 64), np.float32)
    with pytest.raises(ValueError):
        K.matmul(raw, int(QT.Q8_0), 96, x)  # row bytes do not hold 96 values
    with pytest.raises(ValueError):
        K.matmul(raw, 99, 64, x)  # unknown type
    with pytest.raises(ValueError):
        K.matmul(raw, int(QT.Q8_0), 64, np.zeros((1, 32), np.float32))


# ------------------------------------------------------------------------ norms, activations


def test_rmsnorm(simd):
    rng = rng_for("rms")
    x, w = rng.standard_normal((6, 70)) * 3, rng.standard_normal(70)
    assert_oracle(K.rmsnorm(x.astype(np.float32), w.astype(np.float32), 1e-5),
                  lambda a, b: R.rmsnorm(a, b, 1e-5), x, w)


@pytest.mark.parametrize("groups", [1, 4])
def test_gated_rmsnorm(groups, simd):
    rng = rng_for("gated", groups)
    y, z = rng.standard_normal((5, 96)), 3 * rng.standard_normal((5, 96))
    w = rng.standard_normal(96)
    got = K.gated_rmsnorm(*[a.astype(np.float32) for a in (y, z, w)], groups, 1e-5)
    assert_oracle(got, lambda a, b, c: R.gated_group_rmsnorm(a, b, c, groups, 1e-5), y, z, w)


def test_relu2_softplus(simd):
    rng = rng_for("act")
    x = rng.standard_normal((7, 33)).astype(np.float32)
    assert_oracle(K.relu2(x), R.relu2, x)
    v, b = (rng.standard_normal((6, 9)) * 12).astype(np.float32), rng.standard_normal(9)
    assert_oracle(K.softplus(v, b.astype(np.float32)), lambda a, c: R.softplus(a + c), v, b)


# -------------------------------------------------------------------------------------- conv


@pytest.mark.parametrize("T", [1, 2, 11])
@pytest.mark.parametrize("k", [3, 4])
def test_causal_conv(T, k, simd):
    rng = rng_for("conv", T, k)
    x, st = rng.standard_normal((T, 300)), rng.standard_normal((k - 1, 300))
    w, b = rng.standard_normal((300, k)), rng.standard_normal(300)
    y, new_state = K.causal_conv(*[a.astype(np.float32) for a in (x, st, w, b)], silu=True)
    assert_oracle(y, lambda *a: R.silu(R.causal_conv(*a)[0]), x, st, w, b)
    ref_state = R.causal_conv(*[a.astype(np.float32) for a in (x, st, w, b)])[1]
    assert np.array_equal(new_state, ref_state)  # the state is a copy of inputs: exact


# -------------------------------------------------------------------------------------- scan


def scan_inputs(T, H=8, P=16, N=24, G=2, seed=0):
    rng = rng_for("scan", T, H, P, N, G, seed)
    st, x = rng.standard_normal((H, P, N)), rng.standard_normal((T, H, P))
    dt = R.softplus(rng.standard_normal((T, H)) - 1)
    A = -np.exp(rng.standard_normal(H))
    B, C, D = rng.standard_normal((T, G, N)), rng.standard_normal((T, G, N)), rng.standard_normal(H)
    return [np.asarray(a, np.float32) for a in (st, x, dt, A, B, C, D)]


@pytest.mark.parametrize("T", [1, 5, 37])
def test_scan_recurrent(T, simd):
    args = scan_inputs(T)
    y, st = K.ssm_scan(*args, chunk=0)
    assert_oracle(y, lambda *a: R.ssm_scan_recurrent(*a)[0], *args)
    assert_oracle(st, lambda *a: R.ssm_scan_recurrent(*a)[1], *args)


@pytest.mark.parametrize("T,chunk", [(37, 8), (37, 16), (64, 64), (130, 64)])
@pytest.mark.parametrize("groups", [1, 2])
def test_scan_chunked_equals_recurrent(T, chunk, groups, simd):
    args = scan_inputs(T, G=groups)
    y_rec, st_rec = K.ssm_scan(*args, chunk=0)
    y_chk, st_chk = K.ssm_scan(*args, chunk=chunk)
    assert nmse(y_chk, y_rec) <= KERNEL_SCAN_CHUNKED_VS_RECURRENT_NMSE
    assert nmse(st_chk, st_rec) <= KERNEL_SCAN_CHUNKED_VS_RECURRENT_NMSE
    assert_oracle(y_chk, lambda *a: R.ssm_scan_recurrent(*a)[0], *args)


# --------------------------------------------------------------------------------- attention


def cache_rows(x: np.ndarray, kv_type) -> np.ndarray:
    return K.kv_store(np.ascontiguousarray(x.reshape(x.shape[0], -1), np.float32), int(kv_type))


def test_kv_store_q8_0_matches_gguf():
    x = rng_for("kv").standard_normal((9, 128)).astype(np.float32)
    assert np.array_equal(cache_rows(x, QT.Q8_0), gguf.quants.quantize(x, QT.Q8_0))
    assert np.array_equal(cache_rows(x, QT.F16).view(np.float16), x.astype(np.float16))


@pytest.mark.parametrize("kv_type", [QT.F16, QT.Q8_0], ids=lambda t: t.name)
@pytest.mark.parametrize("T,n_past", [(1, 0), (1, 37), (13, 0), (20, 9), (19, 300)])
def test_attention(kv_type, T, n_past, simd):
    """(19, 300): several blocks of keys and of query tokens."""
    rng, Hq, Hkv, d = rng_for("attn", kv_type, T, n_past), 6, 2, 64
    q = rng.standard_normal((T, Hq, d)).astype(np.float32)
    k, v = (rng.standard_normal((n_past + T, Hkv, d)).astype(np.float32) for _ in range(2))
    kc, vc = cache_rows(k, kv_type), cache_rows(v, kv_type)
    got = K.attention(q, kc, vc, n_past, Hkv, int(kv_type))
    kd, vd = (dequant(c, kv_type, Hkv * d).reshape(k.shape) for c in (kc, vc))
    assert_oracle(got, lambda a, b, c: R.attention(a, b, c, n_past), q, kd, vd)
    if kv_type == QT.Q8_0:  # what the cache's quantization costs against exact K and V
        assert nmse(got, R.attention(*f64(q, k, v), n_past)) <= KERNEL_ATTENTION_Q8_CACHE_NMSE
