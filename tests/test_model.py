"""edgenano.Model's own surface: the public state API (new, copy, export, import) on every
backend, and backends refused by name or by this machine."""

from __future__ import annotations

import numpy as np
import pytest

from edgenano import BackendUnavailable, Model, backends

IDS = np.random.default_rng(0).integers(16, 512, size=12).tolist()


@pytest.fixture(scope="module")
def path(tiny_checkpoint, tmp_path_factory):
    from edgenano.convert import convert_checkpoint

    out = tmp_path_factory.mktemp("gguf") / "mix.gguf"
    return convert_checkpoint(tiny_checkpoint("mix"), out, "f32")


@pytest.mark.parametrize("backend", ["reference", "native", "llama.cpp"])
def test_state_api_roundtrip(path, backend):
    """export then import (into another instance of the same file) continues identically, and a
    copy is independent of its original."""
    if backend == "native":
        pytest.importorskip("edgenano._C")
    if backend == "llama.cpp":
        pytest.importorskip("llama_cpp")
    m, other = (Model(path, backend=backend, n_ctx=256, n_threads=2) for _ in range(2))
    s = m.new_state()
    m.eval(s, IDS[:8])
    snap = m.copy_state(s)
    arrays = m.export_state(s)
    assert arrays and all(isinstance(a, np.ndarray) for a in arrays.values())
    restored = other.import_state(arrays, IDS[:8])
    assert restored.n_past == 8
    want = m.eval(s, IDS[8:])
    assert np.array_equal(other.eval(restored, IDS[8:]), want)
    assert snap.n_past == 8 and np.array_equal(m.eval(snap, IDS[8:]), want)


def test_cuda_unavailable_says_why(path, monkeypatch):
    with pytest.raises(BackendUnavailable, match="'cuda' is not available"):
        Model(path, backend="cuda")
    monkeypatch.setattr(backends, "native_registry",
                        lambda: {"cpu": (True, ""), "cuda": (False, "no CUDA device found")})
    with pytest.raises(BackendUnavailable, match="no CUDA device found"):
        Model(path, backend="cuda")


def test_unknown_backend_is_a_value_error(path):
    with pytest.raises(ValueError, match="unknown backend 'bogus'") as e:
        Model(path, backend="bogus")
    assert not isinstance(e.value, BackendUnavailable)


@pytest.mark.parametrize("backend", ["native", "llama.cpp"])
def test_use_mmap_false_reads_the_weights_into_memory(path, tmp_path, backend):
    """use_mmap=False: the weights are read at load, so truncating and then deleting the file
    afterwards changes nothing (a subprocess, so a SIGBUS would fail the test, not kill pytest);
    the logits equal the mapped model's bit for bit."""
    import shutil
    import subprocess
    import sys

    if backend == "llama.cpp":
        pytest.importorskip("llama_cpp")
    copy = tmp_path / "m.gguf"
    shutil.copy(path, copy)
    code = (f"import os, numpy as np; from edgenano import Model\n"
            f"p = {str(copy)!r}\n"
            f"mapped = Model(p, backend={backend!r}, n_ctx=64)\n"
            f"want = mapped.eval(mapped.new_state(), {IDS!r})\n"
            f"del mapped\n"
            f"m = Model(p, backend={backend!r}, n_ctx=64, use_mmap=False)\n"
            f"os.truncate(p, 1000); os.remove(p)\n"
            f"got = m.eval(m.new_state(), {IDS!r})\n"
            f"print('equal', np.array_equal(got, want), 'finite', bool(np.isfinite(got).all()))\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "equal True finite True" in r.stdout


def test_use_mmap_is_checked(path):
    with pytest.raises(TypeError, match="use_mmap must be True or False"):
        Model(path, use_mmap="no")
    with pytest.raises(ValueError, match="use_mmap=False applies to backend='native'"):
        Model(path, backend="reference", use_mmap=False)


def test_changed_file_under_a_loaded_model_is_an_error(path, tmp_path):
    """Rewritten in place (same size, new mtime) or truncated: eval raises GGUFError, and the
    truncation runs in a subprocess so a SIGBUS would fail the test rather than kill pytest."""
    import os
    import shutil
    import subprocess
    import sys

    from edgenano import GGUFError

    copy = tmp_path / "m.gguf"
    shutil.copy(path, copy)
    m = Model(copy, backend="reference", n_ctx=64)
    m.eval(m.new_state(), IDS[:2])
    st = os.stat(copy)
    os.utime(copy, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    with pytest.raises(GGUFError, match="changed on disk since it was loaded; reopen it"):
        m.eval(m.new_state(), IDS[:2])
    code = (f"import os; from edgenano import Model, GGUFError\n"
            f"m = Model({str(copy)!r}, backend='reference', n_ctx=64)\n"
            f"os.truncate({str(copy)!r}, 1000)\n"
            f"try:\n    m.eval(m.new_state(), {IDS[:2]!r})\n"
            f"except GGUFError as e:\n    print('GGUFError', e)\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "GGUFError" in r.stdout and "changed on disk" in r.stdout
