"""Chat state files: a GGUF holding a session's conv, SSM and KV tensors, its tokens and messages,
and the identity of the model that made them (so loading into another model is refused)."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import gguf
import numpy as np

from .errors import StateFileError  # noqa: F401  (raised here; defined with the others)

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


def load(path: str | Path, *, fingerprint: str, backend: str) -> dict:
    """Read a state file, checking it belongs to this model and backend."""
    path = Path(path)
    try:
        r = gguf.GGUFReader(str(path))
    except FileNotFoundError:
        raise
    except Exception as e:  # noqa: BLE001 - any parse failure is a bad file
        raise StateFileError(f"{path}: not a readable edgenano state file ({e})") from e

    def get(key):
        f = r.fields.get(key)
        if f is None:
            raise StateFileError(f"{path}: not an edgenano state file (no {key})")
        return f.contents()

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
    n = int(get(_K + "n_tokens"))
    tokens = [int(t) for t in get(_K + "tokens")][:n]
    tensors = {t.name: np.array(t.data).reshape(tuple(reversed([int(x) for x in t.shape])))
               for t in r.tensors}
    return {"tokens": tokens, "messages": json.loads(get(_K + "messages")),
            "settings": json.loads(get(_K + "settings")), "tensors": tensors}
