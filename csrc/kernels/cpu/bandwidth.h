// Memory read bandwidth of this machine, measured with the engine's own thread pool (the
// benchmark's yardstick for decode: bytes of weights per token / bandwidth = the speed limit).
#pragma once
#include <cstddef>

#include "kernels/cpu/threadpool.h"

namespace edgenano::kern {

// Best of `reps` passes over a fresh buffer of `bytes`, in bytes per second.
double read_bandwidth(ThreadPool &pool, size_t bytes, int reps);

}  // namespace edgenano::kern
