"""The server's state cache (edgenano.server.cache) on its own: the longest proper token prefix
wins, lookups hand out copies, the byte bound holds with least-recently-used eviction, counters."""

from __future__ import annotations

import numpy as np
import pytest

from edgenano import Model
from edgenano.server.cache import StateCache, state_nbytes


class FakeState:
    def __init__(self, tag, nbytes):
        self.tag, self.nbytes, self.copies = tag, nbytes, 0

    def copy(self):
        self.copies += 1
        return FakeState(self.tag, self.nbytes)


def test_longest_proper_prefix_and_copies():
    c = StateCache(10_000)
    a, b = FakeState("a", 100), FakeState("b", 100)
    c.store([1, 2], a)
    c.store([1, 2, 3, 4], b)
    c.store([9, 9, 9], FakeState("x", 100))
    st, n = c.lookup([1, 2, 3, 4, 5])
    assert (st.tag, n) == ("b", 4) and st is not b and b.copies == 1
    st, n = c.lookup([1, 2, 3, 4])  # a state holding all of the prompt leaves nothing to feed
    assert (st.tag, n) == ("a", 2)
    assert c.lookup([1, 3]) == (None, 0)
    assert c.lookup([]) == (None, 0)
    s = c.snapshot()
    assert (s["lookups"], s["hits"], s["entries"], s["bytes"]) == (4, 2, 3, 300)


def test_byte_bound_and_lru():
    c = StateCache(1000)
    for i in range(4):
        assert c.store([i, i], FakeState(i, 300))
    assert len(c) == 3 and c.nbytes == 900 and c.snapshot()["evictions"] == 1
    assert c.lookup([0, 0, 5]) == (None, 0)  # the oldest went first
    c.lookup([1, 1, 5])  # 1 is now the most recently used
    c.store([7, 7], FakeState(7, 300))
    assert c.lookup([1, 1, 5])[1] == 2 and c.lookup([2, 2, 5]) == (None, 0)
    assert not c.store([8, 8], FakeState(8, 2000))  # alone over the bound: not kept
    assert c.nbytes <= 1000
    c.store([1, 1], FakeState("new", 100))  # the same tokens again: replaced, bytes follow
    assert c.nbytes == 700 and c.lookup([1, 1, 2])[0].tag == "new"
    with pytest.raises(ValueError):
        StateCache(-1)


def test_real_states_and_their_bytes():
    m = Model(n_threads=2)
    s = m.new_state()
    ids = m.tokenize("What is 1+2?")
    m.eval(s, ids)
    assert state_nbytes(s) == s.nbytes > 0
    c = StateCache(1 << 30)
    c.store(ids, s.copy())
    got, n = c.lookup(ids + [5])
    assert n == len(ids)
    a = m.eval(got, [5])
    b = m.eval(s, [5])
    assert np.array_equal(a, b)  # the cached state continues exactly as the original
    ref = Model(backend="reference")
    r = ref.new_state()
    ref.eval(r, ids[:3])
    assert state_nbytes(r) == sum(x.nbytes for d in (r.conv, r.ssm, r.k, r.v)
                                  for x in d.values())
