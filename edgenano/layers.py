"""The layer kinds of nemotron_h as data, the one table every reader of a layer list uses.

For each kind: its letter in `hybrid_override_pattern` and words in `layers_block_type`, the
per-layer GGUF array that marks it, its tensors (HF name, GGUF name, shapes as functions of the
layer's dimensions, type rule, value transform) and its per-sequence state. The converter, the
GGUF loader, `edgenano info` and the NumPy reference read it (SPEC sections 1 and 3); the C++
engine gets the resulting `layer_kinds` list. Adding a kind is one entry here and one forward
function per engine.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

import numpy as np


@dataclass(frozen=True)
class Dims:
    """One layer's dimensions, named as in the GGUF (a config.json maps onto the same names)."""

    n_vocab: int
    n_embd: int  # E
    n_head: int  # attention query heads
    n_head_kv: int  # KV heads (a GGUF's per-layer array is 0 outside attention layers)
    head_dim: int
    n_ff: int  # MLP width (a GGUF's per-layer array is 0 outside MLP layers)
    ssm_n_head: int  # H
    ssm_d_inner: int  # D = H * P
    ssm_n_group: int  # G
    ssm_d_state: int  # N
    ssm_d_conv: int  # K
    # Mixture of experts (0 without): routed experts, shared-expert width, latent size.
    n_expert: int = 0
    n_ff_shexp: int = 0
    moe_latent: int = 0  # the experts' width when > 0 (Super), else they read n_embd

    @property
    def moe_n_embd(self) -> int:
        """The routed experts' input and output width: the latent size, else E."""
        return self.moe_latent or self.n_embd

    @property
    def ssm_head_dim(self) -> int:
        """P = D / H."""
        return self.ssm_d_inner // self.ssm_n_head

    @property
    def ssm_conv_dim(self) -> int:
        """Channels through the conv: x, B and C (D + 2GN)."""
        return self.ssm_d_inner + 2 * self.ssm_n_group * self.ssm_d_state

    @property
    def ssm_in_dim(self) -> int:
        """Width of in_proj's output: z | xBC | dt (2D + 2GN + H)."""
        return self.ssm_d_inner + self.ssm_conv_dim + self.ssm_n_head


Shape = Callable[[Dims], tuple[int, ...]]

# Type rules. MATRIX: a quantizable 2-D weight, written in the output type (with llama.cpp's
# fallbacks and mixtures: edgenano.convert.presets). F32: norms, conv, A, D and biases.
MATRIX, F32 = "matrix", "f32"

# Value transforms from the checkpoint's tensor to the GGUF's.
TRANSFORMS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "copy": lambda a: a,
    "neg_exp": lambda a: -np.exp(a),  # A = -exp(A_log), what llama.cpp's ssm_a holds
}


@dataclass(frozen=True)
class Tensor:
    """One tensor of a layer (or of the model, for the globals)."""

    hf: str  # checkpoint name, after `backbone.layers.{i}.` (globals: after `backbone.`)
    gguf: str  # GGUF name, after `blk.{i}.` (globals: the whole name)
    shape: Shape  # numpy shape written to the GGUF (ggml ne reversed)
    hf_shape: Shape | None = None  # the checkpoint's shape where it differs (None: `shape`)
    rule: str = F32
    transform: str = "copy"
    also: tuple[Shape, ...] = ()  # other numpy shapes a reader accepts (others' converters)
    hf_if: str | None = None  # config flag without which the checkpoint has no such tensor
    present: Callable[[Dims], bool] | None = None  # dimensions without which no such tensor
    hf_also: tuple[str, ...] = ()  # other checkpoint spellings of `hf`
    experts: bool = False  # stacked from one checkpoint tensor per expert (`hf` has {x})
    hf_stacked: tuple[str, ...] = ()  # experts: spellings of one 3-D tensor holding them all,
    #                                   in `shape` (transformers' in-memory layout)

    def hf_shape_of(self, d: Dims) -> tuple[int, ...]:
        return (self.hf_shape or self.shape)(d)

    def shapes(self, d: Dims) -> list[tuple[int, ...]]:
        """Accepted numpy shapes; the first is the one we write."""
        return [self.shape(d)] + [s(d) for s in self.also]


