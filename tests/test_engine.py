"""The native engine end to end (edgenano.engine): logits against the NumPy reference per weight
type and KV-cache type, prefill/decode splits, snapshots, threads, the scalar path, bad input and
bad files, and llama.cpp on the same GGUF."""

from __future__ import annotations

import dataclasses

import gguf
import numpy as np
import pytest
from gguf import GGMLQuantizationType as QT

from edgenano import Model
from edgenano.backends import ContextOverflow, ReferenceBackend
from edgenano.engine import NativeBackend
from edgenano.gguf_model import GGUFError, load_gguf

from .conftest import gguf_converter, nmse
from .tolerances import (
    ENGINE_DECODE_VS_REFERENCE_NMSE,
    ENGINE_KV_CACHE_VS_REFERENCE_NMSE,
    ENGINE_PREFILL_VS_REFERENCE_NMSE,
    ENGINE_SCALAR_VS_AVX2_INT8_NMSE,
    ENGINE_SCALAR_VS_AVX2_NMSE,
    ENGINE_SPLIT_VS_WHOLE_NMSE,
    ENGINE_VS_LLAMACPP_NMSE,
    ENGINE_VS_LLAMACPP_REF_RATIO,
)

_C = pytest.importorskip("edgenano._C")

# "kwide": rows of 256 so the K-quants are K-quants (no Q5_0/Q8_0 fallbacks).
CONFIGS = {
    "mix": ("mix", {}),
    "attn_first": ("attn_first", {}),
    "groups4": ("groups4", {}),
    "kwide": ("mix", dict(hybrid_override_pattern="M-*-M-", hidden_size=256,
                          intermediate_size=512, num_attention_heads=4, num_key_value_heads=2,
                          head_dim=64, mamba_num_heads=8, mamba_head_dim=32, n_groups=2,
                          ssm_state_size=16)),
}
TYPES = ["f32", "f16", "bf16", "q8_0", "q4_0", "q5_0", "q4_k", "q5_k", "q6_k", "q4_k_m"]
# Longer than the chunked-scan threshold (32) and every tiny chunk_size; not a multiple of them.
PROMPT = np.random.default_rng(0).integers(16, 512, size=45).tolist()
# At least every type's gemm_min_batch (128): every matrix product of its prefill runs on f32
# panels with f32 activations, except Q4_0/Q5_0/Q4_K/Q5_K on AVX2, whose int8 panels quantize
# them as decode does (int8_prefill). Shorter batches of quantized weights use the int8 dots and
# tiles.
LONG_PROMPT = np.random.default_rng(1).integers(16, 512, size=130).tolist()
SPLIT = 30  # prefill PROMPT[:SPLIT], then decode the rest one token at a time


@pytest.fixture(scope="module")
def gguf_file(tiny_checkpoint, tmp_path_factory):
    """gguf_file(config, outtype) -> path, converted once per module."""
    return gguf_converter(tiny_checkpoint, tmp_path_factory, CONFIGS)


@pytest.fixture(scope="module")
def oracle():
    """oracle(path, prompt=PROMPT) -> float64 reference logits of the prompt (cached)."""
    cache: dict = {}

    def get(path, prompt=PROMPT):
        key = (path, tuple(prompt))
        if key not in cache:
            cache[key] = ReferenceBackend(load_gguf(path), dtype=np.float64).logits(prompt)
        return cache[key]

    return get


def native(path, **kw) -> Model:
    kw.setdefault("n_threads", 2)
    return Model(path, backend="native", **kw)


def decode_split(m: Model, tokens=PROMPT, split=SPLIT) -> np.ndarray:
    """Prefill tokens[:split], then one token at a time: logits (len(tokens) - split, V)."""
    s = m.new_state()
    m.eval(s, tokens[:split])
    return np.stack([m.eval(s, [t]) for t in tokens[split:]])


# ------------------------------------------------------------------------- against reference


@pytest.mark.parametrize("config", ["mix", "attn_first", "groups4"])
def test_prefill_matches_reference_f32(gguf_file, oracle, config):
    path = gguf_file(config)
    got = native(path, kv_type="f32").logits(PROMPT)
    assert got.shape == (len(PROMPT), 512) and got.dtype == np.float32
    assert nmse(got, oracle(path)) <= ENGINE_PREFILL_VS_REFERENCE_NMSE


