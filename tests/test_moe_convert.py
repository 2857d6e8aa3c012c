"""Mixture-of-experts checkpoints (SPEC section 1.4) through our converter: the nemotron_h_moe
layout llama.cpp's loader reads (names, stacked experts, keys and types), streaming, and
llama.cpp 0.3.36's logits on every output type against transformers."""

from __future__ import annotations

import ctypes
import json
import shutil
import sys
from pathlib import Path

import gguf
import numpy as np
import pytest
from gguf import GGMLQuantizationType as T
from gguf import GGUFValueType as V

from devtools.tiny import MOE_CONFIGS, make_config
from edgenano.convert import ConversionError, convert_checkpoint, plan_conversion, writer
from edgenano.convert.config import parse_config
from edgenano.convert.presets import OUTTYPES
from edgenano.gguf_model import load_gguf

sys.path.insert(0, str(Path(__file__).resolve().parent))  # tests/ is no package (importlib mode)
from conftest import llama_logits as conftest_llama_logits  # noqa: E402
from conftest import nmse  # noqa: E402
from tolerances import NMSE_MOE_LLAMACPP_VS_HF, NMSE_MOE_LLAMACPP_VS_HF_DEQUANTIZED  # noqa: E402

# Every row a multiple of 256 (K-quants proper) and 12 layers, so the _M mixtures choose by layer.
K_WIDE = dict(hybrid_override_pattern="ME*E" * 3, hidden_size=256, num_attention_heads=4,
              num_key_value_heads=2, head_dim=64, mamba_num_heads=8, mamba_head_dim=32,
              n_groups=2, ssm_state_size=16, n_routed_experts=4, num_experts_per_tok=2,
              moe_intermediate_size=256, moe_shared_expert_intermediate_size=512)
CONFIGS = {name: (name, {}) for name in MOE_CONFIGS} | {"moe_kwide": ("moe", K_WIDE)}
# Exactly 8 experts, where llama.cpp's quantizer has Mixtral's rules (attn_k, attn_v, attn_output).
EIGHT = {"moe8": ("moe", dict(n_routed_experts=8)),
         "moe8_kwide": ("moe", K_WIDE | dict(n_routed_experts=8)),
         "moe8_latent_mtp": ("moe_latent", dict(n_routed_experts=8, num_experts_per_tok=2))}
PROMPT = np.random.default_rng(0).integers(16, 512, size=37).tolist()
# llama_model_quantize's file types (pure, or with its mixture rules) for each of our outtypes.
LLAMA_FTYPES = {name: (int(o.ftype), not o.mixture) for name, o in OUTTYPES.items()}

# Keys llama.cpp's nemotron_h_moe loader reads beyond nemotron_h's, with their GGUF types
# (gguf-py's GGUFWriter.add_expert_* as vendored in llama-cpp-python 0.3.36).
MOE_KEYS = {
    "expert_count": V.UINT32, "expert_used_count": V.UINT32, "expert_shared_count": V.UINT32,
    "expert_feed_forward_length": V.UINT32, "expert_shared_feed_forward_length": V.UINT32,
    "expert_group_count": V.UINT32, "expert_weights_norm": V.BOOL,
    "expert_weights_scale": V.FLOAT32,
}


@pytest.fixture(scope="module")
def ckpt(tiny_checkpoint):
    def get(name: str) -> Path:
        base, overrides = CONFIGS[name]
        return tiny_checkpoint(base, **overrides)
    return get


# ---------------------------------------------------------------------------------------------
# Config


def test_moe_config_read():
    c = parse_config(make_config("moe_latent"))
    assert c.is_moe and c.layer_kinds == ("mamba", "moe", "mamba", "attention", "moe")
    assert (c.n_expert, c.n_expert_used, c.n_ff_exp, c.n_ff_shexp, c.moe_latent) == (10, 3, 40,
                                                                                    64, 32)
    assert c.expert_weights_norm and c.expert_weights_scale == 2.0
    d = c.dims(1)
    assert (d.n_ff, d.moe_n_embd) == (40, 32) and c.dims(0).n_ff == c.n_ff


