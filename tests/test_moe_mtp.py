"""Multi-token-prediction (MTP) draft heads (Nemotron 3 Super; SPEC section 1.4): kept after the
layers by default, dropped with --no-mtp, written alone with --mtp, as llama.cpp's converter does;
llama.cpp 0.3.36 loads each file, and our loader runs the model and ignores the head."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import gguf
import numpy as np
import pytest
from gguf import GGUFValueType as V

from devtools.tiny import add_mtp, mtp_shapes
from edgenano.backends import ReferenceBackend
from edgenano.convert import ConversionError, convert_checkpoint
from edgenano.convert.cli import main as convert_main
from edgenano.convert.config import parse_config, with_mtp
from edgenano.errors import GGUFError
from edgenano.gguf_model import load_gguf

sys.path.insert(0, str(Path(__file__).resolve().parent))  # tests/ is no package (importlib mode)
from conftest import llama_logits as conftest_llama_logits  # noqa: E402
from conftest import nmse  # noqa: E402
from tolerances import NMSE_MOE_LLAMACPP_VS_HF  # noqa: E402

PROMPT = np.random.default_rng(3).integers(16, 512, size=29).tolist()
A = "nemotron_h_moe"


@pytest.fixture(scope="module")
def mtp_ckpt(tiny_checkpoint, tmp_path_factory):
    """moe_latent (latent experts, as Super) with a random MTP head."""
    def get(name: str = "moe_latent") -> Path:
        src = tmp_path_factory.mktemp(f"mtp_{name}") / "ckpt"
        shutil.copytree(tiny_checkpoint(name), src)
        return add_mtp(src)
    return get


@pytest.fixture(scope="module")
def files(mtp_ckpt, tmp_path_factory):
    """The same checkpoint converted with each MTP mode (f32)."""
    src, out = mtp_ckpt(), tmp_path_factory.mktemp("mtp_out")
    return src, {mode: convert_checkpoint(src, out / f"{mode}.gguf", mtp=mode)
                 for mode in ("keep", "drop", "only")}


def llama_model_info(path: Path, load_mtp: bool) -> tuple[int, int]:
    """(n_layer, n_layer_nextn) as llama.cpp 0.3.36 loads the file (None on failure)."""
    llama_cpp = pytest.importorskip("llama_cpp")
    llama_cpp.llama_backend_init()
    params = llama_cpp.llama_model_default_params()
    params.load_mtp = load_mtp
    model = llama_cpp.llama_model_load_from_file(str(path).encode(), params)
    assert model, f"llama.cpp could not load {path.name} (load_mtp={load_mtp})"
    try:
        return llama_cpp.llama_model_n_layer(model), llama_cpp.llama_model_n_layer_nextn(model)
    finally:
        llama_cpp.llama_model_free(model)


def llama_logits(path: Path) -> np.ndarray:
    return conftest_llama_logits(path, PROMPT)


def test_kept_by_default_as_llama_cpp_writes_it(files):
    """The head is one block after the layers: counted in block_count and nextn_predict_layers,
    marked in both per-layer arrays, its tensors under llama.cpp's names with the checkpoint's
    values."""
    from safetensors.numpy import load_file

    src, f = files
    c = parse_config(json.loads((src / "config.json").read_text()))
    n = c.n_layer
    r = gguf.GGUFReader(f["keep"])
    assert r.fields[f"{A}.block_count"].contents() == n + 1
    assert r.fields[f"{A}.nextn_predict_layers"].types == [V.UINT32]
    assert r.fields[f"{A}.nextn_predict_layers"].contents() == 1
    assert r.fields[f"{A}.feed_forward_length"].contents()[n] == c.n_ff_exp
    assert r.fields[f"{A}.attention.head_count_kv"].contents()[n] == c.n_head_kv
    got = {t.name: np.asarray(t.data) for t in r.tensors}
    hf = load_file(src / "mtp.safetensors")
    p = f"blk.{n}."
    pairs = {"nextn.enorm.weight": "mtp.layers.0.enorm.weight",
             "nextn.hnorm.weight": "mtp.layers.0.hnorm.weight",
             "nextn.eh_proj.weight": "mtp.layers.0.eh_proj.weight",
             "attn_norm.weight": "mtp.layers.0.norm.weight",
             "attn_q.weight": "mtp.layers.0.mixer.q_proj.weight",
             "attn_output.weight": "mtp.layers.0.mixer.o_proj.weight",
             "post_attention_norm.weight": "mtp.layers.1.norm.weight",
             "ffn_gate_inp.weight": "mtp.layers.1.mixer.gate.weight",
             "exp_probs_b.bias": "mtp.layers.1.mixer.gate.e_score_correction_bias",
             "ffn_latent_down.weight": "mtp.layers.1.mixer.fc1_latent_proj.weight",
             "ffn_down_shexp.weight": "mtp.layers.1.mixer.shared_experts.down_proj.weight",
             "nextn.shared_head_norm.weight": "mtp.layers.1.final_layernorm.weight"}
    for g, h in pairs.items():
        np.testing.assert_array_equal(got[p + g], hf[h], err_msg=g)
    for x in range(c.n_expert):
        np.testing.assert_array_equal(got[p + "ffn_up_exps.weight"][x],
                                      hf[f"mtp.layers.1.mixer.experts.{x}.up_proj.weight"])
    mtp_names = {t.name for t in r.tensors if t.name.startswith(p)}
    assert len(mtp_names) == len(mtp_shapes(json.loads((src / "config.json").read_text()))) \
        - 2 * c.n_expert + 2  # the experts stacked into two tensors


def test_dropped_with_no_mtp(files):
    _, f = files
    r = gguf.GGUFReader(f["drop"])
    n = len(r.fields[f"{A}.feed_forward_length"].contents())
    assert r.fields[f"{A}.block_count"].contents() == n
    assert f"{A}.nextn_predict_layers" not in r.fields
    assert not any(t.name.startswith(f"blk.{n}.") for t in r.tensors)
    kept = {t.name for t in gguf.GGUFReader(f["keep"]).tensors}
    assert {t.name for t in r.tensors} == {t for t in kept if not t.startswith(f"blk.{n}.")}


def test_llama_cpp_loads_kept_head_and_ignores_it_for_generation(files):
    """llama.cpp 0.3.36 loads the file with and without its MTP tensors (load_mtp builds the
    head's tensors, checking names and shapes) and its logits equal the --no-mtp file's."""
    pytest.importorskip("llama_cpp")
    _, f = files
    n = load_gguf(f["drop"]).config.n_layer
    assert llama_model_info(f["keep"], load_mtp=True) == (n, 1)
    assert llama_model_info(f["keep"], load_mtp=False) == (n, 1)
    np.testing.assert_array_equal(llama_logits(f["keep"]), llama_logits(f["drop"]))


def test_llama_cpp_agrees_with_transformers_on_kept_file(files):
    pytest.importorskip("llama_cpp")
    import torch

    from devtools import tiny

    src, f = files
    model, _ = tiny.load_hf(src)  # transformers ignores mtp.* when loading
    with torch.no_grad():
        ref = model(torch.tensor([PROMPT])).logits[0].double().numpy()
    assert nmse(llama_logits(f["keep"]), ref) <= NMSE_MOE_LLAMACPP_VS_HF["f32"]


def test_our_loader_ignores_the_head(files):
    _, f = files
    kept, dropped = load_gguf(f["keep"]), load_gguf(f["drop"])
    assert kept.config.n_nextn == 1 and dropped.config.n_nextn == 0
    assert kept.config.layer_kinds == dropped.config.layer_kinds
    assert set(kept.tensors) == set(dropped.tensors)
    got = ReferenceBackend(kept).logits(PROMPT)
    np.testing.assert_array_equal(got, ReferenceBackend(dropped).logits(PROMPT))


def test_native_engine_runs_kept_file(files):
    pytest.importorskip("edgenano._C")
    from edgenano import Model

    _, f = files
    a = Model(f["keep"], backend="native", n_threads=2).logits(PROMPT)
    b = Model(f["drop"], backend="native", n_threads=2).logits(PROMPT)
    np.testing.assert_array_equal(a, b)


def test_mtp_only_is_llama_cpps_draft_file(files):
    """--mtp writes the draft head with the embeddings, final norm and output it shares, as
    llama.cpp's converter's --mtp; llama.cpp loads it as a draft model; we refuse it clearly."""
    pytest.importorskip("llama_cpp")
    _, f = files
    r = gguf.GGUFReader(f["only"])
    n = r.fields[f"{A}.block_count"].contents() - 1
    names = {t.name for t in r.tensors}
    kept = {t.name for t in gguf.GGUFReader(f["keep"]).tensors}
    assert names == {t for t in kept if t.startswith(f"blk.{n}.") or not t.startswith("blk.")}
    assert llama_model_info(f["only"], load_mtp=True) == (n, 1)
    with pytest.raises(GGUFError, match="only a multi-token-prediction draft head"):
        load_gguf(f["only"])


def test_cli_flags(mtp_ckpt, tmp_path, capsys):
    src = mtp_ckpt("moe")
    assert convert_main([str(src), "-o", str(tmp_path / "a.gguf"), "--no-mtp"]) == 0
    assert f"{A}.nextn_predict_layers" not in gguf.GGUFReader(tmp_path / "a.gguf").fields
    assert convert_main([str(src), "-o", str(tmp_path / "b.gguf")]) == 0
    assert gguf.GGUFReader(tmp_path / "b.gguf").fields[f"{A}.nextn_predict_layers"].contents() == 1
    assert convert_main([str(src), "-o", str(tmp_path / "c.gguf"), "--mtp"]) == 0
    with pytest.raises(SystemExit):
        convert_main([str(src), "-o", str(tmp_path / "d.gguf"), "--mtp", "--no-mtp"])


def test_mtp_refusals(tiny_checkpoint, tmp_path):
    from devtools.tiny import make_config

    with pytest.raises(ConversionError, match="has none"):
        convert_checkpoint(tiny_checkpoint("moe"), tmp_path / "x.gguf", mtp="only")
    for fields in (dict(num_nextn_predict_layers=2),
                   dict(num_nextn_predict_layers=1, mtp_hybrid_override_pattern="*EE")):
        c = parse_config(make_config("moe", **fields))
        with pytest.raises(ConversionError, match="--no-mtp"):
            with_mtp(c, "keep")
        assert with_mtp(c, "drop").n_nextn == 0


def test_head_missing_from_checkpoint_says_no_mtp(tiny_checkpoint, tmp_path):
    src = tmp_path / "ckpt"
    shutil.copytree(tiny_checkpoint("moe"), src)
    cfg = json.loads((src / "config.json").read_text()) | {"num_nextn_predict_layers": 1}
    (src / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ConversionError, match="lacks tensor mtp.layers.0.*--no-mtp"):
        convert_checkpoint(src, tmp_path / "m.gguf")
    assert load_gguf(convert_checkpoint(src, tmp_path / "m.gguf", mtp="drop")).config.n_layer == 6


def llama_convert(hf_dir: Path, out: Path, *flags: str) -> Path:
    """llama.cpp's own convert_hf_to_gguf.py (llama-cpp-python 0.3.36's sdist) on hf_dir."""
    import subprocess

    from conftest import _llama_sdist

    subprocess.run([sys.executable, "-m", "devtools.llama_convert", str(_llama_sdist()),
                    str(hf_dir), str(out), "--outtype", "f32", *flags],
                   check=True, capture_output=True, cwd=Path(__file__).resolve().parents[1],
                   timeout=600)
    return out


@pytest.mark.parametrize("flags, mode", [((), "keep"), (("--mtp",), "only")])
def test_same_file_as_llama_cpps_converter(mtp_ckpt, tmp_path, flags, mode):
    """llama.cpp's converter on the same checkpoint, by default and with --mtp: the same tensor
    names, shapes and values and the same layer keys as ours; we load its kept-head file."""
    pytest.importorskip("llama_cpp")
    src = mtp_ckpt("moe")  # its converter refuses moe_latent's Mamba head width 40
    theirs = gguf.GGUFReader(llama_convert(src, tmp_path / "theirs.gguf", *flags))
    ours_path = convert_checkpoint(src, tmp_path / "ours.gguf", mtp=mode)
    ours = gguf.GGUFReader(ours_path)
    t_data = {t.name: np.asarray(t.data) for t in theirs.tensors}
    o_data = {t.name: np.asarray(t.data) for t in ours.tensors}
    assert set(t_data) == set(o_data)
    for name, a in o_data.items():
        assert a.shape == t_data[name].shape, name
        if ".attn_q." in name or ".attn_k." in name:  # its converter permutes rows per head
            a, b = np.sort(a, axis=0), np.sort(t_data[name], axis=0)
            np.testing.assert_array_equal(a, b, err_msg=name)
        elif name.endswith("ssm_a"):  # -exp(A_log) in torch there, NumPy here: 1 ulp apart
            np.testing.assert_allclose(a, t_data[name], rtol=1e-6, err_msg=name)
        else:
            np.testing.assert_array_equal(a, t_data[name], err_msg=name)
    for key in ("block_count", "nextn_predict_layers", "feed_forward_length",
                "attention.head_count_kv", "expert_count", "expert_feed_forward_length"):
        k = f"{A}.{key}"
        assert ours.fields[k].contents() == theirs.fields[k].contents(), key
        assert ours.fields[k].types == theirs.fields[k].types, key
    if mode == "keep":
        m = load_gguf(tmp_path / "theirs.gguf")
        assert m.config.n_nextn == 1
        np.testing.assert_allclose(ReferenceBackend(m).logits(PROMPT),
                                   ReferenceBackend(load_gguf(ours_path)).logits(PROMPT),
                                   rtol=1e-5, atol=1e-5)


def test_info_tells_of_the_head(files):
    from edgenano.info import describe

    _, f = files
    assert "draft head    1 MTP block(s)" in describe(str(f["keep"]), 64)
    assert "draft head" not in describe(str(f["drop"]), 64)


def test_transformers_spelling_of_the_mtp_layers():
    """transformers 5.23's config writes the MTP layer list as mtp_layers_block_type words."""
    from transformers import NemotronHConfig

    from devtools.tiny import make_config
    from edgenano.layers import MTP_PATTERN

    full = NemotronHConfig(**make_config("moe", num_nextn_predict_layers=1)).to_dict()
    assert "mtp_layers_block_type" in full
    full.pop("mtp_hybrid_override_pattern", None)
    c = parse_config(json.loads(json.dumps(full, default=str)))
    assert c.n_nextn == 1 and c.mtp_kinds == MTP_PATTERN


@pytest.mark.parametrize("outtype", ["q8_0", "q4_k_m", "bf16"])
def test_llama_cpp_loads_quantized_head(files, tmp_path, outtype):
    """The head's matrices (eh_proj, attention, experts) in a quantized file load in llama.cpp
    with load_mtp; ours runs the model and, where the head does not change the trunk's types,
    gives the --no-mtp file's logits (q4_k_m's mixture counts the head among the layers, as
    llama_model_quantize does: test_types_match_llama_quantize)."""
    pytest.importorskip("llama_cpp")
    src, f = files
    kept = convert_checkpoint(src, tmp_path / "keep.gguf", outtype)
    dropped = convert_checkpoint(src, tmp_path / "drop.gguf", outtype, mtp="drop")
    n = load_gguf(dropped).config.n_layer
    assert llama_model_info(kept, load_mtp=True) == (n, 1)
    if outtype == "q4_k_m":
        return
    np.testing.assert_array_equal(ReferenceBackend(load_gguf(kept)).logits(PROMPT),
                                  ReferenceBackend(load_gguf(dropped)).logits(PROMPT))