@dataclass(frozen=True)
class State:
    """One array of a sequence's state at a layer of this kind (names as in state files)."""

    name: str  # conv | ssm | k | v: the state file holds `{name}.{layer}`
    shape: Shape  # per sequence; per token when `per_token`
    per_token: bool = False  # a cache that grows with the context (KV), in the KV type


@dataclass(frozen=True)
class Kind:
    name: str
    letter: str  # in hybrid_override_pattern
    words: tuple[str, ...]  # in layers_block_type (transformers >= 5)
    mark: str | None  # the per-layer GGUF array that is > 0 exactly at this kind (None: neither)
    tensors: tuple[Tensor, ...]  # after the block norm, in file order
    state: tuple[State, ...] = ()
    fused: dict[str, tuple[str, ...]] = field(default_factory=dict)  # others' fused tensors
    supported: bool = True
    expert: bool = False  # routed experts: in a file with expert_count > 0, `mark` means this kind


def _matrix(hf: str, gguf: str, shape: Shape) -> Tensor:
    return Tensor(hf, gguf, shape, rule=MATRIX)


# Every layer: x = x + mixer(rmsnorm(x) * norm.weight) (SPEC section 1.1).
BLOCK_NORM = Tensor("norm.weight", "attn_norm.weight", lambda d: (d.n_embd,))