def test_dense_config_with_moe_defaults_stays_nemotron_h(tmp_path, tiny_checkpoint):
    """transformers' config object carries MoE keys for every model: the kind comes from the
    layer list only (llama.cpp's converter gets this wrong, SPEC section 1.4)."""
    from transformers import NemotronHConfig

    src = tmp_path / "dense"
    shutil.copytree(tiny_checkpoint("mix"), src)
    full = NemotronHConfig(**json.loads((src / "config.json").read_text())).to_dict()
    assert "num_experts_per_tok" in full and "n_routed_experts" in full
    (src / "config.json").write_text(json.dumps(full, default=str))
    m = load_gguf(convert_checkpoint(src, tmp_path / "d.gguf"))
    assert m.metadata["general.architecture"] == "nemotron_h"
    assert not any("expert" in k for k in m.metadata)
    assert m.config.layer_kinds.count("mlp") == 3


@pytest.mark.parametrize("fields, match", [
    (dict(n_group=2, topk_group=1), "group-limited routing"),
    (dict(num_experts_per_tok=7), "num_experts_per_tok 7"),
    (dict(hybrid_override_pattern="ME-E*E"), "dense MLP in a mixture-of-experts model"),
])
def test_unrepresentable_moe_refused(fields, match):
    with pytest.raises(ConversionError, match=match):
        parse_config(make_config("moe", **fields))


def test_mtp_layers_only_with_experts():
    with pytest.raises(ConversionError, match="MTP layers come only with mixture-of-experts"):
        parse_config(make_config("mix", num_nextn_predict_layers=1))


# ---------------------------------------------------------------------------------------------
# Layout and values


@pytest.mark.parametrize("name", ["moe", "moe_latent"])
def test_layout_and_values(ckpt, tmp_path, name):
    from safetensors.numpy import load_file

    hf_dir = ckpt(name)
    c = parse_config(json.loads((hf_dir / "config.json").read_text()))
    path = convert_checkpoint(hf_dir, tmp_path / "m.gguf")
    r = gguf.GGUFReader(path)
    a = "nemotron_h_moe"
    assert r.fields["general.architecture"].contents() == a
    for key, vt in MOE_KEYS.items():
        assert r.fields[f"{a}.{key}"].types == [vt], key
    assert r.fields[f"{a}.expert_count"].contents() == c.n_expert
    assert r.fields[f"{a}.expert_used_count"].contents() == c.n_expert_used
    assert r.fields[f"{a}.expert_weights_scale"].contents() == pytest.approx(
        c.expert_weights_scale)
    assert (f"{a}.moe_latent_size" in r.fields) == bool(c.moe_latent)
    ff = r.fields[f"{a}.feed_forward_length"].contents()
    assert ff == [c.n_ff_exp if k == "moe" else 0 for k in c.layer_kinds]
    hf = {}
    for f in hf_dir.glob("*.safetensors"):
        hf.update(load_file(f))
    got = {t.name: np.asarray(t.data) for t in r.tensors}
    types = {t.name: t.tensor_type for t in r.tensors}
    i = c.layer_kinds.index("moe")
    p, q = f"blk.{i}.", f"backbone.layers.{i}.mixer."
    E, n, F, Lm = c.n_embd, c.n_expert, c.n_ff_exp, c.moe_latent or c.n_embd
    # numpy shapes are ggml's ne reversed: ffn_up_exps ne {Lm, F, n}, ffn_down_exps ne {F, Lm, n}
    assert got[p + "ffn_up_exps.weight"].shape == (n, F, Lm)
    assert got[p + "ffn_down_exps.weight"].shape == (n, Lm, F)
    for x in range(n):
        np.testing.assert_array_equal(got[p + "ffn_up_exps.weight"][x],
                                      hf[q + f"experts.{x}.up_proj.weight"])
        np.testing.assert_array_equal(got[p + "ffn_down_exps.weight"][x],
                                      hf[q + f"experts.{x}.down_proj.weight"])
    pairs = {"ffn_gate_inp.weight": "gate.weight",
             "exp_probs_b.bias": "gate.e_score_correction_bias",
             "ffn_up_shexp.weight": "shared_experts.up_proj.weight",
             "ffn_down_shexp.weight": "shared_experts.down_proj.weight"}
    if c.moe_latent:
        pairs |= {"ffn_latent_down.weight": "fc1_latent_proj.weight",
                  "ffn_latent_up.weight": "fc2_latent_proj.weight"}
    for g, h in pairs.items():
        np.testing.assert_array_equal(got[p + g], hf[q + h])
    assert np.abs(got[p + "exp_probs_b.bias"]).max() > 0  # the tiny model's bias is not zero
    assert got[p + "ffn_gate_inp.weight"].shape == (n, E)
    q8 = {t.spec.name: t.type for t in plan_conversion(hf_dir, "q8_0").tensors}
    assert q8[p + "ffn_gate_inp.weight"] == T.F32 and q8[p + "exp_probs_b.bias"] == T.F32
    assert q8[p + "ffn_up_exps.weight"] == q8[p + "ffn_up_shexp.weight"] == T.Q8_0
    assert types[p + "ffn_gate_inp.weight"] == T.F32


