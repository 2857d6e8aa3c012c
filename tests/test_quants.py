"""Quantizers (edgenano.convert.quants, edgenano._C): bytes against gguf.quants, K-quant dequantize
against gguf.quants, K-quant weight RMSE against llama.cpp's own quantizer on the same tensors.
"""

from __future__ import annotations

import ctypes

import gguf
import numpy as np
import pytest
from gguf import GGMLQuantizationType as QT

from edgenano.convert import quants

from . import tolerances as tol

EXACT_TYPES = (QT.F16, QT.BF16, QT.Q8_0, QT.Q4_0, QT.Q4_1, QT.Q5_0, QT.Q5_1)


def _rng(seed=0):
    return np.random.default_rng(seed)


def _ties_q8() -> np.ndarray:
    """Half-integers with a +-127 in every block: x/d lands exactly on .5 (round away from 0)."""
    x = _rng(3).integers(-254, 255, (4, 256)).astype(np.float32) / 2
    x[:, ::32] = 127.0
    x[1, ::32] = -127.0
    return x


def _ties_absmax() -> np.ndarray:
    """+a and -a both the largest magnitude in a block: the first one sets the sign of d."""
    x = _rng(4).uniform(-1, 1, (4, 256)).astype(np.float32)
    x[0, 3], x[0, 9] = 2.0, -2.0
    x[1, 3], x[1, 9] = -2.0, 2.0
    return x


def _f16_edges() -> np.ndarray:
    """Midpoints between neighbouring halves (normal and subnormal), overflow and underflow."""
    h = _rng(5).integers(0, 0x7BFF, 256).astype(np.uint16)
    lo = h.view(np.float16).astype(np.float64)
    hi = (h + 1).view(np.float16).astype(np.float64)
    mid = ((lo + hi) / 2).astype(np.float32)  # exact in f32: a tie for f16
    special = np.array(
        [65504, 65519, 65520, 70000, 2.0**-25, 3 * 2.0**-26, 2.0**-24, 1e-8, 6e-5, 3.4e38]
        + [0.0, -0.0, np.inf, -np.inf] * 3
        + [1.0] * 18,
        dtype=np.float32,
    )
    return np.stack([mid, -mid, np.resize(special, 256), -np.resize(special, 256)])


def _bf16_edges() -> np.ndarray:
    """Ties (low half exactly 0x8000), carries into the exponent, NaN payloads, infinities."""
    r = _rng(6).integers(0, 2**31, 256, dtype=np.uint64).astype(np.uint32)
    ties = (r & np.uint32(0xFFFF0000)) | np.uint32(0x8000)
    nans = np.array([0x7F800001, 0x7FC00000, 0xFFA00000, 0x7FFFFFFF, 0xFF810000], np.uint32)
    other = np.array([0x7F7FFFFF, 0x7F7F8000, 0x3F80FFFF, 0x7F800000, 0xFF800000, 0x80000000])
    specials = np.resize(np.concatenate([nans, other.astype(np.uint32)]), 256)
    return np.stack([ties, ties | np.uint32(0x80000000), specials, r]).view(np.float32)


def _signed_zeros() -> np.ndarray:
    """+0 and -0 mixed (alone, and as the minimum of non-negative blocks): the sign of d and m."""
    r = _rng(8)
    x = np.where(r.random((8, 256)) < 0.5, np.float32(0.0), np.float32(-0.0))
    x[4:] = np.where(r.random((4, 256)) < 0.7, x[4:], np.float32(0.5))
    return x.astype(np.float32)


def _cases() -> dict[str, np.ndarray]:
    r = _rng(1)
    return {
        "randn": r.standard_normal((16, 512)).astype(np.float32),
        "zeros": np.zeros((2, 256), np.float32),
        "neg_zeros": -np.zeros((2, 256), np.float32),
        "constant": np.full((2, 256), 0.37, np.float32),
        "neg_constant": np.full((2, 256), -2.5, np.float32),
        "all_negative": -np.abs(r.standard_normal((4, 256))).astype(np.float32),
        "huge": (r.standard_normal((4, 256)) * 1e35).astype(np.float32),
        "tiny": (r.standard_normal((4, 256)) * 1e-30).astype(np.float32),
        "subnormal": (r.standard_normal((4, 256)) * 1e-40).astype(np.float32),
        "heavy_tail": (r.standard_t(2, (4, 512)) * 0.02).astype(np.float32),
        "ties_q8": _ties_q8(),
        "ties_absmax": _ties_absmax(),
        "signed_zeros": _signed_zeros(),
    }


def _gguf_bytes(x: np.ndarray, qtype: QT) -> np.ndarray:
    with np.errstate(all="ignore"):
        ref = gguf.quants.quantize(x, qtype)
    return np.asarray(ref).view(np.uint8).reshape(x.shape[0], -1)


