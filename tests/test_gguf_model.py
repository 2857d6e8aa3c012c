"""The GGUF reader: config and tensor views of converted tiny checkpoints, the layouts other
writers use (permuted q/k, fused attn_qkv, tied output), and clear errors for bad files."""

from __future__ import annotations

import sys
from pathlib import Path

import gguf
import numpy as np
import pytest
from gguf import GGMLQuantizationType as QT
from gguf import GGUFValueType as VT

sys.path.insert(0, str(Path(__file__).resolve().parent))  # tests/ is no package (importlib mode)
from conftest import nmse  # noqa: E402
from tolerances import NMSE_REFERENCE_LAYOUT_F64  # noqa: E402

from edgenano.gguf_model import GGUFError, load_gguf  # noqa: E402
from edgenano.reference import ReferenceModel  # noqa: E402

KINDS = {"M": "mamba", "*": "attention", "-": "mlp"}


@pytest.fixture(scope="module")
def converted(tiny_checkpoint, tmp_path_factory):
    """converted(config) -> (hf_dir, path of its f32 GGUF), cached."""
    from edgenano.convert import convert_checkpoint

    cache = {}

    def get(config: str = "mix"):
        if config not in cache:
            hf_dir = tiny_checkpoint(config)
            out = tmp_path_factory.mktemp("gguf") / f"{config}-f32.gguf"
            cache[config] = hf_dir, convert_checkpoint(hf_dir, out, "f32")
        return cache[config]

    return get


def rewrite(src: Path, dst: Path, *, arch: str = "nemotron_h", keys: dict | None = None,
            tensors: dict | None = None) -> Path:
    """Copy a GGUF with edits, the way another writer could have written it.

    keys: {key: None (drop) | (value, GGUFValueType[, array item type])}.
    tensors: {name: None (drop) | float32 array (numpy shape) | (raw array, GGMLQuantizationType)};
    names not in src are appended.
    """
    keys, tensors = dict(keys or {}), dict(tensors or {})
    r = gguf.GGUFReader(src)
    w = gguf.GGUFWriter(dst, arch)
    for key, f in r.fields.items():
        if key.startswith("GGUF.") or key == "general.architecture" or key in keys:
            continue
        sub = f.types[-1] if f.types[0] == VT.ARRAY else None
        w.add_key_value(key, f.contents(), f.types[0], sub)
    for key, spec in keys.items():
        if spec is not None:
            w.add_key_value(key, *spec)
    items = [(t.name, (t.data, t.tensor_type)) for t in r.tensors if t.name not in tensors]
    items += [(n, v) for n, v in tensors.items() if v is not None]
    for name, v in items:
        data, qtype = v if isinstance(v, tuple) else (np.ascontiguousarray(v, np.float32), None)
        w.add_tensor(name, data, raw_dtype=qtype)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return dst


def f32(path: Path, name: str) -> np.ndarray:
    return load_gguf(path).tensors[name].dequantize()


# ---------------------------------------------------------------------------------------------
# Reading what our converter writes


@pytest.mark.parametrize("config", ["mix", "attn_first", "groups4"])
def test_config_matches_the_checkpoint(converted, config):
    from devtools import tiny

    hf = tiny.make_config(config)
    c = load_gguf(converted(config)[1]).config
    pattern = hf["hybrid_override_pattern"]
    assert c.layer_kinds == [KINDS[ch] for ch in pattern]
    assert c.n_ff == [hf["intermediate_size"] if ch == "-" else 0 for ch in pattern]
    assert c.n_head_kv == [hf["num_key_value_heads"] if ch == "*" else 0 for ch in pattern]
    assert (c.n_vocab, c.n_embd, c.n_layer) == (512, hf["hidden_size"], len(pattern))
    assert (c.n_head, c.head_dim) == (hf["num_attention_heads"], hf["head_dim"])
    assert (c.ssm_n_head, c.ssm_head_dim, c.ssm_n_group, c.ssm_d_state, c.ssm_d_conv) == (
        hf["mamba_num_heads"], hf["mamba_head_dim"], hf["n_groups"], hf["ssm_state_size"],
        hf["conv_kernel"])
    assert c.ssm_d_inner == hf["mamba_num_heads"] * hf["mamba_head_dim"]
    assert c.eps == pytest.approx(1e-5)
    assert (c.bos_id, c.eos_id) == (tiny.BOS_ID, tiny.EOS_ID)