def int8_prefill(path, n_tokens: int) -> bool:
    """Whether a prefill of n_tokens of this file quantizes some product's activations to int8
    on this CPU (the dots, or the int8 panels)."""
    float_types = {int(QT.F32), int(QT.F16), int(QT.BF16)}
    types = {int(t.type) for t in load_gguf(path).tensors.values()} - float_types
    return any(_C.kernels.matmul_path(t, n_tokens) != "gemm" for t in types)


def long_prefill_bound(path, outtype: str) -> float:
    if int8_prefill(path, len(LONG_PROMPT)):
        return ENGINE_DECODE_VS_REFERENCE_NMSE[outtype]
    return ENGINE_PREFILL_VS_REFERENCE_NMSE


@pytest.mark.parametrize("outtype", TYPES)
def test_prefill_matches_reference_per_type(gguf_file, oracle, outtype):
    """Long prefill batches keep activations in f32 (the file's weights give the reference's
    logits to rounding), except on the int8 panels (Q4_0/Q5_0/Q4_K/Q5_K/Q6_K on AVX2, and Q8_0
    with AVX-512 VNNI), which are held to the decode bounds."""
    path = gguf_file("kwide", outtype)
    int8 = ["q4_0", "q5_0", "q4_k", "q5_k", "q6_k", "q4_k_m"]
    if _C.kernels.isa() == "avx512-vnni":
        int8.append("q8_0")
    assert int8_prefill(path, len(LONG_PROMPT)) == (
        outtype in int8 and _C.kernels.cpu_has_avx2())
    got = native(path, kv_type="f32").logits(LONG_PROMPT)
    assert nmse(got, oracle(path, LONG_PROMPT)) <= long_prefill_bound(path, outtype)


@pytest.mark.parametrize("outtype", TYPES)
def test_short_prefill_matches_reference_per_type(gguf_file, oracle, outtype):
    """Batches below gemm_min_batch quantize activations to int8 blocks (the tiles), as decode."""
    path = gguf_file("kwide", outtype)
    got = native(path, kv_type="f32").logits(PROMPT)
    assert nmse(got, oracle(path)) <= ENGINE_DECODE_VS_REFERENCE_NMSE[outtype]


@pytest.mark.parametrize("outtype", TYPES)
def test_decode_matches_reference_per_type(gguf_file, oracle, outtype):
    """Decode quantizes activations to int8 blocks for the quantized weight types."""
    path = gguf_file("kwide", outtype)
    got = decode_split(native(path, kv_type="f32"))
    assert nmse(got, oracle(path)[SPLIT:]) <= ENGINE_DECODE_VS_REFERENCE_NMSE[outtype]


@pytest.mark.parametrize("outtype", ["q4_k", "q5_k_m"])
def test_fallback_types_match_reference(gguf_file, oracle, outtype):
    """Rows not a multiple of 256 fall back as llama.cpp does (Q4_K -> Q5_0, Q5_K -> Q5_1, Q6_K
    -> Q8_0), as in 9B-v2 whose width 4480 is not: the engine runs those files too."""
    path = gguf_file("mix", outtype)
    types = {t.type for t in load_gguf(path).tensors.values()}
    assert {"q4_k": QT.Q5_0, "q5_k_m": QT.Q5_1}[outtype] in types
    m = native(path, kv_type="f32")
    got = m.logits(LONG_PROMPT)
    assert nmse(got, oracle(path, LONG_PROMPT)) <= long_prefill_bound(path, outtype)
    assert nmse(decode_split(m), oracle(path)[SPLIT:]) <= ENGINE_DECODE_VS_REFERENCE_NMSE[outtype]


@pytest.mark.parametrize("kv_type", ["f16", "q8_0"])
@pytest.mark.parametrize("config", ["mix", "attn_first"])
def test_kv_cache_types(gguf_file, oracle, config, kv_type):
    path = gguf_file(config)
    got = native(path, kv_type=kv_type).logits(PROMPT)
    assert nmse(got, oracle(path)) <= ENGINE_KV_CACHE_VS_REFERENCE_NMSE[kv_type]


# --------------------------------------------------------------------- splits and snapshots


@pytest.mark.parametrize("config", ["mix", "groups4"])
def test_prefill_then_decode_equals_all_at_once(gguf_file, config):
    m = native(gguf_file(config), kv_type="f32")
    assert nmse(decode_split(m), m.logits(PROMPT)[SPLIT:]) <= ENGINE_SPLIT_VS_WHOLE_NMSE


