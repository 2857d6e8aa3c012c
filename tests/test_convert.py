"""Converter tests: config spellings, safetensors streaming, layout and types, errors, CLI."""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import gguf
import numpy as np
import pytest
from gguf import GGMLQuantizationType as T
from gguf import GGUFValueType as V

from devtools.tiny import TINY_CONFIGS, make_config
from edgenano.convert import ConversionError, convert_checkpoint, plan_conversion, writer
from edgenano.convert.cli import main
from edgenano.convert.config import parse_config
from edgenano.convert.presets import OUTTYPES, use_more_bits

sys.path.insert(0, str(Path(__file__).resolve().parent))  # tests/ is no package (importlib mode)
from tolerances import MAX_CONVERT_RSS_GROWTH_FRACTION  # noqa: E402

# A config whose every matrix row (ne0) is a multiple of 256, so K-quants apply without fallback.
K_WIDE = dict(hidden_size=256, intermediate_size=512, num_attention_heads=4,
              num_key_value_heads=2, head_dim=64, mamba_num_heads=8, mamba_head_dim=32,
              n_groups=2, ssm_state_size=16)

# Every key of SPEC section 3 with its exact GGUF value type (sub-type for arrays).
SPEC_KEYS = {
    "general.architecture": (V.STRING,), "general.name": (V.STRING,),
    "general.file_type": (V.UINT32,), "general.quantization_version": (V.UINT32,),
    "nemotron_h.block_count": (V.UINT32,), "nemotron_h.context_length": (V.UINT32,),
    "nemotron_h.embedding_length": (V.UINT32,),
    "nemotron_h.feed_forward_length": (V.ARRAY, V.INT32),
    "nemotron_h.attention.head_count": (V.UINT32,),
    "nemotron_h.attention.head_count_kv": (V.ARRAY, V.INT32),
    "nemotron_h.attention.key_length": (V.UINT32,),
    "nemotron_h.attention.value_length": (V.UINT32,),
    "nemotron_h.attention.layer_norm_epsilon": (V.FLOAT32,),
    "nemotron_h.attention.layer_norm_rms_epsilon": (V.FLOAT32,),
    "nemotron_h.ssm.conv_kernel": (V.UINT32,), "nemotron_h.ssm.state_size": (V.UINT32,),
    "nemotron_h.ssm.group_count": (V.UINT32,), "nemotron_h.ssm.inner_size": (V.UINT32,),
    "nemotron_h.ssm.time_step_rank": (V.UINT32,), "nemotron_h.vocab_size": (V.UINT32,),
    "tokenizer.ggml.model": (V.STRING,), "tokenizer.ggml.pre": (V.STRING,),
    "tokenizer.ggml.tokens": (V.ARRAY, V.STRING),
    "tokenizer.ggml.token_type": (V.ARRAY, V.INT32),
    "tokenizer.ggml.merges": (V.ARRAY, V.STRING),
    "tokenizer.ggml.bos_token_id": (V.UINT32,), "tokenizer.ggml.eos_token_id": (V.UINT32,),
    "tokenizer.ggml.padding_token_id": (V.UINT32,),
    "tokenizer.ggml.add_bos_token": (V.BOOL,), "tokenizer.chat_template": (V.STRING,),
}


def st_tensors(hf_dir: Path) -> dict[str, np.ndarray]:
    """Every tensor of a checkpoint directory as float32 numpy (torch reads bf16)."""
    from safetensors.torch import load_file

    out = {}
    for f in sorted(hf_dir.glob("*.safetensors")):
        out.update({k: v.float().numpy() for k, v in load_file(f).items()})
    return out


def gguf_tensors(path: Path) -> dict[str, np.ndarray]:
    r = gguf.GGUFReader(path)
    return {t.name: gguf.quants.dequantize(t.data, t.tensor_type) for t in r.tensors}


def rewrite(hf_dir: Path, dst: Path, edit) -> Path:
    """Copy a single-file checkpoint, passing its tensors dict through `edit` first."""
    from safetensors.numpy import save_file

    shutil.copytree(hf_dir, dst)
    tensors = edit(st_tensors(hf_dir))
    save_file(tensors, str(dst / "model.safetensors"), metadata={"format": "pt"})
    return dst


# ---------------------------------------------------------------------------------------------
# config.json spellings


def legacy(name="mix", **fields) -> dict:
    """A tiny config.json in the 9B-v2 spelling with `fields` replaced (None removes a key)."""
    cfg = make_config(name) | fields
    return {k: v for k, v in cfg.items() if v is not None}


def as_list_spelling(cfg: dict, words: dict) -> dict:
    cfg = {k: v for k, v in cfg.items() if k != "hybrid_override_pattern"}
    cfg["layers_block_type"] = [words[c] for c in legacy()["hybrid_override_pattern"]]
    return cfg