def _gguf_dequant(data: np.ndarray, qtype: QT, shape) -> np.ndarray:
    with np.errstate(all="ignore"):
        return np.asarray(gguf.quants.dequantize(data, qtype), np.float32).reshape(shape)


def _same_bits(a: np.ndarray, b: np.ndarray) -> bool:
    return a.shape == b.shape and np.array_equal(a.view(np.uint32), b.view(np.uint32))


def _rel_rmse(got: np.ndarray, x: np.ndarray) -> float:
    x = x.astype(np.float64)
    return float(np.sqrt(np.mean((got - x) ** 2) / np.mean(x**2)))


@pytest.mark.parametrize("qtype", EXACT_TYPES, ids=lambda t: t.name)
@pytest.mark.parametrize("case", list(_cases()))
def test_bytes_equal_gguf_quants(qtype, case):
    """Q8_0/Q4_0/Q4_1/Q5_0/Q5_1/F16/BF16 bytes and their decoding equal gguf.quants bit for bit."""
    x = _cases()[case]
    got = quants.quantize(x, qtype)
    ref = _gguf_bytes(x, qtype)
    assert got.dtype == np.uint8 and got.shape == ref.shape
    mismatch = np.argwhere(got != ref)
    assert mismatch.size == 0, f"first differing bytes at {mismatch[:4].tolist()}"
    assert _same_bits(quants.dequantize(got, qtype, x.shape), _gguf_dequant(ref, qtype, x.shape))


@pytest.mark.parametrize(
    ("qtype", "make"), [(QT.F16, _f16_edges), (QT.BF16, _bf16_edges)], ids=["F16", "BF16"]
)
def test_float_edges_equal_gguf_quants(qtype, make):
    """Rounding ties, overflow, subnormals, infinities and NaN payloads, as numpy/ggml do."""
    x = make()
    got = quants.quantize(x, qtype)
    assert np.array_equal(got, _gguf_bytes(x, qtype))
    assert _same_bits(quants.dequantize(got, qtype, x.shape), _gguf_dequant(got, qtype, x.shape))


@pytest.mark.parametrize("qtype", quants.K_TYPES, ids=lambda t: t.name)
@pytest.mark.parametrize("case", list(_cases()))
def test_k_dequantize_equals_gguf(qtype, case):
    """Our K-quant bytes decode (by us) exactly as gguf.quants decodes them, and stay finite."""
    x = _cases()[case]
    data = quants.quantize(x, qtype)
    assert data.shape == (x.shape[0], quants.row_bytes(qtype, x.shape[1]))
    got = quants.dequantize(data, qtype, x.shape)
    assert _same_bits(got, _gguf_dequant(data, qtype, x.shape))
    if case in ("zeros", "neg_zeros"):
        assert np.array_equal(got, x)
    if case in ("constant", "neg_constant"):  # only f16 rounding of the scales is left
        assert np.abs(got - x).max() <= 1e-3 * np.abs(x).max()
    if case != "huge":  # scales beyond f16 saturate at 65504 (as in ggml)
        assert np.isfinite(got).all()


@pytest.mark.parametrize("qtype", quants.K_TYPES, ids=lambda t: t.name)
def test_k_quant_error_on_gaussian(qtype):
    """Relative RMSE on N(0,1) weights, pinned: a regression guard that needs no llama.cpp."""
    x = _rng(0).standard_normal((64, 512)).astype(np.float32)
    err = _rel_rmse(quants.dequantize(quants.quantize(x, qtype), qtype, x.shape), x)
    assert err <= tol.KQUANT_REL_RMSE_GAUSSIAN[qtype.name]


def test_threads_and_simd_do_not_change_bytes():
    """1 or 2 threads, AVX2 or portable kernels: the same bytes for every type."""
    from edgenano import _C

    x = (_rng(2).standard_t(4, (64, 4096)) * 0.02).astype(np.float32)
    for qtype in (*EXACT_TYPES, *quants.K_TYPES):
        one = quants.quantize(x, qtype, n_threads=1)
        assert np.array_equal(one, quants.quantize(x, qtype, n_threads=2))
        previous = _C.quant_simd(False)
        try:
            assert np.array_equal(one, quants.quantize(x, qtype, n_threads=2))
        finally:
            _C.quant_simd(previous)
        y = quants.dequantize(one, qtype, x.shape, n_threads=1)
        assert _same_bits(y, quants.dequantize(one, qtype, x.shape, n_threads=2))