def test_tensor_views_read_the_file_in_place(converted):
    from safetensors.numpy import load_file

    hf_dir, path = converted("mix")
    m = load_gguf(path)
    sd = load_file(hf_dir / "model.safetensors")
    p, hp = "blk.0.", "backbone.layers.0.mixer."
    a = m.tensors[p + "ssm_a"]
    assert a.ne == (1, 8) and a.shape == (8, 1) and a.type == QT.F32
    np.testing.assert_allclose(a.dequantize()[:, 0], -np.exp(sd[hp + "A_log"]), rtol=1e-6)
    np.testing.assert_array_equal(m.tensors[p + "ssm_norm.weight"].dequantize(),
                                  sd[hp + "norm.weight"].reshape(2, 64))
    np.testing.assert_array_equal(m.tensors[p + "ssm_conv1d.weight"].dequantize(),
                                  sd[hp + "conv1d.weight"][:, 0, :])
    emb = m.tensors["token_embd.weight"]
    assert emb.ne == (64, 512) and emb.shape == (512, 64) and emb.raw.shape == (512, 256)
    assert isinstance(emb.raw, np.memmap) and not emb.raw.flags.writeable  # no copy
    with open(path, "rb") as f:
        f.seek(emb.offset)
        assert f.read(emb.nbytes) == emb.raw.tobytes()
    np.testing.assert_array_equal(emb.rows(3, 5).dequantize(), emb.dequantize()[3:5])
    assert not m.tied_output and m.fused_qkv_layers == []


def test_metadata_keeps_the_tokenizer(converted):
    m = load_gguf(converted("mix")[1])
    assert m.metadata["general.architecture"] == "nemotron_h"
    assert len(m.metadata["tokenizer.ggml.tokens"]) == m.config.n_vocab
    assert m.metadata["tokenizer.ggml.tokens"][12] == "<SPECIAL_12>"
    assert "<SPECIAL_11>" in m.metadata["tokenizer.chat_template"]
    assert m.metadata["nemotron_h.attention.head_count_kv"] == [0, 0, 0, 2, 0, 0, 0]
    plain = gguf.GGUFReader(m.path)  # our bulk array reading gives what gguf's reader gives
    assert {k: f.contents() for k, f in plain.fields.items() if not k.startswith("GGUF.")} == \
        m.metadata


@pytest.mark.parametrize("qtype", [QT.F16, QT.BF16, QT.Q8_0, QT.Q4_0, QT.Q5_0])
def test_dequantizes_quantized_tensors(converted, tmp_path, qtype):
    _, path = converted("mix")
    w = f32(path, "blk.0.ssm_in.weight")  # (328, 64)
    q = gguf.quants.quantize(w, qtype)
    if qtype == QT.F16:
        q = q.view(np.uint8)
    out = rewrite(path, tmp_path / "q.gguf", tensors={"blk.0.ssm_in.weight": (q, qtype)})
    view = load_gguf(out).tensors["blk.0.ssm_in.weight"]
    assert view.type == qtype and view.shape == (328, 64) and view.ne == (64, 328)
    want = gguf.quants.dequantize(q, qtype).reshape(328, 64).astype(np.float32)
    np.testing.assert_array_equal(view.dequantize(), want)
    np.testing.assert_array_equal(view.rows(7, 9).dequantize(), want[7:9])


# ---------------------------------------------------------------------------------------------
# Layouts other writers use


def test_fused_qkv_is_split(converted, tmp_path):
    _, path = converted("mix")  # layer 3 is attention: q 128 rows, k and v 64 rows each
    q, k, v = (f32(path, f"blk.3.attn_{n}.weight") for n in "qkv")
    out = rewrite(path, tmp_path / "fused.gguf", tensors={
        "blk.3.attn_q.weight": None, "blk.3.attn_k.weight": None, "blk.3.attn_v.weight": None,
        "blk.3.attn_qkv.weight": np.concatenate([q, k, v])})
    m = load_gguf(out)
    assert m.fused_qkv_layers == [3] and "blk.3.attn_qkv.weight" not in m.tensors
    for name, want in zip("qkv", (q, k, v), strict=True):
        np.testing.assert_array_equal(m.tensors[f"blk.3.attn_{name}.weight"].dequantize(), want)
    ids = np.arange(20, 41)
    np.testing.assert_array_equal(ReferenceModel(m, chunk_size=8).logits(ids),
                                  ReferenceModel(load_gguf(path), chunk_size=8).logits(ids))