def test_experts_stream_one_at_a_time(ckpt, tmp_path, monkeypatch):
    """Stacking reads each expert's rows as they are written: no read spans two experts, so the
    peak is one chunk however many experts a layer has."""
    from edgenano.convert.safetensors_io import Checkpoint

    reads = []
    orig = Checkpoint.read_rows

    def spy(self, name, start, stop):
        reads.append((name, stop - start))
        return orig(self, name, start, stop)

    monkeypatch.setattr(Checkpoint, "read_rows", spy)
    monkeypatch.setattr(writer, "CHUNK_BYTES", 16 * 64 * 4)  # 16 rows of 64 floats a chunk
    convert_checkpoint(ckpt("moe"), tmp_path / "m.gguf", "q8_0")
    ups = [(nm, k) for nm, k in reads if "layers.1.mixer.experts." in nm and "up_proj" in nm]
    assert [nm for nm, _ in ups][::3] == [f"backbone.layers.1.mixer.experts.{x}.up_proj.weight"
                                         for x in range(6)]
    assert max(k for _, k in ups) == 16


def test_mtp_tensors_dropped(ckpt, tmp_path):
    """With --no-mtp the MTP layers (Super's draft head) are dropped, whatever they hold, as
    llama.cpp's converter does (tests/test_moe_mtp.py: kept and alone)."""
    from safetensors.numpy import save_file

    src = tmp_path / "ckpt"
    shutil.copytree(ckpt("moe"), src)
    cfg = json.loads((src / "config.json").read_text()) | {"num_nextn_predict_layers": 1}
    (src / "config.json").write_text(json.dumps(cfg))
    save_file({"mtp.layers.0.eh_proj.weight": np.ones((64, 128), np.float32)},
              src / "mtp.safetensors")
    idx = src / "model.safetensors.index.json"
    if idx.exists():
        j = json.loads(idx.read_text())
        j["weight_map"]["mtp.layers.0.eh_proj.weight"] = "mtp.safetensors"
        idx.write_text(json.dumps(j))
    m = load_gguf(convert_checkpoint(src, tmp_path / "m.gguf", mtp="drop"))
    assert not any("mtp" in n or "eh_proj" in n for n in m.tensors)
    assert m.config.n_layer == 6


# ---------------------------------------------------------------------------------------------
# Expert layouts: one 2-D tensor per expert (save_pretrained, the published checkpoints) or one
# 3-D tensor per projection (transformers' in-memory parameters, a state-dict dump)


