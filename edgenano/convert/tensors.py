"""HF -> GGUF tensors for nemotron_h (SPEC section 3): the plan the writer follows, read from the
layer table (edgenano.layers) and checked against the checkpoint's names and shapes."""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from ..layers import (
    EMBEDDING,
    MATRIX,
    MTP_PREFIX,
    OUTPUT,
    OUTPUT_NORM,
    TOP_LEVEL_HF,
    TRANSFORMS,
    Tensor,
    layer_tensors,
    mtp_tensors,
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
    #                   (0 for experts already stacked in one 3-D checkpoint tensor)

    @property
    def ne(self) -> tuple[int, ...]:
        return tuple(reversed(self.shape))


def expected_rows(c: HybridConfig, has_output: bool,
                  mtp_only: bool = False) -> list[tuple[int, Tensor]]:
    """(layer, tensor) for every tensor the GGUF must hold, in file order (layer -1: global;
    layer n_layer: the MTP block, when c.n_nextn). `mtp_only`: the draft-head file llama.cpp's
    --mtp writes, the MTP block and the global tensors it shares with the model."""
    rows = [(-1, EMBEDDING)]
    for i, kind in enumerate(() if mtp_only else c.layer_kinds):
        rows += [(i, t) for t in layer_tensors(kind, c.dims(i))
                 if t.hf_if is None or getattr(c, t.hf_if)]
    if c.n_nextn:
        rows += [(c.n_layer, t) for t in mtp_tensors(c.dims(c.n_layer))]
    rows.append((-1, OUTPUT_NORM))
    if has_output:
        rows.append((-1, OUTPUT))
    return rows


def hf_name(layer: int, t: Tensor) -> str:
    """The checkpoint name of `t` at `layer`, without the backbone prefix (MTP tensors: whole)."""
    if layer < 0 or t.hf.startswith(MTP_PREFIX):
        return t.hf
    return f"layers.{layer}.{t.hf}"


def gguf_name(layer: int, t: Tensor) -> str:
    return t.gguf if layer < 0 else f"blk.{layer}.{t.gguf}"


def resolve_names(ckpt: Checkpoint, drop_mtp: bool = False) -> dict[str, str]:
    """Local name (backbone prefix stripped; MTP names whole) -> full HF name, refusing ambiguous
    or foreign names. `drop_mtp`: leave the MTP head's tensors out."""
    local: dict[str, str] = {}
    for full in ckpt.names():
        if full.startswith(MTP_PREFIX):
            if drop_mtp:
                continue
            name = full
        else:
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


def plan_tensors(c: HybridConfig, ckpt: Checkpoint, mtp_only: bool = False) -> list[TensorSpec]:
    """Every GGUF tensor, checked against the checkpoint's names and shapes (headers only).
    c.n_nextn says whether the MTP head is written (else its tensors are dropped);
    `mtp_only`: only it and the global tensors (llama.cpp's --mtp)."""
    local = resolve_names(ckpt, drop_mtp=not c.n_nextn)
    has_output = OUTPUT.hf in local or not c.tie_embeddings
    specs, used = [], set()
    for layer, t in expected_rows(c, has_output, mtp_only):
        d = c.dims(max(layer, 0))
        where = "" if layer < 0 else (f" (MTP block {layer})" if layer >= c.n_layer
                                      else f" (layer {layer}, {c.layer_kinds[layer]})")
        stacked = _stacked(local, layer, t)
        names = [hf_name(layer, t).replace("{x}", str(x)) for x in range(d.n_expert)] \
            if t.experts and not stacked else [stacked or _spelling(local, layer, t)]
        for hf in names:
            full = local.get(hf)
            if full is None:
                hint = "; convert with --no-mtp to leave the MTP head out" \
                    if hf.startswith(MTP_PREFIX) else ""
                raise ConversionError(f"checkpoint {ckpt.dir} lacks tensor {hf}{where}{hint}")
            want, got = t.shape(d) if stacked else t.hf_shape_of(d), ckpt.entries[full].shape
            if tuple(got) != tuple(want):
                raise ConversionError(f"tensor {full}{where} has shape {list(got)}, expected "
                                      f"{list(want)} from config.json")
            used.add(hf)
        per_expert = t.experts and not stacked
        source = local[names[0]].replace(names[0], hf_name(layer, t)) if per_expert \
            else local[names[0]]
        specs.append(TensorSpec(gguf_name(layer, t), source, t.shape(d), t.transform,
                                t.rule == MATRIX, layer, d.n_expert if per_expert else 0))
    extra = sorted(set(local) - used)
    if mtp_only:  # the model's own layers stay out of the draft file
        extra = [n for n in extra if n.startswith(MTP_PREFIX)]
    if extra:
        raise ConversionError(f"checkpoint has {len(extra)} tensor(s) that config.json does not "
                              f"explain, e.g. {local[extra[0]]}")
    return specs


def _stacked(local: dict[str, str], layer: int, t: Tensor) -> str | None:
    """The checkpoint's one 3-D tensor holding all of `t`'s experts at `layer`, if it has one
    (transformers' in-memory names; the published checkpoints have one tensor per expert)."""
    names = [hf_name(layer, replace(t, hf=hf)) for hf in t.hf_stacked]
    return next((n for n in names if n in local), None)


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