@pytest.mark.parametrize("words", [
    {"M": "mamba", "*": "attention", "-": "mlp"},
    {"M": "linear_attention", "*": "full_attention", "-": "mlp"},
])
def test_layers_block_type_list_matches_legacy_pattern(words):
    ref = parse_config(legacy())
    got = parse_config(as_list_spelling(legacy(), words))
    assert got == ref
    assert ref.layer_kinds == ("mamba", "mlp", "mamba", "attention", "mlp", "mamba", "mlp")


@pytest.mark.parametrize("limit", [
    [0.0, math.inf], [0.0, {"__float__": "Infinity"}], [0.0, 1e38], [0.0, "Infinity"],
    [0.0, 3.4028234663852886e38],
])
def test_time_step_limit_spellings_accepted(limit):
    assert parse_config(legacy(time_step_limit=limit)).n_layer == 7


def test_time_step_limit_json_infinity_literal():
    text = json.dumps(legacy())  # Python writes inf as the bare JSON extension Infinity
    assert '"time_step_limit": [0.0, Infinity]' in text
    assert parse_config(json.loads(text)).n_embd == 64


@pytest.mark.parametrize("limit", [[0.0, 0.1], [0.001, math.inf], [1e-4, 100.0]])
def test_finite_time_step_limit_refused(limit):
    with pytest.raises(ConversionError, match="never clamps"):
        parse_config(legacy(time_step_limit=limit))


def test_legacy_mamba_key_names():
    cfg = legacy("groups4")
    renames = {"n_groups": "mamba_n_groups", "conv_kernel": "mamba_d_conv",
               "use_conv_bias": "mamba_conv_bias", "chunk_size": "mamba_chunk_size",
               "time_step_limit": "mamba_dt_limit"}
    old = {renames.get(k, k): v for k, v in cfg.items()}
    assert parse_config(old) == parse_config(cfg)
    c = parse_config(old)
    assert (c.ssm_n_group, c.ssm_d_conv, c.ssm_d_inner) == (4, 3, 8 * 24)


def test_d_inner_is_heads_times_head_dim_not_expand_times_hidden():
    c = parse_config(legacy("attn_first"))
    assert c.ssm_d_inner == 4 * 40 != 2 * 96


@pytest.mark.parametrize("spelling", [
    dict(hybrid_override_pattern="M-E*"),
    dict(hybrid_override_pattern=None, layers_block_type=["mlp", "moe", "attention"]),
])
def test_moe_beside_dense_mlp_refused(spelling):
    """nemotron_h_moe reads every feed-forward layer as experts (tests/test_moe_convert.py)."""
    with pytest.raises(ConversionError, match="dense MLP in a mixture-of-experts model"):
        parse_config(legacy(**spelling))


@pytest.mark.parametrize("fields, match", [
    (dict(architectures=["LlamaForCausalLM"], model_type="llama"), "unsupported architecture"),
    (dict(hybrid_override_pattern="M-X"), "unknown type 'X'"),
    (dict(mlp_hidden_act="silu"), "mlp_hidden_act"),
    (dict(attention_bias=True), "attention_bias"),
    (dict(n_groups=3), "not a multiple of n_groups"),
])
def test_unsupported_configs_refused(fields, match):
    with pytest.raises(ConversionError, match=match):
        parse_config(legacy(**fields))


# ---------------------------------------------------------------------------------------------
# layout, metadata and values


@pytest.fixture(scope="module")
def mix_dir(tiny_checkpoint):
    return tiny_checkpoint("mix")


@pytest.fixture(scope="module")
def mix_f32(mix_dir, tmp_path_factory):
    return convert_checkpoint(mix_dir, tmp_path_factory.mktemp("out") / "mix.gguf", "f32")


def test_every_spec_key_with_its_type(mix_f32):
    fields = gguf.GGUFReader(mix_f32).fields
    for key, types in SPEC_KEYS.items():
        assert key in fields, key
        assert tuple(fields[key].types) == types, key


def test_metadata_values(mix_f32):
    f = gguf.GGUFReader(mix_f32).fields
    val = {k: f[k].contents() for k in f}
    assert val["general.architecture"] == "nemotron_h"
    assert val["nemotron_h.feed_forward_length"] == [0, 96, 0, 0, 96, 0, 96]
    assert val["nemotron_h.attention.head_count_kv"] == [0, 0, 0, 2, 0, 0, 0]
    expect = {"block_count": 7, "embedding_length": 64, "attention.head_count": 4,
              "attention.key_length": 32, "ssm.conv_kernel": 4, "ssm.state_size": 16,
              "ssm.group_count": 2, "ssm.inner_size": 128, "ssm.time_step_rank": 8,
              "vocab_size": 512, "context_length": 4096}
    assert {k: val[f"nemotron_h.{k}"] for k in expect} == expect
    assert val["nemotron_h.attention.layer_norm_epsilon"] == pytest.approx(1e-5)
    assert val["general.quantization_version"] == 2
    assert val["general.file_type"] == 0
    assert val["tokenizer.ggml.pre"] == "tekken"
    assert (val["tokenizer.ggml.bos_token_id"], val["tokenizer.ggml.eos_token_id"]) == (1, 12)
    assert val["tokenizer.ggml.add_bos_token"] is False
    assert "<SPECIAL_11>" in val["tokenizer.chat_template"]


