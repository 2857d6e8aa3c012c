"""HF -> GGUF tensors for nemotron_h (SPEC section 3): the plan the writer follows, read from the
layer table (edgenano.layers) and checked against the checkpoint's names and shapes."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..layers import (
    EMBEDDING,
    MATRIX,
    OUTPUT,
    OUTPUT_NORM,
    TOP_LEVEL_HF,
    TRANSFORMS,
    Tensor,
    layer_tensors,
)
from .config import HybridConfig
from .errors import ConversionError
from .safetensors_io import Checkpoint

# Prefixes the backbone's tensors carry in shipped checkpoints (older/PEFT files use model.*).
PREFIXES = ("backbone.", "model.")


@dataclass(frozen=True)
class TensorSpec:
    """One GGUF tensor: where it comes from and what it becomes (type chosen later)."""

    name: str  # GGUF name
    source: str  # full HF tensor name
    shape: tuple[int, ...]  # GGUF numpy shape; ggml ne is reversed
    transform: str
    matrix: bool  # quantizable 2-D weight; everything else stays F32
    layer: int  # -1 for global tensors
    experts: int = 0  # > 0: stacked from this many tensors, `source` with {x} for the expert

    @property
    def ne(self) -> tuple[int, ...]:
        return tuple(reversed(self.shape))


def expected_rows(c: HybridConfig, has_output: bool) -> list[tuple[int, Tensor]]:
    """(layer, tensor) for every tensor the GGUF must hold, in file order (layer -1: global)."""
    rows = [(-1, EMBEDDING)]
    for i, kind in enumerate(c.layer_kinds):
        rows += [(i, t) for t in layer_tensors(kind, c.dims(i))
                 if t.hf_if is None or getattr(c, t.hf_if)]
    rows.append((-1, OUTPUT_NORM))
    if has_output:
        rows.append((-1, OUTPUT))
    return rows


def hf_name(layer: int, t: Tensor) -> str:
    """The checkpoint name of `t` at `layer`, without the backbone prefix."""
    return t.hf if layer < 0 else f"layers.{layer}.{t.hf}"


def gguf_name(layer: int, t: Tensor) -> str:
    return t.gguf if layer < 0 else f"blk.{layer}.{t.gguf}"


# Multi-token-prediction layers (Super): a draft head our engines do not run; dropped, as
# llama.cpp's converter does with --no-mtp.
MTP_PREFIX = "mtp."


def resolve_names(ckpt: Checkpoint, drop_mtp: bool = False) -> dict[str, str]:
    """Local name (prefix stripped) -> full HF name, refusing ambiguous or foreign names."""
    local: dict[str, str] = {}
    for full in ckpt.names():
        if drop_mtp and full.startswith(MTP_PREFIX):
            continue
        name = full if full in TOP_LEVEL_HF else _strip_prefix(full)
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
    local = resolve_names(ckpt, drop_mtp=c.n_nextn > 0)
    has_output = OUTPUT.hf in local or not c.tie_embeddings
    specs, used = [], set()
    for layer, t in expected_rows(c, has_output):
        d = c.dims(max(layer, 0))
        where = "" if layer < 0 else f" (layer {layer}, {c.layer_kinds[layer]})"
        names = [hf_name(layer, t).replace("{x}", str(x)) for x in range(d.n_expert)] \
            if t.experts else [_spelling(local, layer, t)]
        for hf in names:
            full = local.get(hf)
            if full is None:
                raise ConversionError(f"checkpoint {ckpt.dir} lacks tensor {hf}{where}")
            want, got = t.hf_shape_of(d), ckpt.entries[full].shape
            if tuple(got) != tuple(want):
                raise ConversionError(f"tensor {full}{where} has shape {list(got)}, expected "
                                      f"{list(want)} from config.json")
            used.add(hf)
        source = local[names[0]].replace(names[0], hf_name(layer, t)) if t.experts \
            else local[names[0]]
        specs.append(TensorSpec(gguf_name(layer, t), source, t.shape(d), t.transform,
                                t.rule == MATRIX, layer, d.n_expert if t.experts else 0))
    extra = sorted(set(local) - used)
    if extra:
        raise ConversionError(f"checkpoint has {len(extra)} tensor(s) that config.json does not "
                              f"explain, e.g. {local[extra[0]]}")
    return specs


def _spelling(local: dict[str, str], layer: int, t: Tensor) -> str:
    """The checkpoint's spelling of `t` at `layer` (its first, when it has none of them)."""
    names = [hf_name(layer, Tensor(hf, t.gguf, t.shape)) for hf in (t.hf, *t.hf_also)]
    return next((n for n in names if n in local), names[0])


def expert_source(spec: TensorSpec, x: int) -> str:
    """The checkpoint tensor of expert x of a stacked spec."""
    return spec.source.replace("{x}", str(x))


def load_small(ckpt: Checkpoint, spec: TensorSpec) -> np.ndarray:
    """A whole (non-matrix) tensor, transformed and reshaped to its GGUF shape, float32."""
    a = TRANSFORMS[spec.transform](ckpt.read(spec.source))
    return np.ascontiguousarray(a, dtype=np.float32).reshape(spec.shape)
