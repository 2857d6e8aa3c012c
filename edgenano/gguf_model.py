"""Read a nemotron_h GGUF into a typed model description: a validated config and tensor views.

Weights stay in the file (memory-mapped); nothing is copied until `TensorView.dequantize()`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gguf
import numpy as np
from gguf import GGMLQuantizationType as QT
from gguf import GGUFValueType as VT

from .errors import GGUFError, TokenizerError
from .layers import (
    EMBEDDING,
    KINDS,
    LAYER_ARRAYS,
    OUTPUT,
    OUTPUT_NORM,
    Dims,
    kinds_from_arrays,
    layer_tensors,
)

ARCH = "nemotron_h"
ARCH_MOE = "nemotron_h_moe"  # with expert layers (SPEC section 1.4)
ARCHS = (ARCH, ARCH_MOE)
SUPPORTED_VERSIONS = (2, 3)
# Every type gguf.quants can dequantize (it knows every ggml weight format).
SUPPORTED_TYPES = frozenset({QT.F32, QT.F16} | set(gguf.quants._type_traits))

_INT_TYPES = {VT.UINT8, VT.INT8, VT.UINT16, VT.INT16, VT.UINT32, VT.INT32, VT.UINT64, VT.INT64}
_FLOAT_TYPES = {VT.FLOAT32, VT.FLOAT64}


@dataclass(frozen=True)
class ModelConfig:
    """Hyperparameters of a nemotron_h model, as read from GGUF metadata (SPEC section 3)."""

    n_vocab: int
    n_embd: int
    n_layer: int
    layer_kinds: list[str]  # per layer, a kind of edgenano.layers ("mamba", "attention", ...)
    n_ff: list[int]  # per layer: MLP width at "mlp" layers, 0 elsewhere
    n_head: int  # attention query heads
    n_head_kv: list[int]  # per layer: KV heads at "attention" layers, 0 elsewhere
    head_dim: int  # attention head width (key_length == value_length)
    ssm_d_conv: int  # K, conv kernel width
    ssm_d_state: int  # N
    ssm_n_group: int  # G
    ssm_d_inner: int  # D = H * P
    ssm_n_head: int  # H (time_step_rank)
    ssm_head_dim: int  # P = D / H
    eps: float
    n_ctx_train: int
    # Mixture of experts (nemotron_h_moe; zeros without). n_ff holds the routed experts' width at
    # "moe" layers.
    n_expert: int = 0
    n_expert_used: int = 0
    n_expert_shared: int = 0
    n_ff_shexp: int = 0
    moe_latent: int = 0
    expert_weights_norm: bool = False
    expert_weights_scale: float = 0.0  # llama.cpp applies it unless 0 or 1
    n_nextn: int = 0  # MTP draft-head blocks after the layers (not run; their tensors ignored)
    arch: str = ARCH
    bos_id: int | None = None
    eos_id: int | None = None
    pad_id: int | None = None

    @property
    def ssm_conv_dim(self) -> int:
        """Channels through the conv (D + 2GN); the same at every layer (layers.Dims)."""
        return self.dims(0).ssm_conv_dim

    @property
    def ssm_in_dim(self) -> int:
        """Width of in_proj's output (2D + 2GN + H); the same at every layer (layers.Dims)."""
        return self.dims(0).ssm_in_dim

    def dims(self, i: int) -> Dims:
        """Layer i's dimensions, as the layer table's shapes read them."""
        return Dims(n_vocab=self.n_vocab, n_embd=self.n_embd, n_head=self.n_head,
                    n_head_kv=self.n_head_kv[i], head_dim=self.head_dim, n_ff=self.n_ff[i],
                    ssm_n_head=self.ssm_n_head, ssm_d_inner=self.ssm_d_inner,
                    ssm_n_group=self.ssm_n_group, ssm_d_state=self.ssm_d_state,
                    ssm_d_conv=self.ssm_d_conv, n_expert=self.n_expert,
                    n_ff_shexp=self.n_ff_shexp, moe_latent=self.moe_latent)

    @property
    def expert_scale(self) -> float:
        """The factor on the chosen experts' weights (1 where llama.cpp applies none)."""
        return self.expert_weights_scale if self.expert_weights_scale not in (0.0, 1.0) else 1.0