MAMBA = Kind(
    "mamba", "M", ("mamba", "linear_attention"), None,
    tensors=(
        _matrix("mixer.in_proj.weight", "ssm_in.weight", lambda d: (d.ssm_in_dim, d.n_embd)),
        Tensor("mixer.conv1d.weight", "ssm_conv1d.weight",
               lambda d: (d.ssm_conv_dim, d.ssm_d_conv),
               hf_shape=lambda d: (d.ssm_conv_dim, 1, d.ssm_d_conv)),  # squeezed
        Tensor("mixer.dt_bias", "ssm_dt.bias", lambda d: (d.ssm_n_head,)),
        Tensor("mixer.A_log", "ssm_a", lambda d: (d.ssm_n_head, 1),
               hf_shape=lambda d: (d.ssm_n_head,), transform="neg_exp",
               also=(lambda d: (d.ssm_n_head,),)),
        Tensor("mixer.D", "ssm_d", lambda d: (d.ssm_n_head, 1),
               hf_shape=lambda d: (d.ssm_n_head,), also=(lambda d: (d.ssm_n_head,),)),
        Tensor("mixer.norm.weight", "ssm_norm.weight",  # one norm per group of D/G channels
               lambda d: (d.ssm_n_group, d.ssm_d_inner // d.ssm_n_group),
               hf_shape=lambda d: (d.ssm_d_inner,), also=(lambda d: (d.ssm_d_inner,),)),
        _matrix("mixer.out_proj.weight", "ssm_out.weight", lambda d: (d.n_embd, d.ssm_d_inner)),
        Tensor("mixer.conv1d.bias", "ssm_conv1d.bias", lambda d: (d.ssm_conv_dim,),
               hf_if="use_conv_bias"),
    ),
    state=(State("conv", lambda d: (d.ssm_d_conv - 1, d.ssm_conv_dim)),  # last K-1 inputs
           State("ssm", lambda d: (d.ssm_n_head, d.ssm_head_dim, d.ssm_d_state))),
)

ATTENTION = Kind(
    "attention", "*", ("attention", "full_attention"), "attention.head_count_kv",
    tensors=(
        _matrix("mixer.q_proj.weight", "attn_q.weight", lambda d: (d.n_head * d.head_dim,
                                                                   d.n_embd)),
        _matrix("mixer.k_proj.weight", "attn_k.weight", lambda d: (d.n_head_kv * d.head_dim,
                                                                   d.n_embd)),
        _matrix("mixer.v_proj.weight", "attn_v.weight", lambda d: (d.n_head_kv * d.head_dim,
                                                                   d.n_embd)),
        _matrix("mixer.o_proj.weight", "attn_output.weight", lambda d: (d.n_embd,
                                                                        d.n_head * d.head_dim)),
    ),
    state=(State("k", lambda d: (d.n_head_kv, d.head_dim), per_token=True),
           State("v", lambda d: (d.n_head_kv, d.head_dim), per_token=True)),
    fused={"attn_qkv.weight": ("attn_q.weight", "attn_k.weight", "attn_v.weight")},
)

MLP = Kind(
    "mlp", "-", ("mlp",), "feed_forward_length",
    tensors=(
        _matrix("mixer.up_proj.weight", "ffn_up.weight", lambda d: (d.n_ff, d.n_embd)),
        _matrix("mixer.down_proj.weight", "ffn_down.weight", lambda d: (d.n_embd, d.n_ff)),
    ),
)

# Mixture of experts (SPEC section 1.4), GGUF arch nemotron_h_moe as llama.cpp's loader reads it:
# a router (kept F32, as llama.cpp's converter and quantizer keep ffn_gate_inp), the correction
# bias used for choosing only, the routed experts stacked into one 3-D tensor each (expert-major:
# expert x's rows are contiguous), a shared expert, and Super's latent projections around the
# routed experts. Here `n_ff` is the routed experts' width (llama.cpp's feed_forward_length at
# these layers).
MOE = Kind(
    "moe", "E", ("moe",), "feed_forward_length", expert=True,
    tensors=(
        Tensor("mixer.gate.weight", "ffn_gate_inp.weight", lambda d: (d.n_expert, d.n_embd)),
        Tensor("mixer.gate.e_score_correction_bias", "exp_probs_b.bias",
               lambda d: (d.n_expert,), hf_also=("mixer.gate.e_score_correction.bias",)),
        Tensor("mixer.fc1_latent_proj.weight", "ffn_latent_down.weight",
               lambda d: (d.moe_latent, d.n_embd), rule=MATRIX, present=lambda d: d.moe_latent > 0),
        Tensor("mixer.experts.{x}.up_proj.weight", "ffn_up_exps.weight",
               lambda d: (d.n_expert, d.n_ff, d.moe_n_embd),
               hf_shape=lambda d: (d.n_ff, d.moe_n_embd), rule=MATRIX, experts=True,
               hf_stacked=("mixer.experts.up_proj", "mixer.experts.up_proj.weight")),
        Tensor("mixer.experts.{x}.down_proj.weight", "ffn_down_exps.weight",
               lambda d: (d.n_expert, d.moe_n_embd, d.n_ff),
               hf_shape=lambda d: (d.moe_n_embd, d.n_ff), rule=MATRIX, experts=True,
               hf_stacked=("mixer.experts.down_proj", "mixer.experts.down_proj.weight")),
        Tensor("mixer.fc2_latent_proj.weight", "ffn_latent_up.weight",
               lambda d: (d.n_embd, d.moe_latent), rule=MATRIX, present=lambda d: d.moe_latent > 0),
        _matrix("mixer.shared_experts.up_proj.weight", "ffn_up_shexp.weight",
                lambda d: (d.n_ff_shexp, d.n_embd)),
        _matrix("mixer.shared_experts.down_proj.weight", "ffn_down_shexp.weight",
                lambda d: (d.n_embd, d.n_ff_shexp)),
    ),
)

KINDS: dict[str, Kind] = {k.name: k for k in (MAMBA, ATTENTION, MLP, MOE)}

# Multi-token prediction (Super's draft head, `mtp.*` in the checkpoint; SPEC section 1.4): one
# block after the last layer folding an attention sub-layer (mtp.layers.0, with the NextN input
# fusion) and an expert sub-layer (mtp.layers.1, with the head's final norm), written as
# llama.cpp's converter writes it: blk.{n_layer}.*, counted in block_count and
# nextn_predict_layers, marked in both per-layer arrays. Here `hf` is the whole checkpoint name.
MTP_PREFIX = "mtp."
MTP_PATTERN = ("attention", "moe")  # the only MTP layer list llama.cpp's converter folds


def _mtp_sub(i: int, t: Tensor) -> Tensor:
    p = f"{MTP_PREFIX}layers.{i}."
    return replace(t, hf=p + t.hf, hf_also=tuple(p + h for h in t.hf_also),
                   hf_stacked=tuple(p + h for h in t.hf_stacked))


def _mtp_norm(hf: str, gguf: str) -> Tensor:
    return Tensor(MTP_PREFIX + hf, gguf, lambda d: (d.n_embd,))


MTP_BLOCK: tuple[Tensor, ...] = (
    _mtp_norm("layers.0.enorm.weight", "nextn.enorm.weight"),  # the next token's embedding
    _mtp_norm("layers.0.hnorm.weight", "nextn.hnorm.weight"),  # the trunk's last hidden state
    _matrix(MTP_PREFIX + "layers.0.eh_proj.weight", "nextn.eh_proj.weight",
            lambda d: (d.n_embd, 2 * d.n_embd)),
    _mtp_sub(0, BLOCK_NORM),
    *(_mtp_sub(0, t) for t in ATTENTION.tensors),
    _mtp_norm("layers.1.norm.weight", "post_attention_norm.weight"),
    *(_mtp_sub(1, t) for t in MOE.tensors),
    _mtp_norm("layers.1.final_layernorm.weight", "nextn.shared_head_norm.weight"),
)


def mtp_tensors(d: Dims) -> tuple[Tensor, ...]:
    """The MTP block's tensors in file order, given the experts' dimensions (latent or not)."""
    return tuple(t for t in MTP_BLOCK if t.present is None or t.present(d))
SUPPORTED = tuple(k for k, v in KINDS.items() if v.supported)
BY_LETTER = {k.letter: k.name for k in KINDS.values()}
BY_WORD = {w: k.name for k in KINDS.values() for w in k.words}
# Per-layer GGUF arrays (after `nemotron_h.`) and the dimension each carries at its kind.
LAYER_ARRAYS = {"feed_forward_length": "n_ff", "attention.head_count_kv": "n_head_kv"}

# The model's own tensors: token_embd first, output_norm and output after the layers.
EMBEDDING = _matrix("embeddings.weight", "token_embd.weight", lambda d: (d.n_vocab, d.n_embd))
OUTPUT_NORM = Tensor("norm_f.weight", "output_norm.weight", lambda d: (d.n_embd,))
OUTPUT = _matrix("lm_head.weight", "output.weight",  # absent: tied to token_embd
                 lambda d: (d.n_vocab, d.n_embd))
TOP_LEVEL_HF = (OUTPUT.hf,)  # checkpoint names outside the backbone prefix


def layer_tensors(kind: str, d: Dims | None = None) -> tuple[Tensor, ...]:
    """Every tensor of a layer of `kind`, in file order (the block norm first); given the layer's
    dimensions, only those it has (Super's latent projections)."""
    return (BLOCK_NORM, *(t for t in KINDS[kind].tensors
                          if d is None or t.present is None or t.present(d)))


def pattern(kinds: Sequence[str]) -> str:
    """The hybrid_override_pattern string of a layer list ("M-M*-...")."""
    return "".join(KINDS[k].letter for k in kinds)


def layer_arrays(kinds: Sequence[str], dims: Callable[[int], Dims]) -> dict[str, list[int]]:
    """The per-layer GGUF arrays of a layer list: each kind's dimension at its layers, else 0."""
    out = {}
    for key, attr in LAYER_ARRAYS.items():
        out[key] = [getattr(dims(i), attr) if KINDS[k].mark == key else 0
                    for i, k in enumerate(kinds)]
    return out


def _sole_mark(kind: Kind) -> bool:
    """No other kind is marked by `kind`'s array (so experts or not, the array means it)."""
    return all(k is kind or k.mark != kind.mark for k in KINDS.values())


def kinds_from_arrays(arrays: dict[str, Sequence[int]], experts: bool = False) -> list[str]:
    """The layer list of a nemotron_h GGUF, which has no explicit one, derived as llama.cpp does:
    a kind whose array is > 0 at layer i (attention: head_count_kv, MLP: feed_forward_length),
    else Mamba. In a file with routed experts (`experts`: expert_count > 0, nemotron_h_moe)
    feed_forward_length marks the MoE kind instead of the MLP, as in llama.cpp's loader.
    ValueError naming the layer when two arrays mark it."""
    unmarked = next(k.name for k in KINDS.values() if k.supported and k.mark is None)
    marks = [(k.name, key) for key in LAYER_ARRAYS for k in KINDS.values()
             if k.mark == key and (k.expert == experts or _sole_mark(k))]
    n = len(next(iter(arrays.values())))
    kinds = []
    for i in range(n):
        hits = [(name, key) for name, key in marks if arrays[key][i] > 0]
        if len(hits) > 1:
            both = " and ".join(f"{key.rsplit('.', 1)[-1]} {arrays[key][i]}" for _, key in hits)
            raise ValueError(f"layer {i} has both {both}; a nemotron_h layer is exactly one mixer")
        kinds.append(hits[0][0] if hits else unmarked)
    return kinds