def test_n_batch_chunks_equal_one_batch(gguf_file):
    path = gguf_file("mix")
    whole = native(path, kv_type="f32").logits(PROMPT)
    chunks = native(path, kv_type="f32", n_batch=7).logits(PROMPT)
    assert nmse(chunks, whole) <= ENGINE_SPLIT_VS_WHOLE_NMSE
    m = native(path, n_batch=7)
    assert np.array_equal(m.eval(m.new_state(), PROMPT), m.logits(PROMPT)[-1])


@pytest.mark.parametrize("kv_type", ["f16", "q8_0"])
def test_snapshot_continuations_bit_identical(gguf_file, kv_type):
    m = native(gguf_file("mix", "q8_0"), kv_type=kv_type)
    s = m.new_state()
    m.eval(s, PROMPT[:20])
    snap = s.copy()
    assert snap.n_past == s.n_past == 20
    a = [m.eval(s, PROMPT[20:33]), m.eval(s, [PROMPT[33]])]
    m.eval(s, PROMPT[34:])  # advancing the original must not touch the snapshot
    b = [m.eval(snap, PROMPT[20:33]), m.eval(snap, [PROMPT[33]])]
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    fresh = m.new_state()
    m.eval(fresh, PROMPT[:20])
    assert np.array_equal(m.eval(fresh, PROMPT[20:33]), a[0])


@pytest.mark.parametrize("kv_type", ["f16", "q8_0"])
def test_export_import_state_bit_identical(gguf_file, kv_type):
    """What a chat state file holds: arrays out, arrays in, the same continuation to the bit."""
    path = gguf_file("mix", "q8_0")
    m = native(path, kv_type=kv_type)
    s = m.new_state()
    m.eval(s, PROMPT[:20])
    arrays = {k: v.copy() for k, v in m.export_state(s).items()}
    assert {k.split(".")[0] for k in arrays} == {"conv", "ssm", "k", "v", "kv_type"}
    other = native(path, kv_type=kv_type)  # another instance of the same file
    restored = other.import_state(arrays, PROMPT[:20])
    assert restored.n_past == 20
    assert np.array_equal(m.eval(s, PROMPT[20:]), other.eval(restored, PROMPT[20:]))

    for broken, match in [({k: v for k, v in arrays.items() if k != "ssm.0"},
                           r"missing \['ssm.0'\]"),
                          (dict(arrays, **{"conv.0": arrays["conv.0"][:1]}),
                           r"state array 'conv.0' is float32 \(1, 192\); this model keeps "
                           r"float32 \(3, 192\)")]:
        with pytest.raises(ValueError, match=match):
            other.import_state(broken, PROMPT[:20])
    with pytest.raises(ValueError, match="kv_type"):
        native(path, kv_type="f32" if kv_type != "f32" else "f16").import_state(
            arrays, PROMPT[:20])


def test_profile_attributes_time_to_operations(gguf_file):
    m = native(gguf_file("mix", "q8_0"))
    be = m.backend
    assert not be.profiling
    m.logits(PROMPT)
    assert be.profile() == []  # off by default: nothing recorded
    be.profiling = True
    s = m.new_state()
    m.eval(s, PROMPT[:40])
    m.eval(s, PROMPT[40:41])
    rows = {r["op"]: r for r in be.profile(reset=True)}
    assert {"matmul Q8_0 batch", "matmul Q8_0 decode", "ssm_scan chunked", "ssm_scan recurrent",
            "attention", "causal_conv", "rmsnorm"} <= set(rows)
    layers = m.config.layer_kinds
    # One token: every weight matrix once (q, k, v and o in attention; in and out in Mamba; up
    # and down in the MLP; the output head; token_embd is a lookup), plus the prefill's output
    # head, which runs on its last token only.
    n_mats = 4 * layers.count("attention") + 2 * layers.count("mamba") + 2 * layers.count("mlp")
    assert sum(r["calls"] for op, r in rows.items() if op.endswith("decode")) == n_mats + 2
    assert rows["ssm_scan recurrent"]["calls"] == layers.count("mamba")
    assert abs(sum(r["share"] for r in rows.values()) - 1) < 1e-9
    assert rows["matmul Q8_0 decode"]["gb_per_s"] > 0
    batch = rows["matmul Q8_0 batch"]
    assert batch["flops"] > 0 and batch["gflop_per_s"] == batch["flops"] / batch["seconds"] / 1e9
    assert be.profile() == []  # reset