@dataclass(frozen=True)
class TensorView:
    """One tensor of the file. `ne` is ggml order (ne0 first); `shape` is numpy order (reversed).

    `raw` is a read-only uint8 view of the file, shape (rows, bytes per row): a row is one ne0
    vector, so slicing rows slices the tensor along its outer dimension whatever the type.
    """

    name: str
    type: QT
    ne: tuple[int, ...]
    shape: tuple[int, ...]
    offset: int  # absolute byte offset in the file
    nbytes: int
    raw: np.ndarray

    def dequantize(self) -> np.ndarray:
        """float32 array of numpy shape `shape`."""
        out = gguf.quants.dequantize(self.raw, self.type)  # (rows, ne0)
        return np.asarray(out, dtype=np.float32).reshape(self.shape)

    def rows(self, start: int, stop: int) -> TensorView:
        """A view of rows [start, stop) of a 2-D tensor (numpy axis 0), without copying."""
        rb = self.raw.shape[1]
        raw = self.raw[start:stop]
        n = stop - start
        return dataclasses.replace(self, name=f"{self.name}[{start}:{stop}]", ne=(self.ne[0], n),
                                   shape=(n, self.ne[0]), offset=self.offset + start * rb,
                                   nbytes=raw.nbytes, raw=raw)


@dataclass
class GGUFModel:
    """A validated nemotron_h GGUF: config, tensors by name, all metadata, and the file path.

    Files written in other layouts are normalised: a fused `attn_qkv` appears as attn_q/k/v views,
    an absent `output.weight` appears as a view of `token_embd.weight` (`tied_output`).
    """

    path: Path
    version: int
    config: ModelConfig
    tensors: dict[str, TensorView]
    metadata: dict[str, Any]
    tied_output: bool = False
    fused_qkv_layers: list[int] = field(default_factory=list)

    def __getitem__(self, name: str) -> TensorView:
        return self.tensors[name]


class _Truncated(Exception):
    def __init__(self, end: int, size: int, in_data: bool, what: str = ""):
        super().__init__(end, size, in_data)
        self.end, self.size, self.in_data, self.what = end, size, in_data, what


class _Layout(Exception):
    """The tensor table does not describe the data section (the message says how)."""


# ggml's limits (ggml.h): at most 4 dimensions, element counts that fit an int64_t.
_MAX_DIMS, _INT64_MAX = 4, 2**63 - 1