@pytest.fixture(scope="module")
def stacked(ckpt, tmp_path_factory):
    from devtools.tiny import add_mtp, stack_experts

    def get(name: str, suffix: str = "", mtp: bool = False) -> Path:
        src = ckpt(name)
        if mtp:
            src = add_mtp(shutil.copytree(src, tmp_path_factory.mktemp("mtp") / "ckpt"))
        # the same directory name, so general.name (from it) is the same too
        return stack_experts(src, tmp_path_factory.mktemp("stacked") / src.name, suffix), src
    return get


def test_save_pretrained_writes_one_tensor_per_expert(ckpt):
    """What transformers 5.23 writes for a tiny MoE: 2-D per-expert tensors, no 3-D ones."""
    from safetensors import safe_open

    with safe_open(ckpt("moe") / "model.safetensors", "np") as f:
        names = list(f.keys())
        shapes = {n: f.get_slice(n).get_shape() for n in names}
    assert "backbone.layers.1.mixer.experts.5.up_proj.weight" in names
    assert not any(n.endswith(("experts.up_proj", "experts.down_proj")) for n in names)
    assert all(len(shapes[n]) == 2 for n in names if ".experts." in n)


def test_transformers_loads_stacked_layout_alike(stacked):
    """The stacked layout is transformers' own: it loads it into the same model."""
    import torch

    from devtools import tiny

    dst, src = stacked("moe_latent")
    with torch.no_grad():
        x = torch.tensor([PROMPT])
        a = tiny.load_hf(src)[0](x).logits
        b = tiny.load_hf(dst)[0](x).logits
    assert torch.equal(a, b)


@pytest.mark.parametrize("name, suffix, mtp, outtype", [
    ("moe", "", False, "f32"), ("moe", "", False, "q4_k_m"), ("moe_latent", "", True, "q8_0"),
    ("moe_attn_first", ".weight", False, "bf16"), ("moe_kwide", "", False, "q5_k_m"),
])
def test_stacked_experts_convert_bit_identical(stacked, tmp_path, name, suffix, mtp, outtype):
    dst, src = stacked(name, suffix, mtp)
    a = convert_checkpoint(src, tmp_path / "per_expert.gguf", outtype)
    b = convert_checkpoint(dst, tmp_path / "stacked.gguf", outtype)
    assert a.read_bytes() == b.read_bytes()
    assert mtp == any(n.startswith("mtp.") for n in writer.Checkpoint(dst).names())


