"""The layer table (edgenano.layers): the kind of each layer from a GGUF's per-layer arrays, the
pattern letters, and a table that explains every tensor of a converted file."""

from __future__ import annotations

import pytest

from edgenano import layers
from edgenano.layers import KINDS, kinds_from_arrays, layer_arrays, pattern


def test_kinds_from_arrays_as_llama_cpp():
    arrays = {"feed_forward_length": [0, 96, 0, 0], "attention.head_count_kv": [0, 0, 2, 0]}
    assert kinds_from_arrays(arrays) == ["mamba", "mlp", "attention", "mamba"]
    with pytest.raises(ValueError, match="layer 1 has both feed_forward_length 96 and "
                                         "head_count_kv 2"):
        kinds_from_arrays({"feed_forward_length": [0, 96], "attention.head_count_kv": [0, 2]})


def test_feed_forward_marks_experts_in_a_file_with_experts():
    """llama.cpp: with expert_count > 0 every feed-forward layer is a MoE layer."""
    arrays = {"feed_forward_length": [0, 48, 0, 48], "attention.head_count_kv": [0, 0, 2, 0]}
    assert kinds_from_arrays(arrays, experts=True) == ["mamba", "moe", "attention", "moe"]
    assert kinds_from_arrays(arrays) == ["mamba", "mlp", "attention", "mlp"]


def test_arrays_and_kinds_round_trip():
    kinds = ["mamba", "mlp", "mamba", "attention", "mlp"]
    d = layers.Dims(n_vocab=8, n_embd=4, n_head=2, n_head_kv=1, head_dim=2, n_ff=6,
                    ssm_n_head=2, ssm_d_inner=4, ssm_n_group=1, ssm_d_state=2, ssm_d_conv=4)
    arrays = layer_arrays(kinds, lambda i: d)
    assert arrays == {"feed_forward_length": [0, 6, 0, 0, 6],
                      "attention.head_count_kv": [0, 0, 0, 1, 0]}
    assert kinds_from_arrays(arrays) == kinds
    assert pattern(kinds) == "M-M*-"


def test_every_letter_and_word_names_one_kind():
    assert {k.letter for k in KINDS.values()} == {"M", "*", "-", "E"}
    assert layers.BY_WORD["linear_attention"] == "mamba" and layers.BY_WORD["moe"] == "moe"
    assert layers.SUPPORTED == ("mamba", "attention", "mlp", "moe")
    names = [t.gguf for k in KINDS.values() for t in k.tensors]
    assert len(names) == len(set(names))  # a GGUF name says its kind


def test_table_explains_a_converted_file(tiny_checkpoint, tmp_path):
    from edgenano.convert import convert_checkpoint
    from edgenano.gguf_model import load_gguf

    m = load_gguf(convert_checkpoint(tiny_checkpoint("mix"), tmp_path / "m.gguf", "q8_0"))
    c = m.config
    want = {t.gguf for t in (layers.EMBEDDING, layers.OUTPUT_NORM, layers.OUTPUT)}
    for i, kind in enumerate(c.layer_kinds):
        for t in layers.layer_tensors(kind):
            want.add(f"blk.{i}.{t.gguf}")
            view = m.tensors[f"blk.{i}.{t.gguf}"]
            assert view.shape == t.shape(c.dims(i))
            assert (view.type.name == "F32") == (t.rule == layers.F32), view.name
    assert set(m.tensors) == want
