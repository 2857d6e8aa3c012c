"""HF -> GGUF tensor names, shapes and transforms for nemotron_h (SPEC section 3), as data.

Each row of a table says: the HF name (inside `backbone.` / `model.`), the GGUF name, the HF
shape and the GGUF numpy shape (reversed ggml order) as functions of the config, the value
transform, and whether the tensor is a quantizable matrix (others are always F32).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from .config import HybridConfig
from .errors import ConversionError
from .safetensors_io import Checkpoint

# Prefixes the backbone's tensors carry in shipped checkpoints (older/PEFT files use model.*).
PREFIXES = ("backbone.", "model.")
TOP_LEVEL = ("lm_head.weight",)

Shape = Callable[[HybridConfig], tuple[int, ...]]

TRANSFORMS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "copy": lambda a: a,
    "neg_exp": lambda a: -np.exp(a),  # A = -exp(A_log), what llama.cpp's ssm_a holds
}


@dataclass(frozen=True)
class Row:
    hf: str  # name relative to the prefix ("layers.{i}." is prepended for layer rows)
    gguf: str  # name relative to "blk.{i}." for layer rows
    hf_shape: Shape
    shape: Shape  # numpy shape written to the GGUF (ggml ne reversed)
    transform: str = "copy"
    matrix: bool = False  # quantizable 2-D weight; everything else stays F32


def _same(f: Shape) -> tuple[Shape, Shape]:
    return f, f


GLOBAL_ROWS = (
    Row("embeddings.weight", "token_embd.weight", *_same(lambda c: (c.n_vocab, c.n_embd)),
        matrix=True),
    Row("norm_f.weight", "output_norm.weight", *_same(lambda c: (c.n_embd,))),
)
OUTPUT_ROW = Row("lm_head.weight", "output.weight", *_same(lambda c: (c.n_vocab, c.n_embd)),
                 matrix=True)

NORM_ROW = Row("norm.weight", "attn_norm.weight", *_same(lambda c: (c.n_embd,)))

LAYER_ROWS: dict[str, tuple[Row, ...]] = {
    "mamba": (
        Row("mixer.in_proj.weight", "ssm_in.weight",
            *_same(lambda c: (c.ssm_in_dim, c.n_embd)), matrix=True),
        Row("mixer.conv1d.weight", "ssm_conv1d.weight",
            lambda c: (c.ssm_conv_dim, 1, c.ssm_d_conv), lambda c: (c.ssm_conv_dim, c.ssm_d_conv)),
        Row("mixer.dt_bias", "ssm_dt.bias", *_same(lambda c: (c.ssm_n_heads,))),
        Row("mixer.A_log", "ssm_a", lambda c: (c.ssm_n_heads,), lambda c: (c.ssm_n_heads, 1),
            transform="neg_exp"),
        Row("mixer.D", "ssm_d", lambda c: (c.ssm_n_heads,), lambda c: (c.ssm_n_heads, 1)),
        Row("mixer.norm.weight", "ssm_norm.weight", lambda c: (c.ssm_d_inner,),
            lambda c: (c.ssm_n_group, c.ssm_d_inner // c.ssm_n_group)),
        Row("mixer.out_proj.weight", "ssm_out.weight",
            *_same(lambda c: (c.n_embd, c.ssm_d_inner)), matrix=True),
    ),
    "attention": (
        Row("mixer.q_proj.weight", "attn_q.weight",
            *_same(lambda c: (c.n_head * c.head_dim, c.n_embd)), matrix=True),
        Row("mixer.k_proj.weight", "attn_k.weight",
            *_same(lambda c: (c.n_head_kv * c.head_dim, c.n_embd)), matrix=True),
        Row("mixer.v_proj.weight", "attn_v.weight",
            *_same(lambda c: (c.n_head_kv * c.head_dim, c.n_embd)), matrix=True),
        Row("mixer.o_proj.weight", "attn_output.weight",
            *_same(lambda c: (c.n_embd, c.n_head * c.head_dim)), matrix=True),
    ),
    "mlp": (
        Row("mixer.up_proj.weight", "ffn_up.weight",
            *_same(lambda c: (c.n_ff, c.n_embd)), matrix=True),
        Row("mixer.down_proj.weight", "ffn_down.weight",
            *_same(lambda c: (c.n_embd, c.n_ff)), matrix=True),
    ),
}
CONV_BIAS_ROW = Row("mixer.conv1d.bias", "ssm_conv1d.bias", *_same(lambda c: (c.ssm_conv_dim,)))


@dataclass(frozen=True)
class TensorSpec:
    """One GGUF tensor: where it comes from and what it becomes (type chosen later)."""

    name: str  # GGUF name
    source: str  # full HF tensor name
    shape: tuple[int, ...]  # GGUF numpy shape; ggml ne is reversed
    transform: str
    matrix: bool
    layer: int  # -1 for global tensors

    @property
    def ne(self) -> tuple[int, ...]:
        return tuple(reversed(self.shape))


def expected_rows(c: HybridConfig, has_output: bool) -> list[tuple[int, Row]]:
    """(layer, row) for every tensor the GGUF must hold, in file order."""
    rows = [(-1, GLOBAL_ROWS[0])]
    for i, kind in enumerate(c.layer_kinds):
        rows.append((i, NORM_ROW))
        rows += [(i, r) for r in LAYER_ROWS[kind]]
        if kind == "mamba" and c.use_conv_bias:
            rows.append((i, CONV_BIAS_ROW))
    rows.append((-1, GLOBAL_ROWS[1]))
    if has_output:
        rows.append((-1, OUTPUT_ROW))
    return rows


def resolve_names(ckpt: Checkpoint) -> dict[str, str]:
    """Local name (prefix stripped) -> full HF name, refusing ambiguous or foreign names."""
    local: dict[str, str] = {}
    for full in ckpt.names():
        name = full if full in TOP_LEVEL else _strip_prefix(full)
        if name is None:
            raise ConversionError(
                f"unexpected tensor {full}: names must start with {' or '.join(PREFIXES)}")
        if name in local:
            raise ConversionError(f"tensor {name} appears twice ({local[name]} and {full})")
        local[name] = full
    return local


def _strip_prefix(full: str) -> str | None:
    for p in PREFIXES:
        if full.startswith(p):
            return full[len(p):]
    return None


def plan_tensors(c: HybridConfig, ckpt: Checkpoint) -> list[TensorSpec]:
    """Every GGUF tensor, checked against the checkpoint's names and shapes (headers only)."""
    local = resolve_names(ckpt)
    has_output = "lm_head.weight" in local or not c.tie_embeddings
    specs, used = [], set()
    for layer, row in expected_rows(c, has_output):
        hf = row.hf if layer < 0 else f"layers.{layer}.{row.hf}"
        full = local.get(hf)
        where = "" if layer < 0 else f" (layer {layer}, {c.layer_kinds[layer]})"
        if full is None:
            raise ConversionError(f"checkpoint {ckpt.dir} lacks tensor {hf}{where}")
        want, got = row.hf_shape(c), ckpt.entries[full].shape
        if tuple(got) != tuple(want):
            raise ConversionError(f"tensor {full}{where} has shape {list(got)}, expected "
                                  f"{list(want)} from config.json")
        used.add(hf)
        name = row.gguf if layer < 0 else f"blk.{layer}.{row.gguf}"
        specs.append(TensorSpec(name, full, row.shape(c), row.transform, row.matrix, layer))
    extra = sorted(set(local) - used)
    if extra:
        raise ConversionError(f"checkpoint has {len(extra)} tensor(s) that config.json does not "
                              f"explain, e.g. {local[extra[0]]}")
    return specs


def load_small(ckpt: Checkpoint, spec: TensorSpec) -> np.ndarray:
    """A whole (non-matrix) tensor, transformed and reshaped to its GGUF shape, float32."""
    a = TRANSFORMS[spec.transform](ckpt.read(spec.source))
    return np.ascontiguousarray(a, dtype=np.float32).reshape(spec.shape)