def test_f32_and_shapes():
    x = _rng(7).standard_normal((3, 2, 64)).astype(np.float32)
    data = quants.quantize(x, QT.F32)
    assert data.shape == (3, 2, 256) and np.array_equal(data.view(np.float32), x)
    assert np.array_equal(quants.dequantize(data, QT.F32, x.shape), x)
    q = quants.quantize(x, QT.Q8_0)
    assert q.shape == (3, 2, 68)
    assert np.array_equal(q.reshape(6, 68), quants.quantize(x.reshape(6, 64), QT.Q8_0))
    assert np.array_equal(quants.quantize(x.astype(np.float64), QT.Q8_0), q)
    assert quants.row_bytes(QT.Q6_K, 512) == 420 and quants.bits_per_weight(QT.Q4_K) == 4.5


def test_errors_are_clear():
    from edgenano import _C

    x = np.zeros((2, 4480), np.float32)  # the 9B-v2 hidden size: not a multiple of 256
    with pytest.raises(ValueError, match="4480 is not a multiple of the 256-element block"):
        quants.quantize(x, QT.Q4_K)
    with pytest.raises(ValueError, match="not a multiple"):
        _C.quantize(x, int(QT.Q6_K))
    with pytest.raises(ValueError, match="unsupported"):
        quants.quantize(x, QT.Q2_K)
    with pytest.raises(ValueError, match="unsupported ggml type id"):
        _C.quantize(x, 99)
    with pytest.raises(ValueError, match="needs 1088 bytes, got 1087"):
        quants.dequantize(np.zeros(1087, np.uint8), QT.Q8_0, (2, 512))
    with pytest.raises(ValueError, match="expected 1088 bytes"):
        _C.dequantize(np.zeros(1087, np.uint8), int(QT.Q8_0), 2, 512)


def test_fallback_without_extension(monkeypatch):
    """Without edgenano._C the exact types come from gguf.quants; K-quants say what is missing."""
    x = _cases()["randn"]
    native = {t: quants.quantize(x, t) for t in EXACT_TYPES}
    monkeypatch.setattr(quants, "_C", None)
    for qtype, want in native.items():
        assert np.array_equal(quants.quantize(x, qtype), want)
        assert _same_bits(
            quants.dequantize(want, qtype, x.shape), _gguf_dequant(want, qtype, x.shape)
        )
    with pytest.raises(NotImplementedError, match="edgenano._C"):
        quants.quantize(x, QT.Q4_K)


# ---------------------------------------------------------------- against llama.cpp's quantizer

KINDS = ("mamba", "attention", "mlp", "mamba", "mlp")
DIMS = dict(n_embd=512, n_vocab=1024, d_inner=1024, n_group=2, d_state=64, n_ssm_head=16,
            n_head=8, n_head_kv=2, head_dim=64, n_ff=1024)  # fmt: skip


def _weights(rng, rows, cols):
    """Heavy-tailed rows (Student t, 5 dof) with per-row scales, like trained weights."""
    scale = np.exp(rng.normal(0.0, 0.3, (rows, 1)))
    return (rng.standard_t(5, (rows, cols)) * 0.02 * scale).astype(np.float32)


