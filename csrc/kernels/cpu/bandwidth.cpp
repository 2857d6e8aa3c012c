// Read-bandwidth probe (see bandwidth.h).
#include "kernels/cpu/bandwidth.h"

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <vector>

#if defined(__SSE2__)
#include <emmintrin.h>
#endif

namespace edgenano::kern {

namespace {

// Sum of n words with 16-byte loads (SSE2 is baseline on x86-64) and four independent chains,
// prefetching 4 KiB ahead (without it the probe reads less than the kernels it is the limit of:
// hardware prefetchers alone keep too few lines in flight per core). Into L2: a prefetch to L1
// holds one of the core's few L1 miss buffers for a DRAM latency, and with it the probe read
// 33 GB/s on the 2-core Zen 4 machine where decode moved 41 (into L2: 34-49 in the same runs).
uint64_t sum_words(const uint64_t *p, size_t n) {
#if defined(__SSE2__)
  __m128i a = _mm_setzero_si128(), b = a, c = a, d = a;
  size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    _mm_prefetch(reinterpret_cast<const char *>(p + i) + 4096, _MM_HINT_T1);
    a = _mm_add_epi64(a, _mm_load_si128(reinterpret_cast<const __m128i *>(p + i)));
    b = _mm_add_epi64(b, _mm_load_si128(reinterpret_cast<const __m128i *>(p + i + 2)));
    c = _mm_add_epi64(c, _mm_load_si128(reinterpret_cast<const __m128i *>(p + i + 4)));
    d = _mm_add_epi64(d, _mm_load_si128(reinterpret_cast<const __m128i *>(p + i + 6)));
  }
  alignas(16) uint64_t t[2];
  _mm_store_si128(reinterpret_cast<__m128i *>(t),
                  _mm_add_epi64(_mm_add_epi64(a, b), _mm_add_epi64(c, d)));
  uint64_t s = t[0] + t[1];
#else
  uint64_t s = 0;
  size_t i = 0;
#endif
  for (; i < n; ++i) s += p[i];
  return s;
}

}  // namespace

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
      sink[size_t(it)] = sum_words(buf.data() + lo, hi - lo);
    });
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    best = std::max(best, double(n * sizeof(uint64_t)) / s);
  }
  volatile uint64_t keep = 0;
  for (uint64_t v : sink) keep = keep + v;
  return best;
}

}  // namespace edgenano::kern
