"""Shared fixtures: tiny checkpoints built once per session, the NMSE metric, and llama.cpp's
logits of a prompt."""

from __future__ import annotations

import numpy as np
import pytest


def nmse(got, ref) -> float:
    """Normalized mean squared error sum((got-ref)^2) / sum(ref^2), computed in float64."""
    got = np.asarray(got, dtype=np.float64)
    ref = np.asarray(ref, dtype=np.float64)
    return float(np.sum((got - ref) ** 2) / np.sum(ref**2))


def llama_logits(path, prompt: list[int]) -> np.ndarray:
    """llama.cpp's (llama-cpp-python's) logits at every position of `prompt`, float64."""
    import llama_cpp

    n = max(128, len(prompt))
    llm = llama_cpp.Llama(str(path), n_ctx=n, n_batch=n, logits_all=True, n_threads=2,
                          verbose=False)
    try:
        llm.eval(prompt)
        return np.array(llm.scores[: len(prompt)], dtype=np.float64)
    finally:
        llm.close()


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory):
    """Factory: tiny_checkpoint("mix", seed=0, dtype="float32", **overrides) -> HF dir (cached)."""
    pytest.importorskip("torch")
    from devtools import tiny

    cache: dict = {}

    def make(config: str = "mix", **kw):
        key = (config, tuple(sorted(kw.items())))
        if key not in cache:
            d = tmp_path_factory.mktemp(f"hf_{config}")
            cache[key] = tiny.make_checkpoint(d, config, **kw)
        return cache[key]

    return make


def gguf_converter(tiny_checkpoint, tmp_path_factory, configs: dict):
    """get(config, outtype="f32") -> GGUF path of configs[config] = (base config, overrides),
    converted by our converter once per (config, outtype)."""
    from edgenano.convert import convert_checkpoint

    cache: dict = {}

    def get(config: str, outtype: str = "f32"):
        if (config, outtype) not in cache:
            base, overrides = configs[config]
            out = tmp_path_factory.mktemp(f"{config}_{outtype}") / "model.gguf"
            cache[config, outtype] = convert_checkpoint(tiny_checkpoint(base, **overrides), out,
                                                        outtype)
        return cache[config, outtype]

    return get


LLAMA_SDIST = "llama_cpp_python-0.3.36.tar.gz"

def _llama_sdist():
    """llama-cpp-python 0.3.36's sdist, which carries llama.cpp's copies of the published chat
    templates: $EDGENANO_LLAMA_SDIST, else the cache, else downloaded into the cache (never
    committed to the repository)."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    env = os.environ.get("EDGENANO_LLAMA_SDIST")
    if env and Path(env).is_file():
        return Path(env)
    from edgenano.models import cache_dir

    d = cache_dir() / "sdist"
    path = d / LLAMA_SDIST
    if not path.is_file():
        d.mkdir(parents=True, exist_ok=True)
        r = subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps",
                            "--no-binary", "llama-cpp-python",
                            "llama-cpp-python==0.3.36", "-d", str(d), "-q"],
                           capture_output=True, text=True, timeout=600)
        if not path.is_file():
            msg = f"cannot get {LLAMA_SDIST}: {r.stderr.strip()[-300:]}"
            if os.environ.get("CI"):
                pytest.fail(msg)
            pytest.skip(msg)
    return path


@pytest.fixture(scope="session")
def published_template():
    """Factory: published_template("nano-v2" | "nemotron3-nano") -> the template's text, read
    from llama-cpp-python's sdist at test time."""
    from chat_templates import read_published

    cache: dict = {}

    def get(name: str) -> str:
        if name not in cache:
            cache[name] = read_published(_llama_sdist(), name)
        return cache[name]

    return get
