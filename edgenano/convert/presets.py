"""Output types and llama.cpp's per-tensor type rules (`llama_tensor_get_type`) for nemotron_h.

Plain types are uniform over the quantizable matrices (llama-quantize --pure); q4_k_m / q5_k_m
follow llama.cpp's mixtures. Either way a type whose block does not divide a row (ne0) falls back
as llama.cpp does. Non-matrix tensors (norms, conv, A, D, dt bias, 1-D) are always F32.
"""

from __future__ import annotations

from dataclasses import dataclass

from gguf import GGML_QUANT_SIZES, GGMLQuantizationType, LlamaFileType

from .errors import ConversionError
from .tensors import TensorSpec

T = GGMLQuantizationType
F = LlamaFileType


@dataclass(frozen=True)
class OutType:
    default: GGMLQuantizationType  # type of a plain quantizable matrix
    ftype: LlamaFileType  # general.file_type
    mixture: bool = False  # llama.cpp's _M rules (output, attn_v, ffn_down get more bits)


# Plain K types have no LLAMA_FTYPE of their own; they take the one whose default type they are.
OUTTYPES: dict[str, OutType] = {
    "f32": OutType(T.F32, F.ALL_F32),
    "f16": OutType(T.F16, F.MOSTLY_F16),
    "bf16": OutType(T.BF16, F.MOSTLY_BF16),
    "q8_0": OutType(T.Q8_0, F.MOSTLY_Q8_0),
    "q4_0": OutType(T.Q4_0, F.MOSTLY_Q4_0),
    "q5_0": OutType(T.Q5_0, F.MOSTLY_Q5_0),
    "q4_k": OutType(T.Q4_K, F.MOSTLY_Q4_K_S),
    "q5_k": OutType(T.Q5_K, F.MOSTLY_Q5_K_S),
    "q6_k": OutType(T.Q6_K, F.MOSTLY_Q6_K),
    "q4_k_m": OutType(T.Q4_K, F.MOSTLY_Q4_K_M, mixture=True),
    "q5_k_m": OutType(T.Q5_K, F.MOSTLY_Q5_K_M, mixture=True),
}

# llama.cpp's tensor_type_fallback: a 256-block type whose block does not divide ne0. Q5_1 is
# what llama.cpp picks for Q5_K; we write it too (bit-exact with gguf.quants), so our q5_k and
# q5_k_m files have the same types as llama-quantize's.
FALLBACK = {T.Q4_K: T.Q5_0, T.Q5_K: T.Q5_1, T.Q6_K: T.Q8_0}


def outtype(name: str) -> OutType:
    try:
        return OUTTYPES[name.lower()]
    except KeyError:
        raise ConversionError(
            f"unknown output type {name!r}; choose one of {', '.join(OUTTYPES)}") from None


def block_size(t: GGMLQuantizationType) -> int:
    return GGML_QUANT_SIZES[t][0]


def row_bytes(t: GGMLQuantizationType, ne0: int) -> int:
    bs, ts = GGML_QUANT_SIZES[t]
    return ne0 // bs * ts


def use_more_bits(i: int, n: int) -> bool:
    """llama.cpp's choice of the layers that get more bits in the _M mixtures."""
    return i < n // 8 or i >= 7 * n // 8 or (i - n // 8) % 3 == 2


def fallback(t: GGMLQuantizationType, ne0: int) -> GGMLQuantizationType:
    """The type llama.cpp writes when `t`'s block does not divide the row length."""
    if ne0 % block_size(t) == 0:
        return t
    t = FALLBACK.get(t, t)
    return t if ne0 % block_size(t) == 0 else T.F16


def assign_types(specs: list[TensorSpec], out: OutType, n_layer: int,
                 n_expert: int = 0) -> list[GGMLQuantizationType]:
    """The GGML type of every tensor, in spec order (which is llama.cpp's: by layer, then name).

    `n_layer` counts every block, an MTP block included (llama.cpp's n_layer_all). With routed
    experts (`n_expert` > 1) llama.cpp picks the ffn_down layers by the block number in the name
    (blk.N.), not by counting ffn_down tensors: every ffn_down* of a layer (routed ffn_down_exps,
    shared ffn_down_shexp) gets the same choice; with exactly 8 experts its mixtures give attn_k
    and attn_v Q8_0 and Q4_K_M's attn_output Q5_K (Mixtral's rules). The router (ffn_gate_inp)
    is never quantized; the layer table keeps it F32."""
    has_output = any(s.name == "output.weight" for s in specs)
    n_attn_v = sum(s.name.endswith(".attn_v.weight") for s in specs)
    counters = {"attn_v": 0, "ffn_down": 0}
    types = []
    for s in specs:
        if not s.matrix:
            types.append(T.F32)
            continue
        t = out.default
        if out.mixture:
            t = _mixture_type(s, out, has_output, n_attn_v, n_layer, counters, n_expert)
        types.append(fallback(t, s.ne[0]) if _is_quantized(out.default) else t)
    return types


def _is_quantized(t: GGMLQuantizationType) -> bool:
    return t not in (T.F32, T.F16, T.BF16)


def _mixture_type(s: TensorSpec, out: OutType, has_output: bool, n_attn_v: int, n_layer: int,
                  counters: dict[str, int], n_expert: int = 0) -> GGMLQuantizationType:
    """llama.cpp's Q4_K_M / Q5_K_M rule for one matrix (counters advance as llama.cpp's do)."""
    default = out.default
    if s.name == "output.weight" or (not has_output and s.name == "token_embd.weight"):
        return T.Q8_0 if s.ne[0] % block_size(default) else T.Q6_K
    if s.name.endswith(".attn_v.weight"):
        i = counters["attn_v"]
        counters["attn_v"] += 1
        if n_expert == 8:
            return T.Q8_0
        return T.Q6_K if use_more_bits(i, n_attn_v) else default
    if s.name.endswith(".attn_k.weight") and n_expert == 8:
        return T.Q8_0
    if s.name.endswith(".attn_output.weight") and n_expert == 8 \
            and out.ftype == F.MOSTLY_Q4_K_M:
        return T.Q5_K
    if ".ffn_down" in s.name:  # llama.cpp's FFN_DOWN category: any name containing ffn_down
        i = counters["ffn_down"]
        counters["ffn_down"] += 1
        return T.Q6_K if use_more_bits(s.layer if n_expert > 1 else i, n_layer) else default
    return default
