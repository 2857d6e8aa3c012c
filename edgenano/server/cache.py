"""The server's cache of conversation states: snapshots keyed by the tokens they hold, found by
the longest token prefix of a new prompt, bounded in bytes, least recently used evicted.

A recurrent state cannot be rewound, so a snapshot only helps a prompt that extends its tokens
exactly; sessions take them where the next turn's prompt will share the tokens (session.py)."""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np


def state_nbytes(state) -> int:
    """Bytes a backend state holds: the native engine reports them; NumPy states are summed."""
    n = getattr(state, "nbytes", None)
    if isinstance(n, int):
        return n
    total = 0
    for name in ("conv", "ssm", "k", "v"):
        for a in (getattr(state, name, None) or {}).values():
            total += a.nbytes if isinstance(a, np.ndarray) else 0
    saved = getattr(state, "saved", None)  # llama.cpp's saved blob
    if saved is not None:
        total += int(getattr(saved, "llama_state_size", 0) or 0)
    return total


@dataclass
class _Entry:
    tokens: tuple[int, ...]
    state: object
    nbytes: int


@dataclass
class CacheStats:
    lookups: int = 0
    hits: int = 0
    tokens_reused: int = 0
    tokens_prefilled: int = 0
    stores: int = 0
    evictions: int = 0


class StateCache:
    """At most `max_bytes` of snapshots. `lookup(ids)` gives a copy of the state holding the
    longest proper prefix of ids (the last token is always fed, for its logits) and how many
    tokens it holds; `store(tokens, state)` keeps a state (not copied: the caller hands it over).
    Thread-safe; copies are made outside the lock's reach of other entries' users."""

    def __init__(self, max_bytes: int):
        if max_bytes < 0:
            raise ValueError(f"the cache size must be >= 0 bytes, got {max_bytes}")
        self.max_bytes = int(max_bytes)
        self.nbytes = 0
        self.stats = CacheStats()
        self._entries: OrderedDict[tuple[int, ...], _Entry] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._entries)

    def lookup(self, ids: list[int]):
        """(a copy of the best state, tokens it holds) or (None, 0)."""
        with self._lock:
            self.stats.lookups += 1
            best = None
            for e in self._entries.values():
                n = len(e.tokens)
                if n < len(ids) and (best is None or n > len(best.tokens)) and \
                        tuple(ids[:n]) == e.tokens:
                    best = e
            if best is None:
                return None, 0
            self._entries.move_to_end(best.tokens)
            self.stats.hits += 1
            state = best.state
        # entries are never evaluated into, only copied, so the copy needs no lock
        return state.copy(), len(best.tokens)

    def count(self, reused: int, prefilled: int) -> None:
        with self._lock:
            self.stats.tokens_reused += reused
            self.stats.tokens_prefilled += prefilled

    def store(self, tokens, state) -> bool:
        """Keep `state` (which holds `tokens`); False when it alone is over the bound."""
        key = tuple(int(t) for t in tokens)
        size = state_nbytes(state)
        if not key or size > self.max_bytes:
            return False
        with self._lock:
            old = self._entries.pop(key, None)
            if old is not None:
                self.nbytes -= old.nbytes
            while self._entries and self.nbytes + size > self.max_bytes:
                _, gone = self._entries.popitem(last=False)
                self.nbytes -= gone.nbytes
                self.stats.evictions += 1
            self._entries[key] = _Entry(key, state, size)
            self.nbytes += size
            self.stats.stores += 1
        return True

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self.nbytes = 0

    def snapshot(self) -> dict:
        """Counters and sizes, for /metrics."""
        with self._lock:
            s = self.stats
            return {"entries": len(self._entries), "bytes": self.nbytes,
                    "max_bytes": self.max_bytes, "lookups": s.lookups, "hits": s.hits,
                    "tokens_reused": s.tokens_reused, "tokens_prefilled": s.tokens_prefilled,
                    "stores": s.stores, "evictions": s.evictions}
