"""Chat state files: a GGUF holding a session's conv, SSM and KV tensors, its tokens and messages,
and the identity of the model that made them (so loading into another model is refused)."""

from __future__ import annotations

import errno
import hashlib
import json
import os
from pathlib import Path

import gguf
import numpy as np
from gguf import GGMLQuantizationType as QT
from gguf import GGUFValueType as VT

from .errors import StateFileError

ARCH = "edgenano_state"
VERSION = 1
_K = "edgenano_state."


def model_fingerprint(gguf_model) -> str:
    """A hash of what makes two GGUFs the same model: config, tensor table and a sample of the
    weights (the first KiB of every tensor). Quantizing to another type changes it."""
    h = hashlib.sha256(repr(gguf_model.config).encode())
    for name in sorted(gguf_model.tensors):
        t = gguf_model.tensors[name]
        h.update(f"{name}:{t.type.name}:{t.ne}".encode())
        h.update(np.asarray(t.raw).reshape(-1)[:1024].tobytes())
    return h.hexdigest()


def save(path: str | Path, *, fingerprint: str, backend: str, tokens: list[int],
         messages: list[dict], settings: dict, tensors: dict[str, np.ndarray]) -> Path:
    """Write atomically (temporary file, then rename)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    w = gguf.GGUFWriter(str(tmp), ARCH)
    w.add_uint32(_K + "version", VERSION)
    w.add_string(_K + "model_fingerprint", fingerprint)
    w.add_string(_K + "backend", backend)
    w.add_string(_K + "messages", json.dumps(messages, ensure_ascii=False))
    w.add_string(_K + "settings", json.dumps(settings))
    w.add_array(_K + "tokens", [int(t) for t in tokens] or [0])
    w.add_uint32(_K + "n_tokens", len(tokens))
    for name, arr in tensors.items():
        w.add_tensor(name, np.ascontiguousarray(arr))
    try:
        w.write_header_to_file()
        w.write_kv_data_to_file()
        w.write_tensors_to_file()
        w.close()
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


# Each key's GGUF value type: anything else is a damaged (or forged) file.
_INTS = {VT.UINT8, VT.INT8, VT.UINT16, VT.INT16, VT.UINT32, VT.INT32, VT.UINT64, VT.INT64}
_FIELDS = {
    "general.architecture": ({VT.STRING},), _K + "version": (_INTS,),
    _K + "model_fingerprint": ({VT.STRING},), _K + "backend": ({VT.STRING},),
    _K + "messages": ({VT.STRING},), _K + "settings": ({VT.STRING},),
    _K + "tokens": ({VT.ARRAY}, _INTS), _K + "n_tokens": (_INTS,),
}
# What save() writes: float32 recurrent and reference KV state, int8 native KV rows and llama.cpp
# blobs, the int32 KV type id.
_TENSOR_TYPES = {QT.F32, QT.I8, QT.I32}
DAMAGED = "the file is damaged or was not written by edgenano; save the session again"


def load(path: str | Path, *, fingerprint: str, backend: str) -> dict:
    """Read a state file, checking it belongs to this model and backend. A file that is not a
    sound edgenano state file is a StateFileError saying what is wrong; a missing one is a
    FileNotFoundError. The arrays are checked against the model by Model.import_state."""
    path = Path(path)
    r = _open(path)

    def get(key):
        f = r.fields.get(key)
        if f is None:
            raise StateFileError(f"{path}: not an edgenano state file (no {key})")
        want = _FIELDS[key]
        if len(f.types) != len(want) or any(t not in w for t, w in zip(f.types, want)):
            kind = "/".join(t.name for t in f.types)
            raise StateFileError(f"{path}: key {key!r} has the wrong type ({kind}); {DAMAGED}")
        try:
            return f.contents()
        except UnicodeDecodeError:
            raise StateFileError(f"{path}: key {key!r} is not UTF-8 text; {DAMAGED}") from None

    if get("general.architecture") != ARCH:
        raise StateFileError(f"{path}: not an edgenano state file")
    if get(_K + "version") != VERSION:
        raise StateFileError(f"{path}: state format {get(_K + 'version')}, expected {VERSION}")
    if get(_K + "model_fingerprint") != fingerprint:
        raise StateFileError(f"{path} was saved from a different model (or quantization); load it "
                             "with the GGUF that created it")
    if get(_K + "backend") != backend:
        raise StateFileError(f"{path} holds a {get(_K + 'backend')!r} backend state; open the "
                             f"model with backend={get(_K + 'backend')!r} to load it")
    n, tokens = int(get(_K + "n_tokens")), [int(t) for t in get(_K + "tokens")]
    if n > len(tokens) or (n < len(tokens) and not (n == 0 and tokens == [0])):
        raise StateFileError(f"{path}: n_tokens is {n} but the file holds {len(tokens)} tokens; "
                             f"{DAMAGED}")
    return {"tokens": tokens[:n], "messages": _json(path, get(_K + "messages"), "messages", list),
            "settings": _json(path, get(_K + "settings"), "settings", dict),
            "tensors": _tensors(path, r)}


def _open(path: Path) -> gguf.GGUFReader:
    """The file's reader (edgenano's, which checks the tensor table against the data section)."""
    from .errors import GGUFError
    from .gguf_model import open_reader

    if not path.exists():
        raise FileNotFoundError(errno.ENOENT, "no such state file", str(path))
    with open(path, "rb") as f:
        magic = f.read(4)
    if magic != b"GGUF":
        raise StateFileError(f"{path}: not an edgenano state file (not a GGUF file)")
    try:
        return open_reader(path)
    except GGUFError as e:
        why = str(e).removeprefix(f"{path}: ")
        raise StateFileError(f"{path}: not a readable edgenano state file: {why}") from None


def _json(path: Path, text: str, key: str, kind: type):
    try:
        value = json.loads(text)
    except (ValueError, RecursionError) as e:  # JSONDecodeError, a huge number, deep nesting
        raise StateFileError(f"{path}: the saved {key} are not valid JSON ({e}); {DAMAGED}") \
            from None
    if not isinstance(value, kind):
        raise StateFileError(f"{path}: the saved {key} must be a JSON {kind.__name__}, found "
                             f"{type(value).__name__}; {DAMAGED}")
    return value


def _tensors(path: Path, r: gguf.GGUFReader) -> dict[str, np.ndarray]:
    out = {}
    for t in r.tensors:
        if t.tensor_type not in _TENSOR_TYPES:
            raise StateFileError(f"{path}: tensor {t.name!r} is {t.tensor_type.name}; state files "
                                 f"hold F32, I8 and I32 tensors; {DAMAGED}")
        out[t.name] = np.array(t.data)  # shaped by the reader (numpy order); copied off the file
    return out