def test_token_types(mix_f32, mix_dir):
    f = gguf.GGUFReader(mix_f32).fields
    tokens, types = f["tokenizer.ggml.tokens"].contents(), f["tokenizer.ggml.token_type"].contents()
    tok = json.loads((mix_dir / "tokenizer.json").read_text())
    assert len(tokens) == len(types) == 512
    assert tokens[12] == "<SPECIAL_12>" and types[12] == gguf.TokenType.CONTROL
    normal = {i for t, i in tok["model"]["vocab"].items() if not t.startswith("<")}
    assert all(types[i] == gguf.TokenType.NORMAL for i in normal)
    assert len(f["tokenizer.ggml.merges"].contents()) == len(tok["model"]["merges"])


def transformed(hf: dict[str, np.ndarray], c) -> dict[str, np.ndarray]:
    """What each GGUF tensor must hold, computed independently from the HF tensors (SPEC 3)."""
    out = {"token_embd.weight": hf["backbone.embeddings.weight"],
           "output_norm.weight": hf["backbone.norm_f.weight"],
           "output.weight": hf["lm_head.weight"]}
    names = {"norm.weight": "attn_norm.weight", "mixer.in_proj.weight": "ssm_in.weight",
             "mixer.out_proj.weight": "ssm_out.weight", "mixer.dt_bias": "ssm_dt.bias",
             "mixer.conv1d.bias": "ssm_conv1d.bias", "mixer.q_proj.weight": "attn_q.weight",
             "mixer.k_proj.weight": "attn_k.weight", "mixer.v_proj.weight": "attn_v.weight",
             "mixer.o_proj.weight": "attn_output.weight", "mixer.up_proj.weight": "ffn_up.weight",
             "mixer.down_proj.weight": "ffn_down.weight"}
    for k, v in hf.items():
        if not k.startswith("backbone.layers."):
            continue
        i, rest = k.split(".", 3)[2:]
        g = f"blk.{i}."
        if rest in names:
            out[g + names[rest]] = v
        elif rest == "mixer.A_log":
            out[g + "ssm_a"] = -np.exp(v).reshape(-1, 1)
        elif rest == "mixer.D":
            out[g + "ssm_d"] = v.reshape(-1, 1)
        elif rest == "mixer.conv1d.weight":
            out[g + "ssm_conv1d.weight"] = v[:, 0, :]
        elif rest == "mixer.norm.weight":
            out[g + "ssm_norm.weight"] = v.reshape(c.ssm_n_group, -1)
        else:
            raise AssertionError(f"untested HF tensor {k}")
    return out


