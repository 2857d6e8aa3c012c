"""What every backend shares, below them all: the context check, token-id arrays and the thread
count. Backends (backends.py, engine.py) import this module and never each other."""

from __future__ import annotations

import os

import numpy as np

from .errors import ContextOverflow


def check_context(n_past: int, n_new: int, n_ctx: int) -> None:
    if n_new < 1:
        raise ValueError("no tokens to evaluate")
    if n_past + n_new > n_ctx:
        raise ContextOverflow(
            f"context full: {n_past} tokens + {n_new} new > n_ctx={n_ctx}; open the model with a "
            "larger n_ctx or start a new session")


def as_ids(ids) -> np.ndarray:
    """ids as a contiguous 1-D int32 array; anything else is refused."""
    arr = np.asarray(ids)
    if arr.ndim == 0:
        arr = arr.reshape(1)
    if arr.ndim != 1 or (arr.size and not np.issubdtype(arr.dtype, np.integer)):
        raise ValueError("token ids must be a 1-D sequence of integers")
    return np.ascontiguousarray(arr, dtype=np.int32)


def default_threads() -> int:
    """The cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def max_threads() -> int:
    """The most threads a model may run: 4 per CPU of the machine. More only adds switching
    (the engine's workers spin at each barrier), and thousands stall an evaluation outright."""
    return 4 * (os.cpu_count() or 1)


def check_threads(n_threads) -> int | None:
    """n_threads as given (None: the default), or TypeError/ValueError saying what is allowed."""
    if n_threads is None:
        return None
    if isinstance(n_threads, bool) or not isinstance(n_threads, (int, np.integer)):
        raise TypeError(f"n_threads must be an int or None, got {n_threads!r}")
    top = max_threads()
    if not 1 <= n_threads <= top:
        raise ValueError(f"n_threads must be between 1 and {top} (4 per CPU here; None uses the "
                         f"{default_threads()} this process may run on), got {n_threads}")
    return int(n_threads)
