"""The SIMT emulator judged on kernels with planted bugs (csrc/simt/selftest.cpp): each broken
kernel must end in an error naming what it broke, each correct one must compute the right result."""

from __future__ import annotations

import numpy as np
import pytest

E = pytest.importorskip("edgenano._C").cuda_emu

PLANTED = {
    # a read of a neighbour's slot with no barrier: the neighbour has not written it yet
    "race_missing_barrier": r"no thread has written yet",
    "race_write_after_read": r"shared-memory race on 'buf\[0\]'",
    "uninitialized_shared": r"'buf\[63\]' that no thread has written",
    "shared_out_of_bounds": r"index 64 out of bounds \(size 64\)",
    "global_read_oob": r"invalid global memory access .* by thread 31 \(byte 256 of a 256-byte",
    "global_write_oob": r"invalid global memory access .* by thread 0 \(byte 1024 of a 1024-byte",
    "divergent_barrier": r"divergent __syncthreads(.|\n)*selftest.cpp:\d+(.|\n)*selftest.cpp:\d+",
    "barrier_after_exit": r"divergent __syncthreads(.|\n)*threads 40..63: exited",
    "shuffle_exited_lane": r"__shfl_xor_sync: lane 16 of the mask has exited",
    "warp_op_vs_barrier": r"deadlock(.|\n)*waiting in __shfl_xor_sync",
    # warp 0 reads rows of A that warp 1 writes: before it has (or after, unsynchronized)
    "mma_missing_barrier": r"'as\[\d+\]'(.|\n)*(no thread has written yet|race)",
    "misaligned_load": r"misaligned 4-byte load",  # kernels' load_u32_a4 on a 2-aligned field
}


# Graph capture: what CUDA refuses while a stream is recorded, the emulator refuses too.
REFUSED_IN_CAPTURE = {
    "graph_htod_in_capture": r"a host-to-device copy during stream capture",
    "graph_sync_in_capture": r"a stream synchronize during stream capture",
}


def test_every_selftest_is_judged():
    assert set(E.selftest_names()) == set(PLANTED) | set(REFUSED_IN_CAPTURE) | {
        "block_sum_ok", "shared_ok", "mma_ok", "graph_replay_ok"}


@pytest.mark.parametrize("name", sorted(PLANTED))
def test_planted_bug_is_reported(name):
    with pytest.raises(RuntimeError, match=PLANTED[name]) as err:
        E.selftest(name)
    assert f"kernel {name}, block (" in str(err.value)  # the report names the kernel and block


def test_emulator_keeps_working_after_a_fault():
    with pytest.raises(RuntimeError):
        E.selftest("global_read_oob")
    assert E.selftest("shared_ok") == [float((i + 1) % 64) for i in range(64)]


def test_block_sum_shuffles_and_votes():
    total, ballot_lo, all_, any_, down5, down31, ballot_hi = E.selftest("block_sum_ok")
    assert total == sum(range(64))
    assert int(ballot_lo) | int(ballot_hi) << 16 == sum(1 << i for i in range(0, 32, 3))
    assert all_ == 1 and any_ == 1
    assert (down5, down31) == (6, 31)  # shfl_down: lane + 1; the last lane keeps its value


def test_mma_tile_product():
    a = (np.arange(128) % 7 - 3).astype(np.float32).reshape(16, 8)  # row-major (16, 8)
    b = (np.arange(128) % 5 - 2).astype(np.float32).reshape(16, 8).T  # stored column-major
    got = np.array(E.selftest("mma_ok"), np.float32).reshape(16, 16)
    assert np.array_equal(got, a @ b)  # small integers: exact in TF32


@pytest.mark.parametrize("name", sorted(REFUSED_IN_CAPTURE))
def test_capture_refuses_host_work(name):
    with pytest.raises(RuntimeError, match=REFUSED_IN_CAPTURE[name]):
        E.selftest(name)
    assert E.selftest("shared_ok")[0] == 1.0  # the capture was closed: launches run again


def test_graph_records_replays_and_updates():
    """Recording runs nothing; replay uses the recorded by-value parameters; an update with the
    same nodes takes the new values; a recording with other nodes cannot update the graph."""
    assert E.selftest("graph_replay_ok") == [0.0, 2.0, 1.0, 12.0, 0.0, 0.0]
