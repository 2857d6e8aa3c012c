"""Minimal streaming GGUF v3 writer: header, typed KV pairs and tensor infos, then tensor data
appended piece by piece with the alignment padding the format requires."""

from __future__ import annotations

import struct
from typing import BinaryIO

from gguf import GGUF_DEFAULT_ALIGNMENT, GGUF_MAGIC, GGUF_VERSION, GGUFValueType

from .tokenizer import KV

V = GGUFValueType
SCALAR_FORMATS = {
    V.UINT8: "<B", V.INT8: "<b", V.UINT16: "<H", V.INT16: "<h", V.UINT32: "<I", V.INT32: "<i",
    V.FLOAT32: "<f", V.BOOL: "<?", V.UINT64: "<Q", V.INT64: "<q", V.FLOAT64: "<d",
}


def _string(s: str) -> bytes:
    b = s.encode("utf-8")
    return struct.pack("<Q", len(b)) + b


def _value(value, vtype: GGUFValueType, sub_type: GGUFValueType | None) -> bytes:
    if vtype == V.STRING:
        return _string(value)
    if vtype == V.ARRAY:
        items = b"".join(_value(v, sub_type, None) for v in value)
        return struct.pack("<IQ", sub_type, len(value)) + items
    return struct.pack(SCALAR_FORMATS[vtype], value)


def pad_to(n: int, align: int = GGUF_DEFAULT_ALIGNMENT) -> int:
    return (n + align - 1) // align * align


def write_preamble(f: BinaryIO, kvs: list[KV], infos: list[tuple[str, tuple[int, ...], int, int]]
                   ) -> None:
    """Header, KV section and tensor infos (name, ggml ne, ggml type, nbytes), then the padding
    that aligns the data section. Offsets are contiguous in info order, each one aligned."""
    out = [struct.pack("<IIQQ", GGUF_MAGIC, GGUF_VERSION, len(infos), len(kvs))]
    out += [_string(kv.key) + struct.pack("<I", kv.type) + _value(kv.value, kv.type, kv.sub_type)
            for kv in kvs]
    offset = 0
    for name, ne, ggml_type, nbytes in infos:
        out.append(_string(name) + struct.pack(f"<I{len(ne)}QIQ", len(ne), *ne, ggml_type, offset))
        offset += pad_to(nbytes)
    blob = b"".join(out)
    f.write(blob + bytes(pad_to(len(blob)) - len(blob)))


def write_padding(f: BinaryIO, nbytes: int) -> None:
    """Zero bytes after a tensor of nbytes so the next one starts aligned."""
    f.write(bytes(pad_to(nbytes) - nbytes))