def test_stacked_experts_stream_one_expert_at_a_time(stacked, tmp_path, monkeypatch):
    """A 3-D expert tensor is read in chunks of rows that never span two experts, in expert
    order: the peak is one chunk, as with per-expert tensors."""
    from edgenano.convert.safetensors_io import Checkpoint

    reads = []
    orig = Checkpoint.read_rows

    def spy(self, name, start, stop):
        reads.append((name, start, stop))
        return orig(self, name, start, stop)

    monkeypatch.setattr(Checkpoint, "read_rows", spy)
    monkeypatch.setattr(writer, "CHUNK_BYTES", 16 * 64 * 4)  # 16 rows of 64 floats a chunk
    dst, _ = stacked("moe")
    convert_checkpoint(dst, tmp_path / "m.gguf", "q8_0")
    ups = [(a, b) for n, a, b in reads if n == "backbone.layers.1.mixer.experts.up_proj"]
    F = 48  # moe_intermediate_size: rows per expert
    assert ups[0] == (0, 16) and ups[-1] == (6 * F - 16, 6 * F)
    assert all(b - a <= 16 and a // F == (b - 1) // F for a, b in ups)
    assert [a for a, _ in ups] == sorted(a for a, _ in ups)


def test_stacked_experts_of_wrong_shape_refused(stacked, tmp_path):
    from safetensors.numpy import load_file, save_file

    dst, _ = stacked("moe")
    t = load_file(dst / "model.safetensors")
    name = "backbone.layers.1.mixer.experts.up_proj"
    t[name] = t[name][:5]
    save_file(t, dst / "model.safetensors")
    with pytest.raises(ConversionError, match=r"experts.up_proj \(layer 1, moe\) has shape"):
        plan_conversion(dst)


def write_big_moe_checkpoint(d: Path, layout: str) -> int:
    """An f32 checkpoint whose one expert layer holds 32 experts of 8 MB (256 MB), written tensor
    by tensor from the layer table, its experts `per_expert` or `stacked`; returns data bytes."""
    from devtools import tiny
    from edgenano.convert.tensors import expected_rows, hf_name
    from edgenano.layers import TOP_LEVEL_HF

    fields = dict(hybrid_override_pattern="ME", hidden_size=1024, num_attention_heads=8,
                  num_key_value_heads=2, head_dim=128, mamba_num_heads=32, mamba_head_dim=64,
                  n_groups=1, ssm_state_size=64, conv_kernel=4, chunk_size=64,
                  n_routed_experts=32, num_experts_per_tok=4, moe_intermediate_size=1024,
                  moe_shared_expert_intermediate_size=1024, n_shared_experts=1)
    raw = tiny.make_config(fields, vocab_size=1024)
    d.mkdir(parents=True)
    (d / "config.json").write_text(json.dumps(raw))
    tiny.save_tokenizer(tiny.build_tokenizer(vocab_size=1024), d)
    c = parse_config(raw)
    names = []
    for i, t in expected_rows(c, has_output=True):
        dims = c.dims(max(i, 0))
        base = ("" if t.hf in TOP_LEVEL_HF else "backbone.") + hf_name(i, t)
        if t.experts and layout == "stacked":
            names.append((base.replace("{x}.", "").removesuffix(".weight"), t.shape(dims)))
        elif t.experts:
            names += [(base.replace("{x}", str(x)), t.hf_shape_of(dims))
                      for x in range(dims.n_expert)]
        else:
            names.append((base, t.hf_shape_of(dims)))
    header, offset = {}, 0
    for name, shape in names:
        n = 4 * int(np.prod(shape))
        header[name] = {"dtype": "F32", "shape": list(shape), "data_offsets": [offset, offset + n]}
        offset += n
    blob = json.dumps(header).encode()
    rng = np.random.default_rng(0)
    with open(d / "model.safetensors", "wb") as f:
        f.write(len(blob).to_bytes(8, "little") + blob)
        for _, shape in names:
            f.write(rng.standard_normal(shape, dtype=np.float32).tobytes())
    return offset


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs Linux /proc")
@pytest.mark.parametrize("layout", ["per_expert", "stacked"])
def test_expert_streaming_memory_stays_flat(tmp_path, layout):
    """Peak RSS grows by a small part of one layer's experts (here nearly the whole checkpoint),
    whichever layout they come in."""
    from test_convert import _peak_rss_child
    from tolerances import MAX_CONVERT_RSS_GROWTH_FRACTION

    size = write_big_moe_checkpoint(tmp_path / "ckpt", layout)
    assert size > 280e6
    m = _peak_rss_child(tmp_path / "ckpt", tmp_path / "out.gguf", "q8_0")
    growth = m["peak"] - m["base"]
    print(f"{layout}: checkpoint {size / 1e6:.0f} MB (experts 268 MB), peak RSS growth "
          f"{growth / 1e6:.1f} MB, {m['seconds']:.1f} s")
    assert growth < MAX_CONVERT_RSS_GROWTH_FRACTION * size


# ---------------------------------------------------------------------------------------------
# llama.cpp loads every type and agrees with transformers


class Case:
    def __init__(self, hf_dir: Path, out_dir: Path):
        from devtools import tiny

        self.hf_dir, self.out_dir = hf_dir, out_dir
        self.model, _ = tiny.load_hf(hf_dir)
        self.ref = self.hf_logits()
        self.files: dict[str, Path] = {}

    def hf_logits(self) -> np.ndarray:
        import torch

        with torch.no_grad():
            return self.model(torch.tensor([PROMPT])).logits[0].double().numpy()

    def gguf(self, outtype: str) -> Path:
        if outtype not in self.files:
            self.files[outtype] = convert_checkpoint(self.hf_dir, self.out_dir / f"{outtype}.gguf",
                                                     outtype)
        return self.files[outtype]

    def dequantized_logits(self, path: Path) -> np.ndarray:
        """transformers with every quantized tensor replaced by the file's dequantized values
        (stacked experts map onto transformers' own 3-D expert parameters)."""
        import torch

        state = self.model.state_dict()
        saved = {k: v.clone() for k, v in state.items()}
        try:
            for t in gguf.GGUFReader(path).tensors:
                if t.tensor_type in (T.F32,) or not t.name.startswith(("blk.", "token", "output")):
                    continue
                key = _hf_key(t.name)
                state[key].copy_(torch.from_numpy(
                    gguf.quants.dequantize(t.data, t.tensor_type).reshape(state[key].shape)))
            return self.hf_logits()
        finally:
            self.model.load_state_dict(saved)


def _hf_key(name: str) -> str:
    """transformers' state-dict key of a GGUF tensor (its in-memory names: model.*, experts
    stacked)."""
    from edgenano.layers import EMBEDDING, KINDS, OUTPUT

    if name == EMBEDDING.gguf:
        return "model." + EMBEDDING.hf
    if name == OUTPUT.gguf:
        return OUTPUT.hf
    _, i, rest = name.split(".", 2)
    t = next(t for k in KINDS.values() for t in k.tensors if t.gguf == rest)
    hf = t.hf.replace(".{x}", "").removesuffix(".weight") if t.experts else t.hf
    return f"model.layers.{i}.{hf}"


@pytest.fixture(scope="module")
def case(ckpt, tmp_path_factory):
    cache: dict[str, Case] = {}

    def get(name: str) -> Case:
        if name not in cache:
            cache[name] = Case(ckpt(name), tmp_path_factory.mktemp(name))
        return cache[name]
    return get


def llama_logits(path: Path) -> np.ndarray:
    return conftest_llama_logits(path, PROMPT)


def check_type(c: Case, outtype: str) -> None:
    path = c.gguf(outtype)
    got = llama_logits(path)
    vs_hf = nmse(got, c.ref)
    vs_deq = nmse(got, c.dequantized_logits(path)) if outtype != "f32" else vs_hf
    print(f"{outtype:7s} NMSE vs transformers {vs_hf:.2e}, vs dequantized weights {vs_deq:.2e}")
    assert vs_hf <= NMSE_MOE_LLAMACPP_VS_HF[outtype]
    assert vs_deq <= NMSE_MOE_LLAMACPP_VS_HF_DEQUANTIZED[outtype]


@pytest.mark.parametrize("name", list(MOE_CONFIGS))
def test_llama_cpp_f32_agrees_with_transformers(case, name):
    pytest.importorskip("llama_cpp")
    check_type(case(name), "f32")


@pytest.mark.parametrize("outtype", [t for t in OUTTYPES if t != "f32"])
def test_llama_cpp_every_type(case, outtype):
    pytest.importorskip("llama_cpp")
    check_type(case("moe_kwide"), outtype)


@pytest.mark.slow
@pytest.mark.parametrize("name", list(MOE_CONFIGS))
@pytest.mark.parametrize("outtype", ["f16", "q8_0", "q4_k_m"])
def test_llama_cpp_type_matrix(case, name, outtype):
    pytest.importorskip("llama_cpp")
    check_type(case(name), outtype)


@pytest.fixture(scope="module")
def f32_file(ckpt, tiny_checkpoint, tmp_path_factory):
    """(checkpoint, our f32 GGUF) of CONFIGS or EIGHT; names ending in _mtp get an MTP head."""
    from devtools.tiny import add_mtp

    cache: dict[str, tuple[Path, Path]] = {}

    def get(name: str) -> tuple[Path, Path]:
        if name not in cache:
            out = tmp_path_factory.mktemp(f"f32_{name}")
            if name in EIGHT:
                base, overrides = EIGHT[name]
                src = tiny_checkpoint(base, **overrides)
            else:
                src = ckpt(name)
            if name.endswith("_mtp"):
                shutil.copytree(src, out / "ckpt")
                src = add_mtp(out / "ckpt")
            cache[name] = src, convert_checkpoint(src, out / "f32.gguf")
        return cache[name]
    return get


@pytest.mark.parametrize("name", ["moe", "moe_kwide", *EIGHT])
@pytest.mark.parametrize("outtype", list(LLAMA_FTYPES))
def test_types_match_llama_quantize(f32_file, tmp_path, name, outtype):
    """Our per-tensor types equal llama_model_quantize's on our f32 MoE file, for every output
    type: experts, shared expert and latent projections quantized, the router kept, ffn_down* by
    block number; with 8 experts attn_k / attn_v Q8_0 and Q4_K_M's attn_output Q5_K; an MTP
    block counted among the layers."""
    llama_cpp = pytest.importorskip("llama_cpp")
    hf_dir, f32 = f32_file(name)
    ftype, pure = LLAMA_FTYPES[outtype]
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype, params.pure, params.nthread = ftype, pure, 2
    out = tmp_path / "llama.gguf"
    assert llama_cpp.llama_model_quantize(str(f32).encode(), str(out).encode(),
                                          ctypes.byref(params)) == 0
    theirs = {t.name: t.tensor_type for t in gguf.GGUFReader(out).tensors}
    ours = {t.spec.name: t.type for t in plan_conversion(hf_dir, outtype).tensors}
    assert ours == theirs


def test_eight_expert_rules_change_types(f32_file):
    """The 8-expert rules do fire on these files, so the comparison above tests them: attn_k and
    attn_v go to Q8_0 and attn_output to Q5_K where 6 experts leave them Q4_K."""
    hf_dir, _ = f32_file("moe8_kwide")
    plan = plan_conversion(hf_dir, "q4_k_m")
    types = {t.spec.name: t.type for t in plan.tensors}
    i = plan.config.layer_kinds.index("attention")
    assert types[f"blk.{i}.attn_k.weight"] == types[f"blk.{i}.attn_v.weight"] == T.Q8_0
    assert types[f"blk.{i}.attn_output.weight"] == T.Q5_K
    assert types[f"blk.{i}.attn_q.weight"] == T.Q4_K
    six = {t.spec.name: t.type for t in plan_conversion(f32_file("moe_kwide")[0], "q4_k_m").tensors}
    assert six[f"blk.{i}.attn_k.weight"] == six[f"blk.{i}.attn_output.weight"] == T.Q4_K


# ---------------------------------------------------------------------------------------------
# Sizes without weights, and `edgenano info`


def test_dry_run_of_published_nano_config():
    """bench/moe_dry_run.py on Nemotron 3 Nano 30B-A3B's published config: about 31.6 B
    parameters, about 3.2 B of them per token (SPEC section 1.4)."""
    import importlib.util
    import math

    path = Path(__file__).resolve().parents[1] / "bench" / "moe_dry_run.py"
    spec = importlib.util.spec_from_file_location("moe_dry_run", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    c, ss = mod.specs(mod.NANO_30B_A3B)
    assert c.layer_kinds.count("moe") == 23 and c.layer_kinds.count("mamba") == 23
    n = {s.name: math.prod(s.shape) for s in ss}
    total = sum(n.values())
    routed = sum(v for k, v in n.items() if k.endswith("_exps.weight"))
    active = total - routed + routed * 6 // 128 - n["token_embd.weight"]
    assert abs(total / 31.6e9 - 1) < 0.01 and abs(active / 3.2e9 - 1) < 0.03
    assert "q4_k_m" in mod.dry_run(mod.NANO_30B_A3B)


def test_info_shows_experts(ckpt, tmp_path):
    from edgenano.info import describe

    text = describe(str(convert_checkpoint(ckpt("moe_latent"), tmp_path / "m.gguf")), 256)
    assert "nemotron_h_moe" in text and "2 MoE" in text
    assert "10 routed x 40 wide, top-3, 1 shared x 64, latent 32" in text
    assert "parameters per token" in text and "session @ 256 tokens" in text
