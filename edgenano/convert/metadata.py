"""The `general.*` and `nemotron_h.*` GGUF keys of SPEC section 3, with their exact value types.

llama.cpp infers each layer's kind from the per-layer arrays (edgenano.layers: Mamba where
head_count_kv and feed_forward_length are both 0, attention where head_count_kv > 0, MLP where
feed_forward_length > 0).
"""

from __future__ import annotations

from gguf import GGUFValueType

from ..layers import layer_arrays
from .config import HybridConfig
from .presets import OutType
from .tokenizer import KV

V = GGUFValueType
ARCH = "nemotron_h"
QUANTIZATION_VERSION = 2


def model_kvs(c: HybridConfig, out: OutType, name: str) -> list[KV]:
    """Every non-tokenizer key except general.architecture (which the writer adds first)."""
    a = ARCH
    u32 = {
        f"{a}.block_count": c.n_layer,
        f"{a}.context_length": c.n_ctx_train,
        f"{a}.embedding_length": c.n_embd,
        f"{a}.attention.head_count": c.n_head,
        f"{a}.attention.key_length": c.head_dim,
        f"{a}.attention.value_length": c.head_dim,
        f"{a}.ssm.conv_kernel": c.ssm_d_conv,
        f"{a}.ssm.state_size": c.ssm_d_state,
        f"{a}.ssm.group_count": c.ssm_n_group,
        f"{a}.ssm.inner_size": c.ssm_d_inner,
        f"{a}.ssm.time_step_rank": c.ssm_n_heads,
        f"{a}.vocab_size": c.n_vocab,
        "general.file_type": int(out.ftype),
        "general.quantization_version": QUANTIZATION_VERSION,
    }
    f32 = {
        f"{a}.attention.layer_norm_epsilon": c.eps,
        f"{a}.attention.layer_norm_rms_epsilon": c.eps,
    }
    return (
        [KV("general.name", name, V.STRING)]
        + [KV(k, int(v), V.UINT32) for k, v in u32.items()]
        + [KV(k, float(v), V.FLOAT32) for k, v in f32.items()]
        + [KV(f"{a}.{key}", vals, V.ARRAY, V.INT32)
           for key, vals in layer_arrays(c.layer_kinds, c.dims).items()]
    )