def permute_rows(w: np.ndarray, n_head: int) -> np.ndarray:
    """llama.cpp's converter habit: per head, interleave the two halves of the rows."""
    d = w.shape[0] // n_head
    return w.reshape(n_head, 2, d // 2, -1).swapaxes(1, 2).reshape(w.shape)


def test_permuted_qk_change_nothing(converted, tmp_path):
    _, path = converted("mix")
    m = load_gguf(path)
    c = m.config
    q = permute_rows(f32(path, "blk.3.attn_q.weight"), c.n_head)
    k = permute_rows(f32(path, "blk.3.attn_k.weight"), c.n_head_kv[3])
    assert not np.array_equal(q, f32(path, "blk.3.attn_q.weight"))
    out = rewrite(path, tmp_path / "perm.gguf",
                  tensors={"blk.3.attn_q.weight": q, "blk.3.attn_k.weight": k})
    ids = np.arange(20, 41)
    got = ReferenceModel(load_gguf(out), np.float64, chunk_size=8).logits(ids)
    want = ReferenceModel(m, np.float64, chunk_size=8).logits(ids)
    assert nmse(got, want) <= NMSE_REFERENCE_LAYOUT_F64


def test_absent_output_is_tied_to_the_embedding(converted, tmp_path):
    _, path = converted("attn_first")
    out = rewrite(path, tmp_path / "tied.gguf", tensors={"output.weight": None})
    m = load_gguf(out)
    assert m.tied_output
    emb = m.tensors["token_embd.weight"]
    assert m.tensors["output.weight"].offset == emb.offset
    ref = ReferenceModel(m, np.float64, chunk_size=16)
    ids = [5, 9, 33]
    h = ref.forward(ref.new_state(), ids)
    np.testing.assert_allclose(ref.logits(ids), h @ emb.dequantize().astype(np.float64).T,
                               rtol=1e-12)


def test_accepts_flat_ssm_vectors(converted, tmp_path):
    _, path = converted("mix")
    edits = {"blk.0.ssm_a": f32(path, "blk.0.ssm_a").reshape(8),
             "blk.0.ssm_d": f32(path, "blk.0.ssm_d").reshape(8),
             "blk.0.ssm_norm.weight": f32(path, "blk.0.ssm_norm.weight").reshape(128)}
    out = rewrite(path, tmp_path / "flat.gguf", tensors=edits)
    ids = np.arange(3, 14)
    np.testing.assert_array_equal(ReferenceModel(load_gguf(out), chunk_size=8).logits(ids),
                                  ReferenceModel(load_gguf(path), chunk_size=8).logits(ids))


# ---------------------------------------------------------------------------------------------
# Bad files: each raises GGUFError naming the file and the problem


def _cut(n_from_end: int | None = None, keep: int | None = None):
    def edit(src: Path, dst: Path) -> Path:
        data = src.read_bytes()
        dst.write_bytes(data[:keep] if keep is not None else data[:-n_from_end])
        return dst
    return edit


def _patch_version(value: bytes):
    def edit(src: Path, dst: Path) -> Path:
        data = bytearray(src.read_bytes())
        data[4:8] = value
        dst.write_bytes(bytes(data))
        return dst
    return edit


def _rewrite(**kw):
    return lambda src, dst: rewrite(src, dst, **kw)


A = "nemotron_h."
BAD_FILES = {
    "not_gguf": (lambda s, d: (d.write_text("{\"model_type\": \"nemotron_h\"}"), d)[1],
                 r"not a GGUF file \(bad magic"),
    "empty": (lambda s, d: (d.write_bytes(b""), d)[1], "not a GGUF file"),
    "version": (_patch_version((9).to_bytes(4, "little")), "GGUF version 9 is not supported"),
    "big_endian": (_patch_version((3).to_bytes(4, "big")), "a big-endian GGUF"),
    "truncated_data": (_cut(n_from_end=100), "truncated file: the tensor data needs"),
    "truncated_header": (_cut(keep=300), "truncated file: the header needs"),
    "truncated_vocab": (_cut(keep=3000), "truncated file: the header needs"),
    "wrong_arch": (_rewrite(arch="llama"), "this file is 'llama'; edgenano runs 'nemotron_h'"),
    "missing_key": (_rewrite(keys={A + "ssm.state_size": None}),
                    "missing required metadata key 'nemotron_h.ssm.state_size'"),
    "float_as_int": (_rewrite(keys={A + "ssm.state_size": (16.0, VT.FLOAT32)}),
                     "'nemotron_h.ssm.state_size' must be an integer"),
    "short_array": (_rewrite(keys={A + "feed_forward_length": ([0, 96, 0], VT.ARRAY, VT.INT32)}),
                    "'nemotron_h.feed_forward_length' has 3 entries but block_count is 7"),
    "scalar_kv": (_rewrite(keys={A + "attention.head_count_kv": (2, VT.UINT32)}),
                  "must be a per-layer array"),
    "two_mixers": (_rewrite(keys={A + "feed_forward_length": ([0, 96, 0, 96, 96, 0, 96],
                                                             VT.ARRAY, VT.INT32)}),
                   "layer 3 has both feed_forward_length 96 and head_count_kv 2"),
    "kind_vs_tensors": (_rewrite(keys={A + "feed_forward_length": ([96, 96, 0, 0, 96, 0, 96],
                                                                  VT.ARRAY, VT.INT32)}),
                        r"layer 0 is mlp by its per-layer metadata \(feed_forward_length 96, "
                        r"head_count_kv 0\), but .*: missing tensor 'blk.0.ffn_down.weight', "
                        r"'blk.0.ffn_up.weight'; unexpected tensors \['blk.0.ssm_a', "),
    "missing_tensor": (_rewrite(tensors={"blk.5.ssm_out.weight": None}),
                       "missing tensor 'blk.5.ssm_out.weight'"),
    "wrong_shape": (_rewrite(tensors={"blk.2.ssm_conv1d.weight": np.zeros((192, 5))}),
                    r"'blk.2.ssm_conv1d.weight' has ggml shape \(5, 192\), .* implies \(4, 192\)"),
    "metadata_vs_tensors": (_rewrite(keys={A + "ssm.state_size": (32, VT.UINT32)}),
                            r"'blk.0.ssm_in.weight' has ggml shape \(64, 328\)"),
    "unknown_tensor": (_rewrite(tensors={"blk.1.ssm_a": np.zeros((8, 1))}),
                       r"unexpected tensors .*blk.1.ssm_a"),
    "int_tensor": (_rewrite(tensors={"output_norm.weight": (np.zeros(64, np.int32), None)}),
                   "'output_norm.weight' has type .*cannot read"),
}


@pytest.mark.parametrize("case", sorted(BAD_FILES))
def test_bad_file_raises_a_clear_error(converted, tmp_path, case):
    edit, message = BAD_FILES[case]
    bad = edit(converted("mix")[1], tmp_path / f"{case}.gguf")
    with pytest.raises(GGUFError, match=message) as err:
        load_gguf(bad)
    assert str(bad) in str(err.value)
    assert isinstance(err.value, ValueError)


def test_missing_file(tmp_path):
    with pytest.raises(GGUFError, match="no such file"):
        load_gguf(tmp_path / "nope.gguf")


# ---------------------------------------------------------------------------------------------
# A tensor table that does not describe the data section (header fields edited in place)


def _patch_tensor(name: str, *, qtype: int | None = None, offset=None, ne1: int | None = None):
    """Edit one tensor's entry in the header: its type id, its data offset (an int, or a
    function of the old offset and the reader) or its second dimension."""
    def edit(src: Path, dst: Path) -> Path:
        r = gguf.GGUFReader(src)
        t = next(t for t in r.tensors if t.name == name)
        f, data = t.field, bytearray(src.read_bytes())
        n_dims = len(t.shape)
        at_dims = f.offset + 8 + len(name.encode()) + 4
        at_type = at_dims + 8 * n_dims
        at_off = at_type + 4
        if qtype is not None:
            data[at_type:at_type + 4] = int(qtype).to_bytes(4, "little")
        if offset is not None:
            old = int.from_bytes(data[at_off:at_off + 8], "little")
            new = offset(old, r) if callable(offset) else offset
            data[at_off:at_off + 8] = new.to_bytes(8, "little")
        if ne1 is not None:
            data[at_dims + 8:at_dims + 16] = ne1.to_bytes(8, "little")
        dst.write_bytes(bytes(data))
        return dst
    return edit


def _prev_offset(name: str):
    def get(old, r):
        names = [t.name for t in r.tensors]
        return int(r.tensors[names.index(name) - 1].data_offset - r.data_offset) + 32
    return get


def _one_tensor_short(src: Path, dst: Path) -> Path:
    data = bytearray(src.read_bytes())
    n = int.from_bytes(data[8:16], "little")
    data[8:16] = (n - 1).to_bytes(8, "little")
    dst.write_bytes(bytes(data))
    return dst


def _table_cases(path: Path) -> dict:
    names = [t.name for t in gguf.GGUFReader(path).tensors]
    mid = names[len(names) // 2]  # an f32 tensor with a neighbour on each side
    before = names[names.index(mid) - 1]
    return {
        "overlapping_offset": (_patch_tensor(mid, offset=_prev_offset(mid)),
                               rf"tensor '{mid}' .* overlaps the previous tensor '{before}'"),
        "type_needs_more_data": (_patch_tensor(mid, qtype=QT.F64),
                                 rf"overlaps the previous tensor '{mid}' \(F64"),
        "type_needs_less_data": (_patch_tensor(mid, qtype=QT.F16),
                                 rf"should start at offset \d+, where the previous tensor "
                                 rf"'{mid}' \(F16"),
        "unaligned_offset": (_patch_tensor(mid, offset=lambda old, r: old + 4),
                             rf"tensor '{mid}' .* is not aligned to 32 bytes"),
        "offset_past_the_end": (_patch_tensor(mid, offset=1 << 40),
                                rf"tensor '{mid}' .* lies past the end of the file"),
        "n_tensors_one_short": (_one_tensor_short,
                                rf"follow the last tensor '{names[-2]}'.*header lists "
                                rf"{len(names) - 1} tensors, fewer than the file holds"),
        "oversized_dims": (_patch_tensor("token_embd.weight", ne1=1 << 62),
                           r"'token_embd.weight' has an impossible shape"),
        "huge_dims": (_patch_tensor("token_embd.weight", ne1=1 << 40),
                      r"'token_embd.weight' .* needs more bytes than the file's whole data"),
        "unknown_type": (_patch_tensor(mid, qtype=250), rf"'{mid}' has unknown ggml type id 250"),
        "block_size": (_patch_tensor("blk.0.ssm_a", qtype=QT.Q8_0),
                       r"'blk.0.ssm_a' \(Q8_0\) has ne0 1, not a multiple of the Q8_0 block"),
    }


TABLE_CASES = ["overlapping_offset", "type_needs_more_data", "type_needs_less_data",
               "unaligned_offset", "offset_past_the_end", "n_tensors_one_short",
               "oversized_dims", "huge_dims", "unknown_type", "block_size"]


@pytest.mark.parametrize("case", TABLE_CASES)
def test_bad_tensor_table_raises_a_clear_error(converted, tmp_path, case):
    path = converted("mix")[1]
    edit, message = _table_cases(path)[case]
    bad = edit(path, tmp_path / f"{case}.gguf")
    with pytest.raises(GGUFError, match=message) as err:
        load_gguf(bad)
    assert str(bad) in str(err.value)


def test_our_files_are_contiguous_like_llamacpp_writes_them(converted):
    r = gguf.GGUFReader(converted("mix")[1])
    expected = 0
    for t in r.tensors:
        assert t.data_offset - r.data_offset == expected
        expected += -(-int(t.n_bytes) // r.alignment) * r.alignment
