// Tensor quantize / dequantize over the pool (see quantize.h).
#include "kernels/cpu/quantize.h"

#include <algorithm>

namespace edgenano::kern {

namespace {

// The AVX2 build of the K-type quantizers where it applies, else the format's reference.
FromFloat from_float(const TypeTraits &t) {
#if defined(EDGENANO_X86)
  if (use_avx2()) switch (t.type) {
      case T_Q4_K:
        return [](const float *x, void *y, int64_t n) {
          quants_avx2::quantize_q4_k(x, static_cast<BlockQ4_K *>(y), n / QK_K);
        };
      case T_Q5_K:
        return [](const float *x, void *y, int64_t n) {
          quants_avx2::quantize_q5_k(x, static_cast<BlockQ5_K *>(y), n / QK_K);
        };
      case T_Q6_K:
        return [](const float *x, void *y, int64_t n) {
          quants_avx2::quantize_q6_k(x, static_cast<BlockQ6_K *>(y), n / QK_K);
        };
      default: break;
    }
#endif
  return t.from_float_ref;
}

// Contiguous runs of blocks, about 4 per thread, none under 64K elements (smaller inputs run on
// the calling thread). Blocks are independent: the split never changes the bytes.
template <class Fn>
void over_blocks(int64_t n_blocks, int64_t block_size, ThreadPool &pool, Fn fn) {
  const int64_t min_blocks = std::max<int64_t>(1, (int64_t{1} << 16) / block_size);
  const int64_t per = std::max(min_blocks, (n_blocks + 4 * pool.size() - 1) / (4 * pool.size()));
  const int64_t items = (n_blocks + per - 1) / per;
  pool.parallel_for(items, [&](int64_t i, int) {
    const int64_t b0 = i * per;
    fn(b0, std::min(n_blocks, b0 + per) - b0);
  });
}

}  // namespace

void quantize(int type, const float *x, uint8_t *y, int64_t n, ThreadPool &pool) {
  const TypeTraits *t = traits(type);
  if (!t) return;
  const FromFloat q = from_float(*t);
  const int64_t bs = t->block_size;
  const size_t ts = t->type_size;
  over_blocks(n / bs, bs, pool,
              [&](int64_t b0, int64_t nb) { q(x + b0 * bs, y + size_t(b0) * ts, nb * bs); });
}

void dequantize(int type, const uint8_t *y, float *x, int64_t n, ThreadPool &pool) {
  const TypeTraits *t = traits(type);
  if (!t) return;
  const int64_t bs = t->block_size;
  const size_t ts = t->type_size;
  over_blocks(n / bs, bs, pool, [&](int64_t b0, int64_t nb) {
    t->to_float(y + size_t(b0) * ts, x + b0 * bs, nb * bs);
  });
}

}  // namespace edgenano::kern