def test_threads_bit_identical(gguf_file):
    path = gguf_file("kwide", "q4_0")
    one, two = native(path, n_threads=1), native(path, n_threads=2)
    assert np.array_equal(one.logits(PROMPT), two.logits(PROMPT))
    assert np.array_equal(decode_split(one), decode_split(two))


@pytest.mark.parametrize("outtype", ["f32", "q4_k", "q4_0"])
def test_scalar_path_matches_avx2(gguf_file, outtype):
    """Forced scalar kernels vs AVX2, whole model. With f32 activations (a long prefill, or f32
    weights) they agree to rounding. Where activations are quantized to int8 (short prefill,
    decode) a last-bit difference upstream can move one activation across a rounding boundary
    and the random model amplifies it, so there the bound is the int8 noise level; per call the
    kernels agree to rounding (test_kernels.test_matmul_scalar_matches_avx2). AVX2's long
    prefill of Q4_0 and Q4_K runs the int8 panels against the scalar f32 panels: the decode
    bound vs the reference."""
    if not _C.kernels.cpu_has_avx2():
        pytest.skip("no AVX2 on this CPU")
    path = gguf_file("kwide", outtype)
    m = native(path)
    runs = {}
    for scalar in (False, True):
        _C.kernels.set_force_scalar(scalar)
        try:
            runs[scalar] = [m.logits(LONG_PROMPT), m.logits(PROMPT), decode_split(m)]
        finally:
            _C.kernels.set_force_scalar(False)
    int8 = ENGINE_SCALAR_VS_AVX2_NMSE if outtype == "f32" else ENGINE_SCALAR_VS_AVX2_INT8_NMSE
    # AVX2's int8 panels against the scalar f32 panels: as far apart as int8 is from the reference
    long = long_prefill_bound(path, outtype)
    if not int8_prefill(path, len(LONG_PROMPT)):
        long = ENGINE_SCALAR_VS_AVX2_NMSE
    for (fast, slow), bound in zip(zip(runs[False], runs[True]), (long, int8, int8)):
        assert nmse(slow, fast) <= bound


# ------------------------------------------------------------------------ errors, bad files


def test_context_overflow_and_bad_ids(gguf_file):
    m = native(gguf_file("mix"), n_ctx=16)
    s = m.new_state()
    m.eval(s, PROMPT[:10])
    with pytest.raises(ContextOverflow, match="n_ctx=16"):
        m.eval(s, PROMPT[10:17])
    assert s.n_past == 10  # nothing was fed
    m.eval(s, PROMPT[10:16])
    with pytest.raises(ContextOverflow):
        m.eval(s, [1])
    with pytest.raises(ValueError):
        m.eval(m.new_state(), [512])  # n_vocab is 512
    with pytest.raises(ValueError):
        m.eval(m.new_state(), [-1])
    with pytest.raises(ValueError):
        m.eval(m.new_state(), [])
    with pytest.raises(ValueError):
        m.logits([[1, 2]])
    with pytest.raises(ValueError):
        Model(gguf_file("mix"), backend="nonesuch")


def test_state_of_another_model_rejected(gguf_file):
    a, b = native(gguf_file("mix")), native(gguf_file("mix"))
    with pytest.raises(ValueError, match="another model"):
        a.eval(b.new_state(), [1])


def test_truncated_file_raises(gguf_file, tmp_path):
    data = gguf_file("mix").read_bytes()
    bad = tmp_path / "cut.gguf"
    bad.write_bytes(data[: len(data) - 1000])
    with pytest.raises(GGUFError):
        native(bad)


def tampered(path, name: str, **changes):
    """The loader's description of `path` with one tensor's entry changed."""
    gm = load_gguf(path)
    gm.tensors[name] = dataclasses.replace(gm.tensors[name], **changes)
    return gm


@pytest.mark.parametrize("change", [
    dict(offset=1 << 40),                 # outside the file
    dict(nbytes=12),                      # size does not match the shape
    dict(ne=(64, 80)),                    # shape does not match the config (64, 96)
    dict(type=16),                        # IQ2_XXS: not a type the engine runs
])
def test_bad_tensor_entries_raise(gguf_file, change):
    path = gguf_file("mix", "q8_0")
    with pytest.raises(GGUFError, match="blk.1.ffn_up.weight"):
        NativeBackend(tampered(path, "blk.1.ffn_up.weight", **change), path)


