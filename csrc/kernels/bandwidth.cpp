// Read-bandwidth probe (see bandwidth.h).
#include "kernels/bandwidth.h"

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <vector>

namespace edgenano::kern {

double read_bandwidth(ThreadPool &pool, size_t bytes, int reps) {
  const size_t n = bytes / sizeof(uint64_t);
  std::vector<uint64_t> buf(n);
  constexpr size_t kChunk = 1 << 16;  // words per item (512 KiB)
  const int64_t items = int64_t((n + kChunk - 1) / kChunk);
  pool.parallel_for(items, [&](int64_t it, int) {  // touch in parallel: pages spread like reads
    const size_t lo = size_t(it) * kChunk, hi = std::min(n, lo + kChunk);
    for (size_t i = lo; i < hi; ++i) buf[i] = i * 0x9e3779b97f4a7c15ULL;
  });
  std::vector<uint64_t> sink(static_cast<size_t>(items));
  double best = 0;
  for (int r = 0; r < reps; ++r) {
    const auto t0 = std::chrono::steady_clock::now();
    pool.parallel_for(items, [&](int64_t it, int) {
      const size_t lo = size_t(it) * kChunk, hi = std::min(n, lo + kChunk);
      uint64_t a = 0, b = 0, c = 0, d = 0;
      for (size_t i = lo; i + 4 <= hi; i += 4) {
        a += buf[i];
        b ^= buf[i + 1];
        c += buf[i + 2];
        d ^= buf[i + 3];
      }
      sink[size_t(it)] = a + b + c + d;
    });
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    best = std::max(best, double(n * sizeof(uint64_t)) / s);
  }
  volatile uint64_t keep = 0;
  for (uint64_t v : sink) keep = keep + v;
  return best;
}

}  // namespace edgenano::kern