@pytest.mark.parametrize("name", list(TINY_CONFIGS))
def test_f32_values_and_shapes(tiny_checkpoint, tmp_path, name):
    src = tiny_checkpoint(name)
    out = convert_checkpoint(src, tmp_path / "m.gguf", "f32")
    want = transformed(st_tensors(src), parse_config(make_config(name)))
    got = gguf_tensors(out)
    assert set(got) == set(want)
    for k, v in want.items():
        assert got[k].shape == v.shape, k
        np.testing.assert_array_equal(got[k], v.astype(np.float32), err_msg=k)
    reader = gguf.GGUFReader(out)
    assert all(t.tensor_type == T.F32 for t in reader.tensors)
    ne = {t.name: tuple(int(d) for d in t.shape) for t in reader.tensors}
    c = parse_config(make_config(name))
    assert ne["blk.0.ssm_conv1d.weight" if c.layer_kinds[0] == "mamba" else
              "blk.1.ssm_conv1d.weight"] == (c.ssm_d_conv, c.ssm_conv_dim)
    assert ne[f"blk.{c.layer_kinds.index('mamba')}.ssm_a"] == (1, c.ssm_n_heads)
    assert ne[f"blk.{c.layer_kinds.index('mamba')}.ssm_norm.weight"] == (
        c.ssm_d_inner // c.ssm_n_group, c.ssm_n_group)


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_half_precision_inputs(tiny_checkpoint, tmp_path, dtype):
    src = tiny_checkpoint("mix", dtype=dtype)
    got = gguf_tensors(convert_checkpoint(src, tmp_path / "m.gguf", "f32"))
    want = transformed(st_tensors(src), parse_config(make_config("mix")))
    for k, v in want.items():
        np.testing.assert_array_equal(got[k], v.astype(np.float32), err_msg=k)


def test_sharded_checkpoint_equals_single_file(tiny_checkpoint, mix_f32, tmp_path):
    src = tiny_checkpoint("mix", max_shard_size="100KB")
    assert (src / "model.safetensors.index.json").is_file()
    assert len(list(src.glob("*.safetensors"))) > 3
    got = gguf_tensors(convert_checkpoint(src, tmp_path / "m.gguf", "f32"))
    ref = gguf_tensors(mix_f32)
    assert got.keys() == ref.keys()
    for k in ref:
        np.testing.assert_array_equal(got[k], ref[k], err_msg=k)


def test_model_prefix_and_tied_embeddings(mix_dir, tmp_path):
    def edit(t):
        t.pop("lm_head.weight")
        return {k.replace("backbone.", "model.", 1): v for k, v in t.items()}

    src = rewrite(mix_dir, tmp_path / "ckpt", edit)
    cfg = json.loads((src / "config.json").read_text())
    (src / "config.json").write_text(json.dumps(cfg | {"tie_word_embeddings": True}))
    plan = plan_conversion(src, "q4_k_m")
    types = {t.spec.name: t.type for t in plan.tensors}
    assert "output.weight" not in types
    # a tied token_embd takes the output's rule: ne0 = 64 is not a multiple of 256 -> Q8_0
    assert types["token_embd.weight"] == T.Q8_0
    got = gguf_tensors(convert_checkpoint(src, tmp_path / "m.gguf", "f32"))
    assert "output.weight" not in got and "blk.0.ssm_in.weight" in got


# ---------------------------------------------------------------------------------------------
# output types and llama.cpp's preset rules


def _types(hf_dir, outtype) -> dict[str, T]:
    return {t.spec.name: t.type for t in plan_conversion(hf_dir, outtype).tensors}


def _matrix(name: str) -> bool:
    return name.endswith(("ssm_in.weight", "ssm_out.weight", "attn_q.weight", "attn_k.weight",
                          "attn_v.weight", "attn_output.weight", "ffn_up.weight",
                          "ffn_down.weight", "token_embd.weight", "output.weight"))


@pytest.mark.parametrize("outtype, narrow, wide", [
    ("f32", T.F32, T.F32), ("f16", T.F16, T.F16), ("bf16", T.BF16, T.BF16),
    ("q8_0", T.Q8_0, T.Q8_0), ("q4_0", T.Q4_0, T.Q4_0), ("q5_0", T.Q5_0, T.Q5_0),
    ("q4_k", T.Q5_0, T.Q4_K), ("q5_k", T.Q5_1, T.Q5_K), ("q6_k", T.Q8_0, T.Q6_K),
])
def test_uniform_types_with_fallbacks(tiny_checkpoint, outtype, narrow, wide):
    """Plain types: every matrix the same type, K types falling back where 256 does not divide."""
    for src, want in ((tiny_checkpoint("mix"), narrow), (tiny_checkpoint("mix", **K_WIDE), wide)):
        for name, t in _types(src, outtype).items():
            assert t == (want if _matrix(name) else T.F32), (outtype, name)


def test_narrow_rows_fall_back_to_f16(tiny_checkpoint):
    """ne0 = 40 (attn_first's ssm_out row) fits no 32-block type: llama.cpp writes F16."""
    src = tiny_checkpoint("attn_first", mamba_head_dim=10)
    for outtype in ("q4_0", "q8_0", "q4_k", "q4_k_m"):
        assert _types(src, outtype)["blk.1.ssm_out.weight"] == T.F16, outtype


def test_use_more_bits_matches_llama_cpp_for_9b_v2():
    # 25 ffn_down tensors counted against n_layer = 56; 4 attn_v counted against 4.
    assert [i for i in range(25) if use_more_bits(i, 56)] == [0, 1, 2, 3, 4, 5, 6, 9, 12, 15,
                                                              18, 21, 24]
    assert [i for i in range(4) if use_more_bits(i, 4)] == [2, 3]


@pytest.mark.parametrize("outtype, base", [("q4_k_m", T.Q4_K), ("q5_k_m", T.Q5_K)])
def test_k_m_mixture_rules(tiny_checkpoint, outtype, base):
    pattern = "M-*-" * 4  # 16 layers: 8 MLP (ffn_down i = 0..7 of n_layer 16), 4 attention
    src = tiny_checkpoint("mix", hybrid_override_pattern=pattern, **K_WIDE)
    types = _types(src, outtype)
    assert types["output.weight"] == T.Q6_K
    assert types["token_embd.weight"] == base
    downs = [types[f"blk.{i}.ffn_down.weight"] for i in range(16) if pattern[i] == "-"]
    assert downs == [T.Q6_K if use_more_bits(i, 16) else base for i in range(8)]
    assert [i for i in range(8) if use_more_bits(i, 16)] == [0, 1, 4, 7]
    vs = [types[f"blk.{i}.attn_v.weight"] for i in range(16) if pattern[i] == "*"]
    assert vs == [base, base, T.Q6_K, T.Q6_K]
    assert types["blk.0.ssm_in.weight"] == types["blk.2.attn_q.weight"] == base
    assert types["blk.0.ssm_conv1d.weight"] == types["blk.0.ssm_a"] == T.F32


@pytest.mark.parametrize("outtype", list(OUTTYPES))
def test_file_type_matches_llama_ftype(mix_dir, outtype):
    kvs = {kv.key: kv.value for kv in plan_conversion(mix_dir, outtype).kvs}
    assert kvs["general.file_type"] == int(OUTTYPES[outtype].ftype)


def test_quantized_bytes_match_gguf_quants(mix_dir, tmp_path):
    """Q8_0/Q4_0/Q5_0/BF16 (and Q5_1, q5_k's fallback on 64-wide rows) data is exactly
    gguf.quants' encoding of the f32 weights."""
    ref = gguf_tensors(convert_checkpoint(mix_dir, tmp_path / "f32.gguf", "f32"))
    for outtype in ("q8_0", "q4_0", "q5_0", "bf16", "q5_k"):
        r = gguf.GGUFReader(convert_checkpoint(mix_dir, tmp_path / f"{outtype}.gguf", outtype))
        for t in r.tensors:
            want = gguf.quants.quantize(ref[t.name], t.tensor_type)
            assert np.array_equal(np.asarray(t.data).view(np.uint8).ravel(),
                                  want.view(np.uint8).ravel()), (outtype, t.name)


# ---------------------------------------------------------------------------------------------
# dry run, errors, atomicity


def test_dry_run_lists_every_tensor_and_writes_nothing(mix_dir, tmp_path, capsys):
    out = tmp_path / "m.gguf"
    assert convert_checkpoint(mix_dir, out, "q4_k_m", dry_run=True) == out
    text = capsys.readouterr().out
    assert not out.exists() and list(tmp_path.iterdir()) == []
    plan = plan_conversion(mix_dir, "q4_k_m")
    lines = text.strip().splitlines()
    assert len(lines) == len(plan.tensors) + 2
    for t, line in zip(plan.tensors, lines[1:-1], strict=True):
        assert line.split()[:2] == [t.spec.name, t.type.name]
        assert "{" + ", ".join(map(str, t.spec.ne)) + "}" in line
    assert "44 tensors" in lines[-1] and "dry run" in lines[-1]


def test_existing_output_refused_unless_force(mix_dir, tmp_path):
    out = tmp_path / "m.gguf"
    out.write_bytes(b"keep me")
    with pytest.raises(ConversionError, match="exists; use --force"):
        convert_checkpoint(mix_dir, out)
    assert out.read_bytes() == b"keep me"
    convert_checkpoint(mix_dir, out, force=True)
    assert out.read_bytes()[:4] == b"GGUF"


def test_interrupted_conversion_leaves_nothing(mix_dir, tmp_path, monkeypatch):
    calls = []
    real = writer.quantize_rows

    def failing(x, qtype):
        calls.append(qtype)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(x, qtype)

    monkeypatch.setattr(writer, "quantize_rows", failing)
    out = tmp_path / "m.gguf"
    with pytest.raises(KeyboardInterrupt):
        convert_checkpoint(mix_dir, out, "q8_0")
    assert len(calls) == 3
    assert list(tmp_path.iterdir()) == []


def test_interrupted_overwrite_keeps_old_file(mix_dir, tmp_path, monkeypatch):
    out = tmp_path / "m.gguf"
    out.write_bytes(b"old")
    monkeypatch.setattr(writer, "quantize_rows", lambda x, q: 1 / 0)
    with pytest.raises(ZeroDivisionError):
        convert_checkpoint(mix_dir, out, force=True)
    assert out.read_bytes() == b"old" and list(tmp_path.iterdir()) == [out]


def test_missing_config(tmp_path):
    with pytest.raises(ConversionError, match="config.json not found"):
        convert_checkpoint(tmp_path, tmp_path / "m.gguf")


def test_missing_weights(mix_dir, tmp_path):
    src = tmp_path / "ckpt"
    shutil.copytree(mix_dir, src)
    (src / "model.safetensors").unlink()
    with pytest.raises(ConversionError, match="no model.safetensors or"):
        convert_checkpoint(src, tmp_path / "m.gguf")


def test_missing_tokenizer(mix_dir, tmp_path):
    src = tmp_path / "ckpt"
    shutil.copytree(mix_dir, src)
    (src / "tokenizer.json").unlink()
    with pytest.raises(ConversionError, match="tokenizer.json not found"):
        convert_checkpoint(src, tmp_path / "m.gguf")


def test_missing_tensor(mix_dir, tmp_path):
    gone = "backbone.layers.3.mixer.v_proj.weight"
    src = rewrite(mix_dir, tmp_path / "ckpt", lambda t: {k: v for k, v in t.items() if k != gone})
    with pytest.raises(ConversionError, match=r"lacks tensor layers\.3\.mixer\.v_proj\.weight "
                                              r"\(layer 3, attention\)"):
        convert_checkpoint(src, tmp_path / "m.gguf")


def test_wrong_shape(mix_dir, tmp_path):
    def edit(t):
        t["backbone.layers.1.mixer.up_proj.weight"] = np.zeros((95, 64), np.float32)
        return t

    src = rewrite(mix_dir, tmp_path / "ckpt", edit)
    with pytest.raises(ConversionError, match=r"up_proj\.weight \(layer 1, mlp\) has shape "
                                              r"\[95, 64\], expected \[96, 64\]"):
        convert_checkpoint(src, tmp_path / "m.gguf")


def test_unexplained_tensor(mix_dir, tmp_path):
    src = rewrite(mix_dir, tmp_path / "ckpt",
                  lambda t: t | {"backbone.layers.1.mixer.up_proj.bias": np.zeros(96, np.float32)})
    with pytest.raises(ConversionError, match="does not explain"):
        convert_checkpoint(src, tmp_path / "m.gguf")


def test_unsupported_dtype(mix_dir, tmp_path):
    src = rewrite(mix_dir, tmp_path / "ckpt",
                  lambda t: t | {"backbone.norm_f.weight": t["backbone.norm_f.weight"].astype(
                      np.float64)})
    with pytest.raises(ConversionError, match="dtype F64"):
        convert_checkpoint(src, tmp_path / "m.gguf")


def test_truncated_shard(tiny_checkpoint, tmp_path):
    src = tmp_path / "ckpt"
    shutil.copytree(tiny_checkpoint("mix", max_shard_size="100KB"), src)
    shard = sorted(src.glob("*.safetensors"))[-1]
    shard.write_bytes(shard.read_bytes()[:-100])
    with pytest.raises(ConversionError, match=f"{shard.name} is truncated"):
        convert_checkpoint(src, tmp_path / "m.gguf")
    assert not (tmp_path / "m.gguf").exists()


def test_missing_shard(tiny_checkpoint, tmp_path):
    src = tmp_path / "ckpt"
    shutil.copytree(tiny_checkpoint("mix", max_shard_size="100KB"), src)
    shard = sorted(src.glob("*.safetensors"))[1]
    shard.unlink()
    with pytest.raises(ConversionError, match=f"shard {shard.name} .* is missing"):
        convert_checkpoint(src, tmp_path / "m.gguf")


def test_moe_pattern_on_dense_checkpoint_refused_by_convert(mix_dir, tmp_path):
    src = tmp_path / "ckpt"
    shutil.copytree(mix_dir, src)
    cfg = json.loads((src / "config.json").read_text())
    (src / "config.json").write_text(json.dumps(cfg | {"hybrid_override_pattern": "MEME*EM"}))
    with pytest.raises(ConversionError, match=r"lacks tensor layers\.1\.mixer\.gate\.weight"):
        convert_checkpoint(src, tmp_path / "m.gguf")


def test_unknown_pre_tokenizer_refused(mix_dir, tmp_path):
    src = tmp_path / "ckpt"
    shutil.copytree(mix_dir, src)
    tok = json.loads((src / "tokenizer.json").read_text())
    tok["pre_tokenizer"]["pretokenizers"][0]["pattern"]["Regex"] = r"\s+|\w+"
    (src / "tokenizer.json").write_text(json.dumps(tok))
    with pytest.raises(ConversionError, match="not one llama.cpp is known to implement"):
        convert_checkpoint(src, tmp_path / "m.gguf")


# ---------------------------------------------------------------------------------------------
# command line


def test_cli_converts(mix_dir, tmp_path, capsys):
    out = tmp_path / "m.gguf"
    assert main([str(mix_dir), "-o", str(out), "--outtype", "Q8_0"]) == 0
    assert gguf.GGUFReader(out).fields["general.file_type"].contents() == 7
    assert "wrote" in capsys.readouterr().out


@pytest.mark.parametrize("args, message", [
    (["{missing}", "-o", "{out}"], "is not a directory"),
    (["{src}", "-o", "{existing}"], "exists; use --force to overwrite it"),
])
def test_cli_errors_are_one_line_exit_2(mix_dir, tmp_path, capsys, args, message):
    existing = tmp_path / "e.gguf"
    existing.write_bytes(b"x")
    paths = dict(missing=tmp_path / "nope", out=tmp_path / "m.gguf", src=mix_dir,
                 existing=existing)
    assert main([a.format(**paths) for a in args]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("edgenano-convert: error: ")
    assert message in err and "Traceback" not in err


def test_cli_bad_outtype_and_help(capsys):
    with pytest.raises(SystemExit) as e:
        main(["x", "-o", "y", "--outtype", "q3_k"])
    assert e.value.code == 2
    with pytest.raises(SystemExit) as e:
        main(["--help"])
    assert e.value.code == 0
    assert "q4_k_m" in capsys.readouterr().out


def test_cli_dry_run(mix_dir, tmp_path, capsys):
    assert main([str(mix_dir), "-o", str(tmp_path / "m.gguf"), "--dry-run"]) == 0
    assert "token_embd.weight" in capsys.readouterr().out
    assert list(tmp_path.iterdir()) == []


def test_console_script_exit_code(tmp_path):
    exe = shutil.which("edgenano-convert")
    if exe is None:
        pytest.skip("edgenano-convert is not on PATH")
    r = subprocess.run([exe, str(tmp_path / "nope"), "-o", str(tmp_path / "m.gguf")],
                       capture_output=True, text=True)
    assert r.returncode == 2 and "Traceback" not in r.stderr


# ---------------------------------------------------------------------------------------------
# streaming memory


NANO_9B_V2 = dict(  # SPEC section 1
    hybrid_override_pattern="M-M-M-MM-M-M-M*-M-M-M*-M-M-M-M*-M-M-M-M*-M-MM-M-M-M-M-M-",
    hidden_size=4480, intermediate_size=15680, num_attention_heads=40, num_key_value_heads=8,
    head_dim=128, mamba_num_heads=128, mamba_head_dim=80, n_groups=8, ssm_state_size=128,
    conv_kernel=4, chunk_size=128, max_position_embeddings=131072)


def write_raw_checkpoint(d: Path, fields: dict, vocab_size: int, *, dtype: str = "F32",
                         sparse: bool = False, seed: int = 0) -> int:
    """A checkpoint written straight from the name table, tensor by tensor (never whole in
    memory); `sparse` leaves the data a hole (headers-only work). Returns the data bytes."""
    from devtools import tiny
    from edgenano.convert.tensors import expected_rows, hf_name
    from edgenano.layers import TOP_LEVEL_HF

    raw = tiny.make_config(fields, vocab_size=vocab_size) | fields
    d.mkdir(parents=True)
    (d / "config.json").write_text(json.dumps(raw))
    tiny.save_tokenizer(tiny.build_tokenizer(vocab_size=min(vocab_size, 1024)), d)
    c = parse_config(raw)
    rows = expected_rows(c, has_output=True)
    rows = [r for r in rows if r[0] < 0] + [r for r in rows if r[0] >= 0]  # globals first
    names = [(("" if t.hf in TOP_LEVEL_HF else "backbone.") + hf_name(i, t),
              t.hf_shape_of(c.dims())) for i, t in rows]
    width = {"F32": 4, "BF16": 2}[dtype]
    header, offset = {}, 0
    for name, shape in names:
        n = width * math.prod(shape)
        header[name] = {"dtype": dtype, "shape": list(shape), "data_offsets": [offset, offset + n]}
        offset += n
    blob = json.dumps(header).encode()
    rng = np.random.default_rng(seed)
    with open(d / "model.safetensors", "wb") as f:
        f.write(len(blob).to_bytes(8, "little") + blob)
        if sparse:
            f.truncate(8 + len(blob) + offset)
            return offset
        for name, shape in names:
            a = rng.standard_normal(shape, dtype=np.float32) * 0.05
            f.write((np.abs(a) if name.endswith("A_log") else a).tobytes())
    return offset


def write_big_checkpoint(d: Path, n_pairs: int, hidden: int) -> int:
    """n_pairs of (Mamba, MLP) layers at `hidden` width, f32, vocabulary 1024."""
    fields = dict(hybrid_override_pattern="M-" * n_pairs, hidden_size=hidden,
                  intermediate_size=4 * hidden, num_attention_heads=8, num_key_value_heads=2,
                  head_dim=hidden // 8, mamba_num_heads=hidden // 32, mamba_head_dim=64,
                  n_groups=1, ssm_state_size=64, conv_kernel=4, chunk_size=64)
    return write_raw_checkpoint(d, fields, 1024)


def test_nano_9b_v2_shapes_plan(tmp_path):
    """9B-v2's real shapes (a sparse 17.8 GB bf16 file: headers only): SPEC 3's ggml shapes and
    llama.cpp's q4_k_m choices, where 4480- and 15680-wide rows force the fallbacks."""
    src = tmp_path / "nano9b"
    size = write_raw_checkpoint(src, NANO_9B_V2, 131072, dtype="BF16", sparse=True)
    assert size == 2 * 8_888_227_328  # 8.89 B parameters
    plan = plan_conversion(src, "q4_k_m")
    ne = {t.spec.name: t.spec.ne for t in plan.tensors}
    assert ne["token_embd.weight"] == ne["output.weight"] == (4480, 131072)
    assert ne["blk.0.ssm_in.weight"] == (4480, 22656)
    assert ne["blk.0.ssm_conv1d.weight"] == (4, 12288)
    assert ne["blk.0.ssm_a"] == ne["blk.0.ssm_d"] == (1, 128)
    assert ne["blk.0.ssm_norm.weight"] == (1280, 8)
    assert ne["blk.0.ssm_out.weight"] == (10240, 4480)
    assert ne["blk.14.attn_q.weight"] == (4480, 5120) and ne["blk.14.attn_k.weight"] == (4480, 1024)
    assert ne["blk.1.ffn_down.weight"] == (15680, 4480)
    types = {t.spec.name: t.type for t in plan.tensors}
    assert types["output.weight"] == T.Q8_0  # 4480 % 256 != 0: llama.cpp's Q8_0, not Q6_K
    assert types["token_embd.weight"] == types["blk.0.ssm_in.weight"] == T.Q5_0  # Q4_K fallback
    assert types["blk.0.ssm_out.weight"] == types["blk.14.attn_output.weight"] == T.Q4_K
    assert [types[f"blk.{i}.attn_v.weight"] for i in (14, 21, 30, 39)] == [T.Q5_0, T.Q5_0,
                                                                           T.Q8_0, T.Q8_0]
    mlp = [i for i, k in enumerate(NANO_9B_V2["hybrid_override_pattern"]) if k == "-"]
    downs = [types[f"blk.{i}.ffn_down.weight"] for i in mlp]
    assert downs == [T.Q8_0 if use_more_bits(j, 56) else T.Q5_0 for j in range(25)]
    kv = {k.key: k.value for k in plan.kvs}
    assert kv["nemotron_h.attention.head_count_kv"].count(8) == 4
    assert kv["nemotron_h.feed_forward_length"].count(15680) == 25
    assert (kv["nemotron_h.ssm.inner_size"], kv["nemotron_h.ssm.time_step_rank"]) == (10240, 128)
    assert len(kv["tokenizer.ggml.tokens"]) == 131072
    print(f"9B-v2 q4_k_m: {plan.nbytes / 2**30:.2f} GiB of tensor data")


def _peak_rss_child(src: Path, out: Path, outtype: str) -> dict:
    """Convert in a fresh process; its peak RSS after imports and after converting (bytes).

    VmHWM, not ru_maxrss: Linux carries ru_maxrss across exec, so a child of this (large) test
    process would start with pytest's peak; VmHWM belongs to the new address space."""
    child = textwrap.dedent(f"""
        import json, time
        from edgenano.convert import convert_checkpoint

        def hwm():
            for line in open("/proc/self/status"):
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024

        base = hwm()
        t = time.perf_counter()
        convert_checkpoint({str(src)!r}, {str(out)!r}, {outtype!r}, force=True)
        print(json.dumps(dict(base=base, peak=hwm(), seconds=time.perf_counter() - t)))
    """)
    r = subprocess.run([sys.executable, "-c", child], capture_output=True, text=True, check=True)
    return json.loads(r.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def big_checkpoint(tmp_path_factory):
    """A 365 MB f32 checkpoint (12 layers of 16-17 MB matrices), deleted after the module."""
    src = tmp_path_factory.mktemp("big") / "ckpt"
    write_big_checkpoint(src, n_pairs=6, hidden=1024)
    yield src
    shutil.rmtree(src.parent)


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs Linux /proc")
@pytest.mark.parametrize("outtype", ["q8_0", pytest.param("f32", marks=pytest.mark.slow),
                                     pytest.param("q4_k_m", marks=pytest.mark.slow)])
def test_streaming_memory_stays_flat(big_checkpoint, outtype):
    if outtype == "q4_k_m":
        pytest.importorskip("edgenano.convert.quants")
    size = (big_checkpoint / "model.safetensors").stat().st_size
    assert size > 300e6
    out = big_checkpoint.parent / f"{outtype}.gguf"
    m = _peak_rss_child(big_checkpoint, out, outtype)
    out.unlink()
    growth = m["peak"] - m["base"]
    print(f"{outtype}: checkpoint {size / 1e6:.0f} MB, peak RSS growth {growth / 1e6:.1f} MB, "
          f"{m['seconds']:.1f} s")
    assert growth < MAX_CONVERT_RSS_GROWTH_FRACTION * size
