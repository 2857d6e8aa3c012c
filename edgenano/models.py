"""The built-in model: the tiny trained reasoner shipped as a Hugging Face checkpoint, converted
to GGUF on first use into a cache directory ($EDGENANO_CACHE, else ~/.cache/edgenano), keyed by a
hash of the shipped files so a new checkpoint never reuses an old conversion."""

from __future__ import annotations

import hashlib
import os
from importlib import resources
from pathlib import Path

DEFAULT_MODEL_NAME = "tiny-reasoner"
CHECKPOINT_FILES = ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json",
                    "special_tokens_map.json")


def chat_template() -> str:
    """edgenano's chat template (SPEC section 2), the built-in model's, shipped in the package."""
    return resources.files("edgenano").joinpath("assets/chat_template.jinja").read_text()


def default_checkpoint_dir() -> Path:
    """The shipped HF checkpoint directory (edgenano/assets/tiny-reasoner)."""
    return Path(str(resources.files("edgenano").joinpath("assets", DEFAULT_MODEL_NAME)))


def cache_dir() -> Path:
    return Path(os.environ.get("EDGENANO_CACHE") or Path.home() / ".cache" / "edgenano")


def checkpoint_hash(hf_dir: str | Path) -> str:
    """First 16 hex digits of a SHA-256 over the checkpoint's files (names and contents)."""
    h = hashlib.sha256()
    for name in CHECKPOINT_FILES:
        path = Path(hf_dir) / name
        if not path.is_file():
            raise FileNotFoundError(f"built-in model incomplete: {path} is missing")
        h.update(name.encode() + b"\0")
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()[:16]


def default_model_path(outtype: str = "f32", *, cache: str | Path | None = None) -> Path:
    """Path of the built-in model as a GGUF of `outtype` (any converter outtype), converting the
    shipped checkpoint on first use. The converter writes to a temporary file and renames it, so
    a concurrent or interrupted first use never leaves a partial file under the final name."""
    src = default_checkpoint_dir()
    return _converted(src, f"{DEFAULT_MODEL_NAME}-{checkpoint_hash(src)}", outtype, cache, True)


def _converted(src: Path, key: str, outtype: str, cache, progress: bool) -> Path:
    """The cached conversion `{key}-{outtype}.gguf` of checkpoint `src`, made on first use."""
    out_dir = Path(cache) if cache is not None else cache_dir()
    out = out_dir / f"{key}-{outtype}.gguf"
    if out.is_file():
        return out
    from .convert import convert_checkpoint

    out_dir.mkdir(parents=True, exist_ok=True)
    return convert_checkpoint(src, out, outtype, force=True, progress=progress)


def resolve_model(path: str | Path, *, outtype: str = "q8_0", cache: str | Path | None = None,
                  progress: bool = True) -> Path:
    """The GGUF to open for `path`: the file itself, or for a Hugging Face checkpoint directory
    its conversion to `outtype` in the cache (made once, keyed by the directory's files: names,
    sizes and modification times, so an edited checkpoint is converted again)."""
    path = Path(path)
    if path.is_file():
        return path
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file or directory (give a GGUF file or a "
                                "Hugging Face checkpoint directory)")
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"{path} is a directory without config.json: not a Hugging Face "
                                "checkpoint")
    h = hashlib.sha256(f"{path.resolve()}\0{outtype}".encode())
    for f in sorted(path.iterdir()):
        if f.is_file():
            st = f.stat()
            h.update(f"{f.name}\0{st.st_size}\0{st.st_mtime_ns}\0".encode())
    return _converted(path, f"{path.resolve().name}-{h.hexdigest()[:16]}", outtype, cache,
                      progress)
