"""Fuzz the GGUF reader and the chat-state loader with structural mutations (devtools/fuzz_corpus:
truncation in every section, byte flips in the header, key/values and tensor table, oversized
counts and dimensions, bad and overlapping offsets, wrong types and shapes): every file either
loads and runs or raises a typed edgenano error. Bounded (a few hundred files, seconds); the
large corpus run is `python devtools/fuzz_corpus.py`."""

from __future__ import annotations

import numpy as np
import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from devtools import fuzz_corpus as fz  # noqa: E402
from edgenano.errors import EdgenanoError, GGUFError, StateFileError  # noqa: E402
from edgenano.model import Model  # noqa: E402

# Derandomized: CI sees the same files each run (the corpus script explores with other seeds).
FUZZ = settings(max_examples=800, deadline=None, derandomize=True, database=None,
                suppress_health_check=list(HealthCheck))


@pytest.fixture(scope="module")
def base(tiny_checkpoint, tmp_path_factory):
    """A q8_0 GGUF of the tiny mix model, its layout, the model and a saved chat state."""
    from edgenano.convert import convert_checkpoint

    d = tmp_path_factory.mktemp("fuzz")
    path = convert_checkpoint(tiny_checkpoint("mix"), d / "mix-q8_0.gguf", "q8_0")
    model = Model(path, n_ctx=128, n_threads=1)
    s = model.chat(system="sys", thinking=False, temperature=0.0)
    s.send("remember this", max_tokens=4)
    s.save(d / "chat.state.gguf")
    return _Base(path=path, bytes=path.read_bytes(), layout=fz.layout(path), model=model,
                 state=d / "chat.state.gguf", state_bytes=(d / "chat.state.gguf").read_bytes(),
                 state_layout=fz.layout(d / "chat.state.gguf"), dir=d)


class _Base(dict):
    def __repr__(self) -> str:  # hypothesis prints its arguments: not a megabyte of them
        return "<the fuzz base files>"


@FUZZ
@given(kind=st.sampled_from(sorted(fz.GGUF_MUTATIONS)), seed=st.integers(0, 2**32 - 1))
def test_corrupt_gguf_loads_or_raises_a_typed_error(base, kind, seed):
    data, desc = fz.mutate(base["bytes"], base["layout"], kind, seed)
    bad = base["dir"] / "bad.gguf"
    bad.write_bytes(data)
    try:
        m = Model(bad, n_ctx=128, n_threads=1)
    except GGUFError as e:
        assert str(bad) in str(e), (desc, e)
        return
    logits = m.eval(m.new_state(), fz.PROMPT)  # whatever loads must run
    assert kind in fz.UNCHECKABLE or np.isfinite(logits).all(), desc


@FUZZ
@given(kind=st.sampled_from(sorted(fz.GGUF_MUTATIONS) + ["rewrite"] * 4),
       seed=st.integers(0, 2**32 - 1))
def test_corrupt_state_file_loads_or_raises_a_state_file_error(base, kind, seed):
    from edgenano.session import ChatSession

    bad = base["dir"] / "bad.state"
    if kind == "rewrite":
        import random

        desc = fz.rewrite_state(base["state"], bad, random.Random(seed))
    else:
        data, desc = fz.mutate(base["state_bytes"], base["state_layout"], kind, seed)
        bad.write_bytes(data)
    try:
        s = ChatSession.load(bad, base["model"])
    except StateFileError as e:
        assert str(bad) in str(e), (desc, e)
        return
    except EdgenanoError as e:  # pragma: no cover - any other typed error is a wrong type
        pytest.fail(f"{desc}: {type(e).__name__} instead of StateFileError: {e}")
    s.send("and", max_tokens=1)  # whatever loads must run


def test_first_tensor_at_a_wrong_offset(base, tmp_path):
    """Found by this fuzz: the first tensor's offset edited raised a TypeError in the message."""
    t = base["layout"].tensors[0]
    b = bytearray(base["bytes"])
    b[t.at_offset:t.at_offset + 8] = (64).to_bytes(8, "little")
    (tmp_path / "bad.gguf").write_bytes(bytes(b))
    with pytest.raises(GGUFError, match=rf"tensor '{t.name}' .* should start at offset 0"):
        Model(tmp_path / "bad.gguf")


@pytest.mark.slow
def test_corpus_in_child_processes(base, tmp_path):
    """The corpus run of devtools/fuzz_corpus.py, smaller: each file in a child process with a
    timeout; no crash, no hang, no untyped exception."""
    res = fz.run_corpus("model", base["path"], 400, 1, 30.0, tmp_path)
    res += fz.run_corpus("state", base["path"], 150, 1, 30.0, tmp_path, base["state"])
    bad = [r for r in res if r["class"] in ("other", "crash", "hang")]
    assert not bad, fz.summary(res)
