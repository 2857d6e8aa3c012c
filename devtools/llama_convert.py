"""Run llama.cpp's own converter (convert_hf_to_gguf.py from llama-cpp-python's sdist) on a tiny
checkpoint, for tests that compare files written by others; development only.

Its tokenizer check recognises pre-tokenizers by hashing a published vocabulary's output, which a
tiny BPE never matches; ours is tekken's (SPEC section 3), so the check is told so. Everything
else is llama.cpp's code as shipped. Run as a script in a fresh interpreter (the sdist's gguf-py
must shadow the installed gguf):
    python -m devtools.llama_convert SDIST_TAR HF_DIR OUT.gguf [--outtype f32]
"""

from __future__ import annotations

import runpy
import sys
import tarfile
import tempfile
from pathlib import Path

MEMBERS = ("convert_hf_to_gguf.py", "conversion/", "gguf-py/")


def extract(sdist: Path, dest: Path) -> Path:
    """The converter's files from the sdist, under dest; returns llama.cpp's root there."""
    with tarfile.open(sdist) as tar:
        root = next(m.name for m in tar.getmembers() if m.name.endswith("/convert_hf_to_gguf.py"))
        base = root[: -len("convert_hf_to_gguf.py")]
        wanted = [m for m in tar.getmembers()
                  if any(m.name.startswith(base + w) for w in MEMBERS)]
        tar.extractall(dest, members=wanted, filter="data")
    return dest / base


def main(argv: list[str]) -> None:
    sdist, hf_dir, out, *rest = argv
    with tempfile.TemporaryDirectory() as tmp:
        root = str(extract(Path(sdist), Path(tmp)))
        sys.path[:0] = [root, root + "/gguf-py"]
        import conversion.base as base

        base.TextModel.get_vocab_base_pre = lambda self, tokenizer: "tekken"
        sys.argv = ["convert_hf_to_gguf.py", hf_dir, "--outfile", out, *rest]
        runpy.run_path(root + "/convert_hf_to_gguf.py", run_name="__main__")


if __name__ == "__main__":
    main(sys.argv[1:])
