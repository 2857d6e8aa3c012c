"""The `general.*` and `nemotron_h.*` (`nemotron_h_moe.*`) GGUF keys of SPEC sections 3 and 1.4,
with their exact value types.

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
ARCH_MOE = "nemotron_h_moe"  # the same layout with expert layers (SPEC section 1.4)
QUANTIZATION_VERSION = 2


def arch_of(c: HybridConfig) -> str:
    """nemotron_h_moe exactly when the layer list has expert layers (never from the presence of
    MoE keys: transformers' config object carries MoE defaults for dense models too)."""
    return ARCH_MOE if c.is_moe else ARCH


def model_kvs(c: HybridConfig, out: OutType, name: str) -> list[KV]:
    """Every non-tokenizer key except general.architecture (which the writer adds first)."""
    a = arch_of(c)
    u32 = {
        f"{a}.block_count": c.n_layer + c.n_nextn,  # the MTP block counts (llama.cpp's n_layer_all)
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
    flags = {}
    if c.is_moe:  # the keys and types llama.cpp's nemotron_h_moe loader reads (llama-model.cpp)
        u32 |= {
            f"{a}.expert_count": c.n_expert,
            f"{a}.expert_used_count": c.n_expert_used,
            f"{a}.expert_shared_count": c.n_expert_shared,
            f"{a}.expert_feed_forward_length": c.n_ff_exp,
            f"{a}.expert_shared_feed_forward_length": c.n_ff_shexp,
            f"{a}.expert_group_count": 1,
        }
        if c.moe_latent:
            u32[f"{a}.moe_latent_size"] = c.moe_latent
        if c.n_nextn:
            u32[f"{a}.nextn_predict_layers"] = c.n_nextn
        f32[f"{a}.expert_weights_scale"] = c.expert_weights_scale
        flags[f"{a}.expert_weights_norm"] = c.expert_weights_norm
    return (
        [KV("general.name", name, V.STRING)]
        + [KV(k, int(v), V.UINT32) for k, v in u32.items()]
        + [KV(k, float(v), V.FLOAT32) for k, v in f32.items()]
        + [KV(k, bool(v), V.BOOL) for k, v in flags.items()]
        + [KV(f"{a}.{key}", vals, V.ARRAY, V.INT32) for key, vals in _arrays(c).items()]
    )


def _arrays(c: HybridConfig) -> dict[str, list[int]]:
    """The per-layer arrays; an MTP block (attention and experts folded) is marked in both, as
    llama.cpp's converter marks it."""
    arrays = layer_arrays(c.layer_kinds, c.dims)
    for _ in range(c.n_nextn):
        arrays["feed_forward_length"].append(c.n_ff_exp)
        arrays["attention.head_count_kv"].append(c.n_head_kv)
    return arrays