def test_missing_tensor_raises(gguf_file):
    path = gguf_file("mix")
    gm = load_gguf(path)
    del gm.tensors["blk.0.ssm_a"]
    with pytest.raises(GGUFError, match="blk.0.ssm_a"):
        NativeBackend(gm, path)


# --------------------------------------------------------------- layouts of other writers


def rewrite_gguf(src, dst, transform):
    """Copy a GGUF, passing its (name, type, data) tensor list through transform."""
    r = gguf.GGUFReader(src)
    w = gguf.GGUFWriter(dst, r.fields["general.architecture"].contents())
    for key, f in r.fields.items():
        if key.startswith("GGUF.") or key == "general.architecture":
            continue
        sub = f.types[1] if f.types[0] == gguf.GGUFValueType.ARRAY else None
        w.add_key_value(key, f.contents(), f.types[0], sub)
    for name, qtype, data in transform([(t.name, t.tensor_type, t.data) for t in r.tensors]):
        raw = qtype if qtype not in (QT.F32, QT.F16) else None
        w.add_tensor(name, np.ascontiguousarray(data), raw_dtype=raw)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return dst


def fuse_qkv(tensors):
    """attn_q/k/v rows concatenated into one attn_qkv tensor, as some writers store them."""
    by_name = {n: (q, d) for n, q, d in tensors}
    out = []
    for name, qtype, data in tensors:
        if name.endswith(("attn_k.weight", "attn_v.weight")):
            continue
        if name.endswith("attn_q.weight"):
            p = name[: -len("attn_q.weight")]
            parts = [by_name[p + f"attn_{x}.weight"] for x in "qkv"]
            assert len({q for q, _ in parts}) == 1
            name, data = p + "attn_qkv.weight", np.concatenate([d for _, d in parts], axis=0)
        out.append((name, qtype, data))
    return out


def test_fused_qkv_file(gguf_file, tmp_path):
    path = gguf_file("attn_first", "q8_0")
    fused = rewrite_gguf(path, tmp_path / "fused.gguf", fuse_qkv)
    assert "blk.0.attn_qkv.weight" in {t.name for t in gguf.GGUFReader(fused).tensors}
    assert np.array_equal(native(fused).logits(PROMPT), native(path).logits(PROMPT))


def test_tied_output_file(gguf_file, oracle, tmp_path):
    path = gguf_file("mix", "q8_0")
    tied = rewrite_gguf(path, tmp_path / "tied.gguf",
                        lambda ts: [t for t in ts if t[0] != "output.weight"])
    assert load_gguf(tied).tied_output
    got = native(tied, kv_type="f32").logits(LONG_PROMPT)
    assert nmse(got, oracle(tied, LONG_PROMPT)) <= long_prefill_bound(tied, "q8_0")


# ---------------------------------------------------------------------------------- llama.cpp


@pytest.mark.parametrize("config,outtype", [("kwide", t) for t in TYPES + ["q5_k_m"]]
                         + [("mix", "q5_k_m")])  # mix: the Q5_1 / Q8_0 fallbacks
def test_against_llama_cpp(gguf_file, oracle, config, outtype):
    """Same file through llama.cpp: close to it, and as close to the reference (both quantize
    activations to int8 blocks for a 45-token batch of quantized weights, so equal up to
    ENGINE_VS_LLAMACPP_REF_RATIO)."""
    llama_cpp = pytest.importorskip("llama_cpp")
    path = gguf_file(config, outtype)
    llm = llama_cpp.Llama(str(path), n_ctx=128, n_batch=128, logits_all=True, n_threads=2,
                          verbose=False)
    try:
        llm.eval(PROMPT)
        theirs = np.array(llm.scores[: len(PROMPT)], dtype=np.float64)
    finally:
        llm.close()
    ours = native(path).logits(PROMPT)
    ref = oracle(path)
    assert nmse(ours, theirs) <= ENGINE_VS_LLAMACPP_NMSE[outtype]
    assert nmse(ours, ref) <= ENGINE_VS_LLAMACPP_REF_RATIO * nmse(theirs, ref)