def _layer_tensors(rng, kind, d):
    """Numpy-shaped tensors of one nemotron_h layer (SPEC section 3), without the prefix."""
    e, di, g, n, h = d["n_embd"], d["d_inner"], d["n_group"], d["d_state"], d["n_ssm_head"]
    t = {"attn_norm.weight": np.ones(e, np.float32)}
    if kind == "mamba":
        conv = di + 2 * g * n
        t["ssm_in.weight"] = _weights(rng, 2 * di + 2 * g * n + h, e)
        t["ssm_conv1d.weight"] = _weights(rng, conv, 4)
        t["ssm_conv1d.bias"] = np.zeros(conv, np.float32)
        t["ssm_dt.bias"] = np.zeros(h, np.float32)
        t["ssm_a"] = -np.ones((h, 1), np.float32)
        t["ssm_d"] = np.ones((h, 1), np.float32)
        t["ssm_norm.weight"] = np.ones((g, di // g), np.float32)
        t["ssm_out.weight"] = _weights(rng, e, di)
    elif kind == "attention":
        q, kv = d["n_head"] * d["head_dim"], d["n_head_kv"] * d["head_dim"]
        t["attn_q.weight"] = _weights(rng, q, e)
        t["attn_k.weight"] = _weights(rng, kv, e)
        t["attn_v.weight"] = _weights(rng, kv, e)
        t["attn_output.weight"] = _weights(rng, e, q)
    else:
        t["ffn_up.weight"] = _weights(rng, d["n_ff"], e)
        t["ffn_down.weight"] = _weights(rng, e, d["n_ff"])
    return t


def _write_nemotron_h_f32(path, seed=0, d=DIMS) -> dict[str, np.ndarray]:
    """A small f32 nemotron_h GGUF that llama.cpp's quantizer accepts; returns its tensors."""
    rng = np.random.default_rng(seed)
    w = gguf.GGUFWriter(str(path), "nemotron_h")
    w.add_block_count(len(KINDS))
    w.add_context_length(4096)
    w.add_embedding_length(d["n_embd"])
    w.add_feed_forward_length([d["n_ff"] if k == "mlp" else 0 for k in KINDS])
    w.add_head_count(d["n_head"])
    w.add_head_count_kv([d["n_head_kv"] if k == "attention" else 0 for k in KINDS])
    w.add_key_length(d["head_dim"])
    w.add_value_length(d["head_dim"])
    w.add_layer_norm_eps(1e-5)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_ssm_conv_kernel(4)
    w.add_ssm_state_size(d["d_state"])
    w.add_ssm_group_count(d["n_group"])
    w.add_ssm_inner_size(d["d_inner"])
    w.add_ssm_time_step_rank(d["n_ssm_head"])
    w.add_vocab_size(d["n_vocab"])
    w.add_file_type(0)
    w.add_quantization_version(2)
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("tekken")
    w.add_token_list([f"<t{i}>" for i in range(d["n_vocab"])])
    w.add_token_types([1] * d["n_vocab"])
    w.add_token_merges([])
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    tensors = {
        "token_embd.weight": _weights(rng, d["n_vocab"], d["n_embd"]),
        "output_norm.weight": np.ones(d["n_embd"], np.float32),
        "output.weight": _weights(rng, d["n_vocab"], d["n_embd"]),
    }
    for i, kind in enumerate(KINDS):
        for name, t in _layer_tensors(rng, kind, d).items():
            tensors[f"blk.{i}.{name}"] = t
    for name, t in tensors.items():
        w.add_tensor(name, t)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return tensors


def _llama_quantize(llama_cpp, src, dst, ftype):
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = ftype
    rc = llama_cpp.llama_model_quantize(str(src).encode(), str(dst).encode(), ctypes.byref(params))
    assert rc == 0, f"llama_model_quantize failed ({rc})"


@pytest.fixture(scope="module")
def llama_k_errors(tmp_path_factory):
    """{K type: [(tensor, our squared error, llama.cpp's squared error)]} over three presets."""
    llama_cpp = pytest.importorskip("llama_cpp")
    d = tmp_path_factory.mktemp("kquants")
    tensors = _write_nemotron_h_f32(d / "f32.gguf")
    presets = ("Q4_K_M", "Q5_K_M", "Q6_K")
    errors: dict[str, list] = {}
    for preset in presets:
        out = d / f"{preset}.gguf"
        _llama_quantize(
            llama_cpp, d / "f32.gguf", out, getattr(llama_cpp, f"LLAMA_FTYPE_MOSTLY_{preset}")
        )
        for t in gguf.GGUFReader(out).tensors:
            if t.tensor_type not in quants.K_TYPES:
                continue
            x = tensors[t.name].reshape(-1, tensors[t.name].shape[-1])
            theirs = _gguf_dequant(np.asarray(t.data), t.tensor_type, x.shape)
            ours = quants.dequantize(quants.quantize(x, t.tensor_type), t.tensor_type, x.shape)
            sq = [float(np.sum((y.astype(np.float64) - x) ** 2)) for y in (ours, theirs)]
            errors.setdefault(t.tensor_type.name, []).append((f"{preset}:{t.name}", *sq))
    return errors


@pytest.mark.llamacpp
@pytest.mark.parametrize("qtype", ["Q4_K", "Q5_K", "Q6_K"])
def test_k_quant_rmse_vs_llama_cpp(llama_k_errors, qtype):
    """Our weight RMSE over llama.cpp's, per tensor llama.cpp stored as this type (no imatrix)."""
    rows = llama_k_errors.get(qtype)
    assert rows, f"llama.cpp stored no {qtype} tensor"
    ratios = {name: np.sqrt(ours / theirs) for name, ours, theirs in rows}
    worst = max(ratios, key=ratios.get)
    assert ratios[worst] <= tol.KQUANT_RMSE_RATIO_VS_LLAMA_CPP[qtype], (worst, ratios[worst])


def test_converter_block_sizes_come_from_the_engine_and_match_gguf():
    """The converter's block sizes are the engine's format table (one definition), and that table
    agrees with gguf-py's for every type the converter writes."""
    from edgenano import _C
    from edgenano.convert import quants as cq

    for t in cq.TYPES:
        assert cq.BLOCK_SIZE[t] == _C.block_size(int(t)) == gguf.GGML_QUANT_SIZES[t][0], t.name
        assert cq.TYPE_SIZE[t] == _C.type_size(int(t)) == gguf.GGML_QUANT_SIZES[t][1], t.name