def _check_layout(data_offset: int, alignment: int, size: int, fields) -> None:
    """The tensor table of a GGUF describes its data section exactly, before any view is made.

    llama.cpp's loader (ggml/src/gguf.cpp, gguf_init_from_file_impl, as vendored by
    llama-cpp-python 0.3.36) checks: n_dims <= 4; every ne >= 0 and the element count below
    INT64_MAX; a known type; ne0 a multiple of the type's block size; nbytes without size_t
    overflow; general.alignment a power of two (default 32); the data section starts at the
    header's end padded to the alignment; and each tensor's offset is *exactly* the previous
    tensor's offset plus its nbytes padded to the alignment (the first at 0): offsets are
    contiguous, in table order, which is how both llama.cpp's writer and gguf-py's GGUFWriter
    (our converter) lay them out. We require the same, and more: every tensor ends inside the
    file (llama-model-loader checks that later, per tensor), and nothing but the last tensor's
    padding follows it, so a tensor count one short (the last tensor's data left over, the data
    section read from the wrong start) is an error rather than garbage weights.
    """
    expected, prev = 0, None
    for fld in fields:
        _, name_data, n_dims, dims, raw_type, offset = fld.parts
        name = bytes(name_data).decode("utf-8", errors="replace")
        ne, tid, off = tuple(int(d) for d in dims), int(raw_type[0]), int(offset[0])
        if not 1 <= int(n_dims[0]) <= _MAX_DIMS:
            raise _Layout(f"tensor {name!r} has {int(n_dims[0])} dimensions; ggml allows 1 to "
                          f"{_MAX_DIMS}")
        n_elem = int(np.prod(ne, dtype=object))
        if n_elem > _INT64_MAX:
            raise _Layout(f"tensor {name!r} has an impossible shape {ne} ({n_elem} elements, "
                          "more than an int64 holds)")
        try:
            qtype = QT(tid)
            block, tsize = gguf.GGML_QUANT_SIZES[qtype]
        except (ValueError, KeyError):
            raise _Layout(f"tensor {name!r} has unknown ggml type id {tid}") from None
        if ne[0] % block:
            raise _Layout(f"tensor {name!r} ({qtype.name}) has ne0 {ne[0]}, not a multiple of "
                          f"the {qtype.name} block size {block}")
        nbytes = n_elem // ne[0] * (ne[0] // block) * tsize if ne[0] else 0
        desc = f"{qtype.name} {ne}, {nbytes} bytes at offset {off}"
        if off % alignment:
            raise _Layout(f"tensor {name!r} ({desc}) is not aligned to {alignment} bytes")
        start, end = data_offset + off, data_offset + off + nbytes
        if nbytes > size - data_offset:
            raise _Layout(f"tensor {name!r} ({desc}) needs more bytes than the file's whole data "
                          f"section ({size - data_offset}): its shape or type is wrong")
        if end > size:
            if off == expected:
                raise _Truncated(end, size, True, f" (tensor {name!r}, {desc})")
            raise _Layout(f"tensor {name!r} ({desc}) lies past the end of the file: its data "
                          f"needs bytes [{start}, {end}) of {size}")
        if off != expected:
            if prev is None:  # the first tensor
                what = "should start at offset 0"
            else:
                p = f"tensor {prev[0]!r} ({prev[1]})"
                what = (f"overlaps the previous {p}, which ends at offset {prev[2]}"
                        if off < prev[2] else f"should start at offset {expected}, where the "
                        f"previous {p} ends (padded to {alignment})")
            raise _Layout(f"tensor {name!r} ({desc}) {what}: a tensor's type or shape does not "
                          "match its data, or its offset was edited")
        prev = (name, desc, off + nbytes)
        expected = off + -(-nbytes // alignment) * alignment
    tail = size - data_offset - (prev[2] if prev else 0)
    if prev and tail >= alignment:
        raise _Layout(f"{tail} bytes of data follow the last tensor {prev[0]!r}, more than its "
                      f"padding: the header lists {len(fields)} tensors, fewer than the file "
                      "holds (a wrong tensor count?)")


class _Reader(gguf.GGUFReader):
    """GGUFReader that reports a read past the end of the file instead of failing obscurely,
    and checks the tensor table against the data section before building any view."""

    def _build_tensors(self, start_offs, fields):
        _check_layout(int(start_offs), int(self.alignment), len(self.data), fields)
        return super()._build_tensors(start_offs, fields)

    def _get(self, offset, dtype, count=1, override_order=None):
        end = int(offset) + np.dtype(dtype).itemsize * int(count)
        if end > len(self.data):
            raise _Truncated(end, len(self.data), "data_offset" in self.__dict__)
        return super()._get(offset, dtype, count, override_order)

    def _get_field_parts(self, orig_offs, raw_type):
        """Arrays in bulk: GGUFReader reads them element by element, which takes half a minute
        for a 131k-token vocabulary. Produces the same parts for `ReaderField.contents()`."""
        if raw_type != VT.ARRAY or self.byte_order != "I":
            return super()._get_field_parts(orig_offs, raw_type)
        itype, alen = self._get(orig_offs, np.uint32), self._get(orig_offs + 4, np.uint64)
        n, sub, offs = int(alen[0]), int(itype[0]), orig_offs + 12
        nptype = self.gguf_scalar_to_np.get(VT(sub)) if sub in VT._value2member_map_ else None
        if n and nptype is not None:
            vals = self._get(offs, nptype, n)
            return 12 + vals.nbytes, [itype, alen, vals], [2], [VT.ARRAY, VT(sub)]
        if not n or sub != VT.STRING:
            return super()._get_field_parts(orig_offs, raw_type)
        mv, base, parts = memoryview(self.data), self.data.view(np.ndarray), [itype, alen]
        for _ in range(n):
            length = int.from_bytes(mv[offs:offs + 8], "little")
            if offs + 8 + length > len(mv):
                raise _Truncated(offs + 8 + length, len(mv), False)
            parts += [base[offs:offs + 8].view(np.uint64), base[offs + 8:offs + 8 + length]]
            offs += 8 + length
        return offs - orig_offs, parts, list(range(3, len(parts), 2)), [VT.ARRAY, VT.STRING]


def load_gguf(path: str | Path) -> GGUFModel:
    """Open, validate and describe a nemotron_h GGUF. Raises GGUFError on anything unusable."""
    path = Path(path)
    reader, version = _open(path)
    meta = _metadata(path, reader)
    arch = meta.get("general.architecture")
    if arch is None:
        raise GGUFError(f"{path}: no general.architecture key; is this a model file?")
    if arch not in ARCHS:
        raise GGUFError(f"{path}: this file is {arch!r}; edgenano runs {ARCH!r} (Nemotron-H) "
                        f"and {ARCH_MOE!r}")
    _check_tokenizer_types(path, reader)
    config = _config(path, reader, meta, arch)
    tensors, tied, fused = _tensors(path, reader, config)
    return GGUFModel(path, version, config, tensors, meta, tied, fused)


# ---------------------------------------------------------------------------------------------
# File and metadata


def open_reader(path: str | Path) -> gguf.GGUFReader:
    """A checked reader of any GGUF (header, metadata, tensor table against the data section),
    or GGUFError; the state files use it too."""
    return _open(Path(path))[0]


def _open(path: Path) -> tuple[gguf.GGUFReader, int]:
    if not path.is_file():
        raise GGUFError(f"{path}: no such file")
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(8)
    if head[:4] != b"GGUF":
        hint = " (an old GGML/GGJT file: re-convert it)" if head[:4] in (b"lmgg", b"tjgg") else ""
        raise GGUFError(f"{path}: not a GGUF file (bad magic {head[:4]!r}){hint}; "
                        "convert a Hugging Face checkpoint with `edgenano convert`")
    if size < 24:
        raise GGUFError(f"{path}: truncated GGUF ({size} bytes, the header alone needs 24)")
    version = int.from_bytes(head[4:8], "little")
    if version and not version & 0xFFFF:
        raise GGUFError(f"{path}: a big-endian GGUF; edgenano reads little-endian files only "
                        "(convert the checkpoint again with `edgenano convert`)")
    if version not in SUPPORTED_VERSIONS:
        raise GGUFError(f"{path}: GGUF version {version} is not supported "
                        f"(supported: {', '.join(map(str, SUPPORTED_VERSIONS))})")
    try:
        return _Reader(path), version
    except _Truncated as e:
        where = "tensor data" if e.in_data else "header"
        raise GGUFError(f"{path}: truncated file: the {where} needs {e.end} bytes but the file "
                        f"has {e.size}{e.what}; the download or conversion was cut short") from None
    except _Layout as e:
        raise GGUFError(f"{path}: bad tensor layout: {e}") from None
    except (ValueError, KeyError, IndexError, UnicodeDecodeError, OverflowError) as e:
        raise GGUFError(f"{path}: corrupt GGUF header: {e}") from None


def _metadata(path: Path, reader: gguf.GGUFReader) -> dict[str, Any]:
    meta = {}
    for key, fld in reader.fields.items():
        if key.startswith("GGUF."):
            continue
        try:
            meta[key] = fld.contents()
        except (UnicodeDecodeError, ValueError) as e:
            raise GGUFError(f"{path}: metadata key {key!r} cannot be read: {e}") from None
    return meta


class _Keys:
    """Typed access to the arch-prefixed keys, with errors that name the key and the file."""

    def __init__(self, path: Path, reader: gguf.GGUFReader, meta: dict[str, Any]):
        self.path, self.fields, self.meta = path, reader.fields, meta

    def _field(self, key: str, required: bool = True):
        fld = self.fields.get(key)
        if fld is None and required:
            raise GGUFError(f"{self.path}: missing required metadata key {key!r} "
                            "(re-convert the model with `edgenano convert`)")
        return fld

    def int(self, key: str, required: bool = True, minimum: int = 1) -> int | None:
        fld = self._field(key, required)
        if fld is None:
            return None
        if len(fld.types) != 1 or fld.types[0] not in _INT_TYPES:
            raise GGUFError(f"{self.path}: key {key!r} must be an integer, found {_tname(fld)}")
        v = int(self.meta[key])
        if v < minimum:
            raise GGUFError(f"{self.path}: key {key!r} = {v} must be >= {minimum}")
        return v

    def float(self, key: str, required: bool = True) -> float | None:
        fld = self._field(key, required)
        if fld is None:
            return None
        if len(fld.types) != 1 or fld.types[0] not in _FLOAT_TYPES:
            raise GGUFError(f"{self.path}: key {key!r} must be a float, found {_tname(fld)}")
        return float(self.meta[key])

    def int_array(self, key: str, length: int) -> list[int]:
        fld = self._field(key)
        if fld.types[0] != VT.ARRAY:
            raise GGUFError(f"{self.path}: key {key!r} must be a per-layer array of {length} "
                            f"integers (one per block), found a scalar {_tname(fld)}")
        if len(fld.types) < 2 or fld.types[1] not in _INT_TYPES:
            raise GGUFError(f"{self.path}: key {key!r} must hold integers, found {_tname(fld)}")
        vals = [int(v) for v in self.meta[key]]
        if len(vals) != length:
            raise GGUFError(f"{self.path}: key {key!r} has {len(vals)} entries but block_count "
                            f"is {length}; it needs one per layer")
        if min(vals) < 0:
            raise GGUFError(f"{self.path}: key {key!r} has a negative entry: {vals}")
        return vals


# The tokenizer's keys and their GGUF types (llama.cpp's llama-vocab.cpp reads the same): a key
# of another type is an error naming it here, not a TypeError in the tokenizer later.
_TOKENIZER_TYPES = {
    "tokenizer.ggml.model": ({VT.STRING},),
    "tokenizer.ggml.pre": ({VT.STRING},),
    "tokenizer.ggml.tokens": ({VT.ARRAY}, {VT.STRING}),
    "tokenizer.ggml.merges": ({VT.ARRAY}, {VT.STRING}),
    "tokenizer.ggml.token_type": ({VT.ARRAY}, _INT_TYPES),
    "tokenizer.ggml.scores": ({VT.ARRAY}, _FLOAT_TYPES),
    "tokenizer.ggml.bos_token_id": (_INT_TYPES,),
    "tokenizer.ggml.eos_token_id": (_INT_TYPES,),
    "tokenizer.ggml.padding_token_id": (_INT_TYPES,),
    "tokenizer.ggml.unknown_token_id": (_INT_TYPES,),
    "tokenizer.ggml.add_bos_token": ({VT.BOOL},),
    "tokenizer.ggml.add_eos_token": ({VT.BOOL},),
    "tokenizer.chat_template": ({VT.STRING},),
}


def _check_tokenizer_types(path: Path, reader: gguf.GGUFReader) -> None:
    for key, want in _TOKENIZER_TYPES.items():
        fld = reader.fields.get(key)
        if fld is None:
            continue
        types = list(fld.types)
        if len(types) != len(want) or any(t not in w for t, w in zip(types, want)):
            need = "/".join("|".join(sorted(t.name for t in w)) for w in want)
            raise TokenizerError(f"{path}: key {key!r} must be {need}, found {_tname(fld)}; "
                                 "the file's vocabulary is damaged (re-convert it)")


def _tname(fld) -> str:
    return "/".join(t.name for t in fld.types) or "nothing"


def _config(path: Path, reader: gguf.GGUFReader, meta: dict[str, Any],
            arch: str = ARCH) -> ModelConfig:
    k = _Keys(path, reader, meta)
    a = arch + "."
    # Blocks past n_layer are a multi-token-prediction draft head (nextn_predict_layers, Super):
    # llama.cpp skips them unless asked, and so do we.
    n_all = k.int(a + "block_count")
    n_nextn = k.int(a + "nextn_predict_layers", required=False, minimum=0) or 0
    if n_nextn >= n_all:
        raise GGUFError(f"{path}: nextn_predict_layers {n_nextn} leaves none of the "
                        f"{n_all} blocks for the model")
    n_layer = n_all - n_nextn
    arrays = {key: k.int_array(a + key, n_all)[:n_layer] for key in LAYER_ARRAYS}
    n_ff, n_head_kv = arrays["feed_forward_length"], arrays["attention.head_count_kv"]
    moe = _moe_keys(path, k, a, meta)
    kinds = _layer_kinds(path, arrays, moe["n_expert"] > 0)
    if moe["n_expert"] > 0:  # the routed experts' width, as llama.cpp's loader takes it
        n_ff_exp = k.int(a + "expert_feed_forward_length", required=False)
        n_ff = [(n_ff_exp or f // moe["n_expert_used"]) if kind == "moe" else f
                for f, kind in zip(n_ff, kinds, strict=True)]
    n_head = k.int(a + "attention.head_count", minimum=0 if "attention" not in kinds else 1)
    n_embd = k.int(a + "embedding_length")
    head_dim = k.int(a + "attention.key_length", required=False)
    if head_dim is None:  # llama.cpp's default when the key is absent
        head_dim = n_embd // max(n_head, 1)
    v_len = k.int(a + "attention.value_length", required=False)
    if v_len is not None and v_len != head_dim:
        raise GGUFError(f"{path}: attention.key_length {head_dim} != value_length {v_len}; "
                        "nemotron_h uses one head width")
    eps = k.float(a + "attention.layer_norm_rms_epsilon", required=False)
    if eps is None:
        eps = k.float(a + "attention.layer_norm_epsilon")
    d_inner, n_group = k.int(a + "ssm.inner_size"), k.int(a + "ssm.group_count")
    ssm_heads = k.int(a + "ssm.time_step_rank")
    cfg = ModelConfig(
        n_vocab=_n_vocab(path, reader, k),
        n_embd=n_embd, n_layer=n_layer, layer_kinds=kinds, n_ff=n_ff, n_head=n_head,
        n_head_kv=n_head_kv, head_dim=head_dim,
        ssm_d_conv=k.int(a + "ssm.conv_kernel"), ssm_d_state=k.int(a + "ssm.state_size"),
        ssm_n_group=n_group, ssm_d_inner=d_inner, ssm_n_head=ssm_heads,
        ssm_head_dim=d_inner // ssm_heads, eps=eps,
        n_ctx_train=k.int(a + "context_length"), arch=arch, n_nextn=n_nextn, **moe,
        bos_id=k.int("tokenizer.ggml.bos_token_id", required=False, minimum=0),
        eos_id=k.int("tokenizer.ggml.eos_token_id", required=False, minimum=0),
        pad_id=k.int("tokenizer.ggml.padding_token_id", required=False, minimum=0),
    )
    _check_divisibility(path, cfg)
    return cfg


def _moe_keys(path: Path, k: _Keys, a: str, meta: dict[str, Any]) -> dict[str, Any]:
    """The expert keys of a nemotron_h_moe file as llama.cpp reads them: expert_count <= 1 means
    none (every feed-forward layer dense)."""
    n_expert = k.int(a + "expert_count", required=False, minimum=0) or 0
    if n_expert <= 1:
        return dict(n_expert=0)
    used = k.int(a + "expert_used_count", required=False, minimum=1)
    if used is None or used > n_expert:
        raise GGUFError(f"{path}: expert_used_count {used} must lie in [1, expert_count "
                        f"{n_expert}]")
    groups = k.int(a + "expert_group_count", required=False, minimum=0) or 1
    if groups > 1:
        raise GGUFError(f"{path}: expert_group_count {groups}: group-limited routing is not "
                        "supported")
    norm = meta.get(a + "expert_weights_norm", False)
    return dict(
        n_expert=n_expert, n_expert_used=used,
        n_expert_shared=k.int(a + "expert_shared_count", required=False, minimum=0) or 0,
        n_ff_shexp=k.int(a + "expert_shared_feed_forward_length", minimum=1),
        moe_latent=k.int(a + "moe_latent_size", required=False, minimum=0) or 0,
        expert_weights_norm=bool(norm),
        expert_weights_scale=k.float(a + "expert_weights_scale", required=False) or 0.0,
    )


def _layer_kinds(path: Path, arrays: dict[str, list[int]], experts: bool = False) -> list[str]:
    """SPEC section 3: the layer list is data, derived once from the per-layer arrays (and then
    checked against each layer's tensors, `_check_layers`)."""
    try:
        return kinds_from_arrays(arrays, experts)
    except ValueError as e:
        raise GGUFError(f"{path}: {e}") from None


def _n_vocab(path: Path, reader: gguf.GGUFReader, k: _Keys) -> int:
    emb = next((t for t in reader.tensors if t.name == "token_embd.weight"), None)
    if emb is None:
        raise GGUFError(f"{path}: missing tensor 'token_embd.weight'")
    if len(emb.shape) != 2:
        raise GGUFError(f"{path}: token_embd.weight must be 2-D, has ne {tuple(emb.shape)}")
    n_vocab = int(emb.shape[1])
    declared = k.int(k.meta["general.architecture"] + ".vocab_size", required=False)
    if declared is not None and declared != n_vocab:
        raise GGUFError(f"{path}: vocab_size {declared} != token_embd rows {n_vocab}")
    tokens = k.meta.get("tokenizer.ggml.tokens")  # an array of strings (_check_tokenizer_types)
    if tokens is not None and len(tokens) != n_vocab:
        raise GGUFError(f"{path}: tokenizer has {len(tokens)} tokens but token_embd has "
                        f"{n_vocab} rows")
    for key in ("bos_token_id", "eos_token_id", "padding_token_id"):
        v = k.meta.get("tokenizer.ggml." + key)
        if v is not None and not 0 <= int(v) < n_vocab:
            raise TokenizerError(f"{path}: key 'tokenizer.ggml.{key}' = {v} is not a token id "
                                 f"(the vocabulary has {n_vocab})")
    return n_vocab


def _check_divisibility(path: Path, c: ModelConfig) -> None:
    rules = [
        (c.ssm_d_inner % c.ssm_n_head == 0, "ssm.inner_size must be a multiple of time_step_rank"),
        (c.ssm_n_head % c.ssm_n_group == 0, "ssm.time_step_rank must be a multiple of group_count"),
    ]
    for i, kind in enumerate(c.layer_kinds):
        if kind == "attention":
            rules.append((c.n_head % c.n_head_kv[i] == 0,
                          f"attention.head_count {c.n_head} must be a multiple of head_count_kv "
                          f"{c.n_head_kv[i]} (layer {i})"))
    for ok, msg in rules:
        if not ok:
            raise GGUFError(f"{path}: {msg}")


# ---------------------------------------------------------------------------------------------
# Tensors


def _expected(c: ModelConfig, i: int) -> dict[str, list[tuple[int, ...]]]:
    """Accepted ggml shapes (ne order) of layer i's tensors, from the layer table; the first is
    what we write."""
    d = c.dims(i)
    return {f"blk.{i}.{t.gguf}": [tuple(reversed(s)) for s in t.shapes(d)]
            for t in layer_tensors(c.layer_kinds[i], d)}


def _view(path: Path, reader: gguf.GGUFReader, t) -> TensorView:
    try:
        qtype = QT(int(t.tensor_type))
    except ValueError:
        qtype = None
    if qtype not in SUPPORTED_TYPES:
        tname = getattr(qtype or t.tensor_type, "name", str(t.tensor_type))
        raise GGUFError(f"{path}: tensor {t.name!r} has type {tname}, which edgenano cannot "
                        "read; re-quantize it to a standard ggml type")
    ne = tuple(int(d) for d in t.shape)
    start = int(t.data_offset)
    if (start - reader.data_offset) % reader.alignment:
        raise GGUFError(f"{path}: tensor {t.name!r} data is not aligned to {reader.alignment}")
    block, size = gguf.GGML_QUANT_SIZES[qtype]
    if ne[0] % block:
        raise GGUFError(f"{path}: tensor {t.name!r} rows of {ne[0]} are not a multiple of the "
                        f"{qtype.name} block size {block}")
    rows, row_bytes = int(np.prod(ne[1:], dtype=np.int64)), ne[0] // block * size
    raw = reader.data[start:start + rows * row_bytes].view(np.uint8).reshape(rows, row_bytes)
    return TensorView(t.name, qtype, ne, tuple(reversed(ne)), start, raw.nbytes, raw)


def _tensors(path: Path, reader: gguf.GGUFReader, c: ModelConfig):
    views = {t.name: _view(path, reader, t) for t in reader.tensors}
    if c.n_nextn:
        _drop_mtp(path, views, c)
    fused = _split_fused(path, views, c)
    tied = OUTPUT.gguf not in views
    d = c.dims(0)
    expected = {t.gguf: [tuple(reversed(t.shape(d)))] for t in (EMBEDDING, OUTPUT_NORM, OUTPUT)}
    for i in range(c.n_layer):
        layer = _expected(c, i)
        _check_layer(path, views, c, i, layer)
        expected.update(layer)
    if tied:
        views[OUTPUT.gguf] = dataclasses.replace(views[EMBEDDING.gguf], name=OUTPUT.gguf)
    for name, shapes in expected.items():
        _check_shape(path, views, name, shapes)
    unknown = sorted(set(views) - set(expected))
    if unknown:
        raise GGUFError(f"{path}: unexpected tensors for this layer layout: {unknown[:5]}"
                        f"{' ...' if len(unknown) > 5 else ''}")
    return views, tied, fused


def _drop_mtp(path: Path, views: dict[str, TensorView], c: ModelConfig) -> None:
    """Remove the MTP blocks' tensors (blk.N. with N >= n_layer), refusing a file that holds
    only the draft head (llama.cpp's --mtp output: no model layers)."""
    if not any(n.startswith("blk.0.") for n in views):
        raise GGUFError(f"{path}: this file holds only a multi-token-prediction draft head "
                        f"(nextn_predict_layers {c.n_nextn}, no model layers), as llama.cpp's "
                        "converter writes with --mtp; edgenano runs the model file itself")
    for name in list(views):
        block = name.split(".", 2)[1] if name.startswith("blk.") else ""
        if block.isdigit() and int(block) >= c.n_layer:
            del views[name]


def _check_layer(path: Path, views, c: ModelConfig, i: int, layer: dict) -> None:
    """Layer i's tensors are exactly its kind's (the kind came from the per-layer arrays)."""
    p = f"blk.{i}."
    have = {n for n in views if n.startswith(p)}
    missing, extra = sorted(set(layer) - have), sorted(have - set(layer))
    if not (missing or extra):
        return
    why = ", ".join(f"{key.rsplit('.', 1)[-1]} {getattr(c, attr)[i]}"
                    for key, attr in LAYER_ARRAYS.items())
    found = [f"missing tensor {', '.join(map(repr, missing))}"] if missing else []
    if extra:
        found.append(f"unexpected tensors {extra}")
    raise GGUFError(f"{path}: layer {i} is {c.layer_kinds[i]} by its per-layer metadata "
                    f"({why}), but its tensors do not match that kind: {'; '.join(found)}")


def _split_fused(path: Path, views: dict[str, TensorView], c: ModelConfig) -> list[int]:
    """Fused tensors of others' files (attn_qkv) become row views of their parts; the layers
    that had one."""
    layers = []
    for i in range(c.n_layer):
        for t in (t for k in KINDS.values() for t in k.fused if f"blk.{i}.{t}" in views):
            _split(path, views, c, i, t)
            layers.append(i)
    return layers


def _split(path: Path, views: dict[str, TensorView], c: ModelConfig, i: int, name: str) -> None:
    """blk.i.<fused> ({E, sum of the parts' rows}) becomes one row view per part."""
    p, kind = f"blk.{i}.", next(k for k in KINDS.values() if name in k.fused)
    fused = views.pop(p + name)
    parts = [next(t for t in kind.tensors if t.gguf == part) for part in kind.fused[name]]
    rows = [t.shape(c.dims(i))[0] for t in parts]
    want = (c.n_embd, sum(rows))
    if c.layer_kinds[i] != kind.name or fused.ne != want:
        raise GGUFError(f"{path}: tensor {fused.name!r} has ne {fused.ne}, expected {want} at "
                        f"an {kind.name} layer")
    start = 0
    for t, n in zip(parts, rows, strict=True):
        if p + t.gguf in views:
            raise GGUFError(f"{path}: layer {i} has both {name.split('.')[0]} and "
                            f"{t.gguf.split('.')[0]}")
        views[p + t.gguf] = dataclasses.replace(fused.rows(start, start + n), name=p + t.gguf)
        start += n


def _check_shape(path: Path, views, name: str, shapes: list[tuple[int, ...]]) -> None:
    t = views.get(name)
    if t is None:
        raise GGUFError(f"{path}: missing tensor {name!r} (the file is incomplete or was written "
                        "for another layer layout)")
    if t.ne not in shapes:
        raise GGUFError(f"{path}: tensor {name!r} has ggml shape {t.ne}, but the metadata "
                        f"implies {shapes[0]}")
