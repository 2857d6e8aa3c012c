"""Streaming safetensors reader: headers only up front, then one tensor (or row range) at a time.

Reads with plain file reads into fresh buffers (no whole-file mmap), so resident memory stays at
the size of what is being converted right now. Single files and sharded checkpoints
(`model.safetensors.index.json`) both work; bf16/f16/f32 come back as float32.
"""

from __future__ import annotations

import json
import math
import os
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import ConversionError

INDEX_FILE = "model.safetensors.index.json"
SINGLE_FILE = "model.safetensors"
MAX_HEADER_BYTES = 100 * 1024 * 1024  # the format's own limit

# safetensors dtype -> (bytes per element, numpy dtype of the raw little-endian storage)
DTYPES = {"F32": (4, "<f4"), "F16": (2, "<f2"), "BF16": (2, "<u2")}


@dataclass(frozen=True)
class TensorEntry:
    """Where one tensor's bytes live."""

    name: str
    dtype: str
    shape: tuple[int, ...]
    path: Path
    offset: int  # absolute file offset of the first byte
    nbytes: int

    @property
    def row_elems(self) -> int:
        """A row is the last axis (a 3-D tensor of stacked experts is read as one matrix)."""
        return self.shape[-1] if self.shape else 1

    @property
    def n_rows(self) -> int:
        return math.prod(self.shape[:-1])


class Checkpoint:
    """The tensors of a checkpoint directory, by name; data is read on demand."""

    def __init__(self, hf_dir: str | Path):
        self.dir = Path(hf_dir)
        self.entries: dict[str, TensorEntry] = {}
        for path, wanted in _shard_plan(self.dir):
            self._add_file(path, wanted)

    def _add_file(self, path: Path, wanted: set[str] | None) -> None:
        found = read_header(path)
        if wanted is not None:
            missing = sorted(wanted - found.keys())
            if missing:
                raise ConversionError(
                    f"{path.name} lacks {len(missing)} tensor(s) that {INDEX_FILE} places there, "
                    f"e.g. {missing[0]}")
        for name, entry in found.items():
            if name in self.entries:
                raise ConversionError(
                    f"tensor {name} appears in both {self.entries[name].path.name} and {path.name}")
            self.entries[name] = entry

    def __contains__(self, name: str) -> bool:
        return name in self.entries

    def names(self) -> list[str]:
        return list(self.entries)

    def read(self, name: str) -> np.ndarray:
        """The whole tensor as float32, in its stored shape."""
        e = self.entries[name]
        return self.read_rows(name, 0, e.n_rows).reshape(e.shape)

    def read_rows(self, name: str, start: int, stop: int) -> np.ndarray:
        """Rows [start, stop) of the tensor seen as a (n_rows, last axis) matrix, as a float32
        (stop-start, row_elems) array."""
        e = self.entries[name]
        width, raw_dtype = DTYPES[e.dtype]
        count = (stop - start) * e.row_elems
        buf = np.empty(count, dtype=raw_dtype)
        with open(e.path, "rb") as f:
            f.seek(e.offset + start * e.row_elems * width)
            got = f.readinto(memoryview(buf).cast("B"))
        if got != count * width:
            raise ConversionError(
                f"{e.path} is truncated: tensor {name} ends past the end of the file")
        return _to_float32(buf, e.dtype).reshape(stop - start, e.row_elems)


def _to_float32(buf: np.ndarray, dtype: str) -> np.ndarray:
    if dtype == "BF16":
        return (buf.astype(np.uint32) << 16).view(np.float32)
    if dtype == "F16":
        return buf.astype(np.float32)
    return buf.astype(np.float32, copy=False)


def _shard_plan(hf_dir: Path) -> list[tuple[Path, set[str] | None]]:
    """(file, tensors the index puts there or None) for every safetensors file to read."""
    if not hf_dir.is_dir():
        raise ConversionError(f"{hf_dir} is not a directory")
    index = hf_dir / INDEX_FILE
    if index.is_file():
        return _from_index(index)
    if (hf_dir / SINGLE_FILE).is_file():
        return [(hf_dir / SINGLE_FILE, None)]
    files = sorted(hf_dir.glob("*.safetensors"))
    if files:
        return [(p, None) for p in files]
    hint = " (PyTorch .bin checkpoints are not supported; save with safe_serialization=True)" \
        if any(hf_dir.glob("*.bin")) else ""
    raise ConversionError(f"no {SINGLE_FILE} or {INDEX_FILE} in {hf_dir}{hint}")


def _from_index(index: Path) -> list[tuple[Path, set[str] | None]]:
    try:
        weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ConversionError(f"cannot read the weight_map of {index}: {e}") from e
    by_file: dict[str, set[str]] = {}
    for name, fname in weight_map.items():
        by_file.setdefault(fname, set()).add(name)
    plan = []
    for fname, names in sorted(by_file.items()):
        path = index.parent / fname
        if not path.is_file():
            raise ConversionError(
                f"shard {fname} listed in {index.name} is missing from {index.parent}")
        plan.append((path, names))
    return plan


def read_header(path: Path) -> dict[str, TensorEntry]:
    """Parse and validate one file's header: every tensor's dtype, shape and byte range."""
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise ConversionError(f"{path} is not a safetensors file (shorter than 8 bytes)")
        (n,) = struct.unpack("<Q", head)
        if n > min(MAX_HEADER_BYTES, size - 8):
            raise ConversionError(
                f"{path} is truncated or not a safetensors file (bad header size)")
        try:
            header = json.loads(f.read(n))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise ConversionError(f"{path}: unreadable safetensors header: {e}") from e
    header.pop("__metadata__", None)
    return {name: _entry(path, name, info, 8 + n, size) for name, info in header.items()}


def _entry(path: Path, name: str, info: dict, data_start: int, size: int) -> TensorEntry:
    dtype, shape, (begin, end) = info["dtype"], tuple(info["shape"]), info["data_offsets"]
    if dtype not in DTYPES:
        raise ConversionError(
            f"{path.name}: tensor {name} has dtype {dtype}; only {', '.join(DTYPES)} are supported")
    if end - begin != math.prod(shape) * DTYPES[dtype][0]:
        raise ConversionError(f"{path.name}: tensor {name} has a byte range that does not match "
                              f"its shape {list(shape)} and dtype {dtype}")
    if data_start + end > size:
        raise ConversionError(
            f"{path} is truncated: tensor {name} needs bytes up to {data_start + end} "
            f"but the file has {size}")
    return TensorEntry(name, dtype, shape, path, data_start + begin, end - begin)
