"""ggml block quantizers for the converter: the native `edgenano._C` kernels, `gguf.quants` as
fallback. Bytes equal gguf.quants' wherever it has a quantizer; K-quants use our own scale search.
"""

from __future__ import annotations

import math

import gguf
import numpy as np
from gguf import GGMLQuantizationType as QT

try:
    from edgenano import _C
except ImportError:  # source checkout without the extension: gguf.quants covers what it can
    _C = None

# The converter's output types, plus Q4_1/Q5_1 (llama.cpp's fallbacks when 256 does not divide ne0).
TYPES = (
    *(QT.F32, QT.F16, QT.BF16, QT.Q8_0, QT.Q4_0, QT.Q4_1, QT.Q5_0, QT.Q5_1),
    *(QT.Q4_K, QT.Q5_K, QT.Q6_K),
)
K_TYPES = (QT.Q4_K, QT.Q5_K, QT.Q6_K)

# Elements and bytes per block (F32/F16/BF16: one element), from the engine's one format table
# (csrc/ggml/format.h) when the extension is there, so the converter and the engine cannot
# disagree; gguf's table in a source checkout without it (tests hold the two equal).
def _sizes() -> tuple[dict[QT, int], dict[QT, int]]:
    if _C is not None and hasattr(_C, "block_size"):
        return ({t: _C.block_size(int(t)) for t in TYPES}, {t: _C.type_size(int(t)) for t in TYPES})
    return ({t: gguf.GGML_QUANT_SIZES[t][0] for t in TYPES},
            {t: gguf.GGML_QUANT_SIZES[t][1] for t in TYPES})


BLOCK_SIZE, TYPE_SIZE = _sizes()


def native_types() -> frozenset[QT]:
    """Types the compiled extension quantizes (empty without it)."""
    if _C is None or not hasattr(_C, "quant_types"):
        return frozenset()
    return frozenset(QT(t) for t in _C.quant_types())


def bits_per_weight(qtype: QT) -> float:
    return 8.0 * TYPE_SIZE[QT(qtype)] / BLOCK_SIZE[QT(qtype)]


def can_quantize(qtype: QT, n_cols: int) -> bool:
    """Whether rows of n_cols elements split into whole blocks of qtype."""
    return n_cols > 0 and n_cols % BLOCK_SIZE[QT(qtype)] == 0


def row_bytes(qtype: QT, n_cols: int) -> int:
    """Bytes of one quantized row of n_cols elements."""
    qtype = _check_type(qtype)
    if not can_quantize(qtype, n_cols):
        raise ValueError(
            f"row length {n_cols} is not a multiple of the {BLOCK_SIZE[qtype]}-element "
            f"block of {qtype.name}"
        )
    return n_cols // BLOCK_SIZE[qtype] * TYPE_SIZE[qtype]


def quantize(x: np.ndarray, qtype: QT, *, n_threads: int = 0) -> np.ndarray:
    """Quantize float rows (last axis) to ggml blocks: uint8 of shape (*x.shape[:-1], row_bytes).

    For a 2D (rows, cols) array that is (rows, bytes_per_row). n_threads=0 uses every core.
    """
    qtype = _check_type(qtype)
    x = np.ascontiguousarray(x, dtype=np.float32)
    if x.ndim == 0:
        raise ValueError("cannot quantize a scalar; pass an array of rows")
    out_shape = (*x.shape[:-1], row_bytes(qtype, x.shape[-1]))
    if qtype == QT.F32:
        return x.view(np.uint8).reshape(out_shape)
    rows = x.reshape(-1, x.shape[-1])
    if qtype in native_types():
        return _C.quantize(rows, int(qtype), n_threads).reshape(out_shape)
    if qtype in K_TYPES:
        raise NotImplementedError(
            f"{qtype.name} quantization needs the compiled extension edgenano._C "
            "(reinstall edgenano: pip install .)"
        )
    return np.asarray(gguf.quants.quantize(rows, qtype)).view(np.uint8).reshape(out_shape)


def dequantize(data: np.ndarray, qtype: QT, shape, *, n_threads: int = 0) -> np.ndarray:
    """Blocks of qtype (any array holding the raw bytes) -> float32 array of numpy `shape`."""
    qtype = _check_type(qtype)
    shape = tuple(int(s) for s in shape)
    if not shape:
        raise ValueError("shape must have at least one dimension")
    cols = shape[-1]
    rows = math.prod(shape[:-1])
    raw = np.ascontiguousarray(data).reshape(-1).view(np.uint8)
    want = rows * row_bytes(qtype, cols)
    if raw.size != want:
        raise ValueError(f"{qtype.name} data of shape {shape} needs {want} bytes, got {raw.size}")
    if qtype in native_types():
        return _C.dequantize(raw, int(qtype), rows, cols, n_threads).reshape(shape)
    blocks = raw.reshape(rows, -1)
    if qtype == QT.F16:
        return blocks.view(np.float16).astype(np.float32).reshape(shape)
    return np.asarray(gguf.quants.dequantize(blocks, qtype), dtype=np.float32).reshape(shape)


def _check_type(qtype) -> QT:
    qtype = QT(qtype)
    if qtype not in BLOCK_SIZE:
        names = ", ".join(t.name for t in TYPES)
        raise ValueError(f"unsupported quantization type {qtype.name} (supported: {names})")
    return qtype
