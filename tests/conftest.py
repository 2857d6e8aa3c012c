"""Shared fixtures: tiny checkpoints built once per session, and the NMSE metric."""

from __future__ import annotations

import numpy as np
import pytest


def nmse(got, ref) -> float:
    """Normalized mean squared error sum((got-ref)^2) / sum(ref^2), computed in float64."""
    got = np.asarray(got, dtype=np.float64)
    ref = np.asarray(ref, dtype=np.float64)
    return float(np.sum((got - ref) ** 2) / np.sum(ref**2))


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory):
    """Factory: tiny_checkpoint("mix", seed=0, dtype="float32", **overrides) -> HF dir (cached)."""
    pytest.importorskip("torch")
    from edgenano.convert import tiny

    cache: dict = {}

    def make(config: str = "mix", **kw):
        key = (config, tuple(sorted(kw.items())))
        if key not in cache:
            d = tmp_path_factory.mktemp(f"hf_{config}")
            cache[key] = tiny.make_checkpoint(d, config, **kw)
        return cache[key]

    return make
