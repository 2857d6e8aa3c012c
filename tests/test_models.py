"""The built-in model: the shipped checkpoint is converted once into the cache, keyed by its
hash, and the GGUF is the tiny reasoner."""

from __future__ import annotations

import shutil

import pytest

from edgenano import models


def test_default_model_path_converts_once_and_caches(tmp_path, monkeypatch):
    monkeypatch.setenv("EDGENANO_CACHE", str(tmp_path / "cache"))
    path = models.default_model_path()
    h = models.checkpoint_hash(models.default_checkpoint_dir())
    assert path == tmp_path / "cache" / f"tiny-reasoner-{h}-f32.gguf"
    assert path.is_file() and path.read_bytes()[:4] == b"GGUF"
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temporary left behind

    import edgenano.convert as conv

    def refuse(*a, **k):
        raise AssertionError("converted again")

    monkeypatch.setattr(conv, "convert_checkpoint", refuse)
    stamp = path.stat().st_mtime_ns
    assert models.default_model_path() == path and path.stat().st_mtime_ns == stamp
    with pytest.raises(AssertionError, match="converted again"):
        models.default_model_path("q8_0")  # another outtype is another file


def test_explicit_cache_argument_and_outtype(tmp_path):
    path = models.default_model_path("q8_0", cache=tmp_path)
    assert path.parent == tmp_path and path.name.endswith("-q8_0.gguf")
    from edgenano.gguf_model import load_gguf

    cfg = load_gguf(path).config
    assert set(cfg.layer_kinds) == {"mamba", "mlp", "attention"} and cfg.ssm_n_group > 1


def test_hash_follows_the_checkpoint_files(tmp_path):
    src = models.default_checkpoint_dir()
    copy = tmp_path / "ck"
    shutil.copytree(src, copy)
    h = models.checkpoint_hash(copy)
    assert h == models.checkpoint_hash(src) and len(h) == 16
    cfg = copy / "tokenizer_config.json"
    cfg.write_text(cfg.read_text() + " ")
    assert models.checkpoint_hash(copy) != h
    (copy / "tokenizer.json").unlink()
    with pytest.raises(FileNotFoundError, match="tokenizer.json"):
        models.checkpoint_hash(copy)
