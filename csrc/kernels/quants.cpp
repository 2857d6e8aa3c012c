// Scalar quantize/dequantize of the ggml formats, block dispatch and row-range threading.
// The *_0 formats and F16/BF16 reproduce gguf.quants (ggml's reference) bit for bit: same float32
// operation order, no fused multiply-add, and numpy's float->int cast semantics.
#if defined(__clang__)
#pragma STDC FP_CONTRACT OFF
#elif defined(__GNUC__)
#pragma GCC optimize("fp-contract=off")
#endif

#include <algorithm>
#include <atomic>
#include <climits>
#include <cmath>
#include <thread>
#include <vector>

#include "kernels/quants.h"

namespace edgenano {
namespace {

// numpy's float32 -> (u)int8 cast on x86: truncate to int32 (out of range and NaN give INT_MIN),
// then keep the low byte.
inline uint8_t cast_u8(float v) {
  const int32_t t = (v > -2147483648.0f && v < 2147483648.0f) ? static_cast<int32_t>(v) : INT_MIN;
  return static_cast<uint8_t>(t);
}

// round half away from zero, as ggml's roundf and gguf's np_roundf
inline float round_away(float v) { return std::round(v); }

// Signed value of largest magnitude; the first one on ties (numpy argmax).
inline float signed_absmax(const float *x, int n) {
  float amax = std::fabs(x[0]), vmax = x[0];
  for (int j = 1; j < n; ++j) {
    if (std::fabs(x[j]) > amax) {
      amax = std::fabs(x[j]);
      vmax = x[j];
    }
  }
  return vmax;
}

// The 5-bit formats: bit 4 of element i goes to bit i of a little-endian u32.
void pack_q5(const uint8_t *q, uint8_t *qh_out, uint8_t *qs) {
  uint32_t qh = 0;
  for (int j = 0; j < QK; ++j) qh |= static_cast<uint32_t>((q[j] >> 4) & 1u) << j;
  for (int j = 0; j < 4; ++j) qh_out[j] = static_cast<uint8_t>(qh >> (8 * j));
  for (int j = 0; j < QK / 2; ++j) qs[j] = static_cast<uint8_t>((q[j] & 0x0f) | (q[j + 16] << 4));
}

// 5-bit code j of a Q5_0/Q5_1 block.
inline int q5_code(const uint8_t *qs, uint32_t qh, int j) {
  const int lo = j < 16 ? (qs[j] & 0x0f) : (qs[j - 16] >> 4);
  return lo | static_cast<int>(((qh >> j) & 1u) << 4);
}

void quantize_q8_0(const float *x, BlockQ8_0 *y, int64_t nb) {
  for (int64_t b = 0; b < nb; ++b, x += QK) {
    float amax = 0.0f;
    for (int j = 0; j < QK; ++j) amax = std::max(amax, std::fabs(x[j]));
    const float d = amax / 127.0f;
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    y[b].d = f32_to_f16(d);
    for (int j = 0; j < QK; ++j) y[b].qs[j] = static_cast<int8_t>(cast_u8(round_away(x[j] * id)));
  }
}

// Q4_0 (nmax 8, 4 bits) and Q5_0 (nmax 16, 5 bits): x = d*(q - nmax), the largest-magnitude
// element maps to q = 0 exactly.
template <int NMAX>
void quantize_sym_block(const float *x, uint16_t *d_out, uint8_t *q) {
  const float d = signed_absmax(x, QK) / static_cast<float>(-NMAX);
  const float id = d != 0.0f ? 1.0f / d : 0.0f;
  *d_out = f32_to_f16(d);
  const float offset = static_cast<float>(NMAX) + 0.5f;
  for (int j = 0; j < QK; ++j) {
    const uint8_t v = cast_u8(std::trunc(x[j] * id + offset));
    q[j] = std::min<uint8_t>(v, 2 * NMAX - 1);
  }
}

void quantize_q4_0(const float *x, BlockQ4_0 *y, int64_t nb) {
  uint8_t q[QK];
  for (int64_t b = 0; b < nb; ++b, x += QK) {
    quantize_sym_block<8>(x, &y[b].d, q);
    for (int j = 0; j < QK / 2; ++j) y[b].qs[j] = static_cast<uint8_t>(q[j] | (q[j + 16] << 4));
  }
}

void quantize_q5_0(const float *x, BlockQ5_0 *y, int64_t nb) {
  uint8_t q[QK];
  for (int64_t b = 0; b < nb; ++b, x += QK) {
    quantize_sym_block<16>(x, &y[b].d, q);
    pack_q5(q, y[b].qh, y[b].qs);
  }
}

// Q4_1 (15 steps) and Q5_1 (31 steps): x = d*q + min over [min, max] of the block.
template <int NMAX>
void quantize_affine_block(const float *x, uint16_t *d_out, uint16_t *m_out, uint8_t *q) {
  float lo = x[0], hi = x[0];
  for (int j = 1; j < QK; ++j) {  // the last of equal values wins (numpy's min/max: +0 vs -0)
    lo = x[j] <= lo ? x[j] : lo;
    hi = x[j] >= hi ? x[j] : hi;
  }
  const float d = (hi - lo) / static_cast<float>(NMAX);
  const float id = d != 0.0f ? 1.0f / d : 0.0f;
  *d_out = f32_to_f16(d);
  *m_out = f32_to_f16(lo);
  for (int j = 0; j < QK; ++j) {
    const uint8_t v = cast_u8(std::trunc((x[j] - lo) * id + 0.5f));
    q[j] = std::min<uint8_t>(v, NMAX);
  }
}

void quantize_q4_1(const float *x, BlockQ4_1 *y, int64_t nb) {
  uint8_t q[QK];
  for (int64_t b = 0; b < nb; ++b, x += QK) {
    quantize_affine_block<15>(x, &y[b].d, &y[b].m, q);
    for (int j = 0; j < QK / 2; ++j) y[b].qs[j] = static_cast<uint8_t>(q[j] | (q[j + 16] << 4));
  }
}

void quantize_q5_1(const float *x, BlockQ5_1 *y, int64_t nb) {
  uint8_t q[QK];
  for (int64_t b = 0; b < nb; ++b, x += QK) {
    quantize_affine_block<31>(x, &y[b].d, &y[b].m, q);
    pack_q5(q, y[b].qh, y[b].qs);
  }
}

void dequantize_q4_1(const BlockQ4_1 *y, float *x, int64_t nb) {
  for (int64_t b = 0; b < nb; ++b, x += QK) {
    const float d = f16_to_f32(y[b].d), m = f16_to_f32(y[b].m);
    for (int j = 0; j < QK / 2; ++j) {
      x[j] = d * static_cast<float>(y[b].qs[j] & 0x0f) + m;
      x[j + 16] = d * static_cast<float>(y[b].qs[j] >> 4) + m;
    }
  }
}

void dequantize_q5_1(const BlockQ5_1 *y, float *x, int64_t nb) {
  for (int64_t b = 0; b < nb; ++b, x += QK) {
    const float d = f16_to_f32(y[b].d), m = f16_to_f32(y[b].m);
    uint32_t qh;
    std::memcpy(&qh, y[b].qh, 4);
    for (int j = 0; j < QK; ++j) x[j] = d * static_cast<float>(q5_code(y[b].qs, qh, j)) + m;
  }
}

void dequantize_q8_0(const BlockQ8_0 *y, float *x, int64_t nb) {
  for (int64_t b = 0; b < nb; ++b, x += QK) {
    const float d = f16_to_f32(y[b].d);
    for (int j = 0; j < QK; ++j) x[j] = static_cast<float>(y[b].qs[j]) * d;
  }
}

void dequantize_q4_0(const BlockQ4_0 *y, float *x, int64_t nb) {
  for (int64_t b = 0; b < nb; ++b, x += QK) {
    const float d = f16_to_f32(y[b].d);
    for (int j = 0; j < QK / 2; ++j) {
      x[j] = d * static_cast<float>((y[b].qs[j] & 0x0f) - 8);
      x[j + 16] = d * static_cast<float>((y[b].qs[j] >> 4) - 8);
    }
  }
}

void dequantize_q5_0(const BlockQ5_0 *y, float *x, int64_t nb) {
  for (int64_t b = 0; b < nb; ++b, x += QK) {
    const float d = f16_to_f32(y[b].d);
    uint32_t qh;
    std::memcpy(&qh, y[b].qh, 4);
    for (int j = 0; j < QK; ++j) x[j] = d * static_cast<float>(q5_code(y[b].qs, qh, j) - 16);
  }
}

// Q4_K / Q5_K scales: sub-block j < 4 keeps its 6 bits in bytes j (scale) and j+4 (min); j >= 4
// splits into a low nibble in byte j+4 (scale low, min high) and 2 high bits in the top of
// bytes j-4 (scale) and j (min).
inline void unpack_scale_min(const uint8_t *s, int j, int *sc, int *m) {
  if (j < 4) {
    *sc = s[j] & 63;
    *m = s[j + 4] & 63;
  } else {
    *sc = (s[j + 4] & 0x0f) | ((s[j - 4] >> 6) << 4);
    *m = (s[j + 4] >> 4) | ((s[j] >> 6) << 4);
  }
}

// y = (d*sc)*q - (dmin*m), in that float32 order (gguf.quants).
template <typename Block, bool HIGH>
void dequantize_k45(const Block *y, float *x, int64_t nb) {
  for (int64_t b = 0; b < nb; ++b) {
    const float d = f16_to_f32(y[b].d), dmin = f16_to_f32(y[b].dmin);
    for (int j = 0; j < 8; ++j, x += 32) {
      int sc, m;
      unpack_scale_min(y[b].scales, j, &sc, &m);
      const float dl = d * static_cast<float>(sc), ml = dmin * static_cast<float>(m);
      const uint8_t *qs = y[b].qs + 32 * (j / 2);
      const int shift = 4 * (j & 1);
      for (int i = 0; i < 32; ++i) {
        int q = (qs[i] >> shift) & 0x0f;
        if constexpr (HIGH) q |= ((y[b].qh[i] >> j) & 1) << 4;
        x[i] = dl * static_cast<float>(q) - ml;
      }
    }
  }
}

void dequantize_q6_k(const BlockQ6_K *y, float *x, int64_t nb) {
  for (int64_t b = 0; b < nb; ++b, x += QK_K) {
    const float d = f16_to_f32(y[b].d);
    for (int e = 0; e < QK_K; ++e) {
      const int h = e / 128, r = e % 128;
      const int lo = (y[b].ql[64 * h + r % 64] >> (4 * (r / 64))) & 0x0f;
      const int hi = (y[b].qh[32 * h + r % 32] >> (2 * (r / 32))) & 3;
      const float dl = d * static_cast<float>(y[b].scales[e / 16]);
      x[e] = dl * static_cast<float>((lo | (hi << 4)) - 32);
    }
  }
}

bool cpu_has_avx2() {
#if defined(EDGENANO_X86)
  static const bool ok = [] {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  }();
  return ok;
#else
  return false;
#endif
}

std::atomic<bool> g_simd{true};

void quantize_k(int type, const float *x, uint8_t *y, int64_t nb) {
  const bool simd = cpu_has_avx2() && g_simd.load(std::memory_order_relaxed);
#if defined(EDGENANO_X86)
  if (simd) {
    if (type == QT_Q4_K) avx2::quantize_q4_k(x, reinterpret_cast<BlockQ4_K *>(y), nb);
    if (type == QT_Q5_K) avx2::quantize_q5_k(x, reinterpret_cast<BlockQ5_K *>(y), nb);
    if (type == QT_Q6_K) avx2::quantize_q6_k(x, reinterpret_cast<BlockQ6_K *>(y), nb);
    return;
  }
#endif
  (void)simd;
  if (type == QT_Q4_K) quantize_q4_k(x, reinterpret_cast<BlockQ4_K *>(y), nb);
  if (type == QT_Q5_K) quantize_q5_k(x, reinterpret_cast<BlockQ5_K *>(y), nb);
  if (type == QT_Q6_K) quantize_q6_k(x, reinterpret_cast<BlockQ6_K *>(y), nb);
}

}  // namespace

bool set_quant_simd(bool enabled) { return g_simd.exchange(enabled); }

int64_t qtype_block_size(int type) {
  switch (type) {
    case QT_F32:
    case QT_F16:
    case QT_BF16: return 1;
    case QT_Q4_0:
    case QT_Q4_1:
    case QT_Q5_0:
    case QT_Q5_1:
    case QT_Q8_0: return QK;
    case QT_Q4_K:
    case QT_Q5_K:
    case QT_Q6_K: return QK_K;
    default: return 0;
  }
}

int64_t qtype_type_size(int type) {
  switch (type) {
    case QT_F32: return 4;
    case QT_F16:
    case QT_BF16: return 2;
    case QT_Q4_0: return sizeof(BlockQ4_0);
    case QT_Q5_0: return sizeof(BlockQ5_0);
    case QT_Q4_1: return sizeof(BlockQ4_1);
    case QT_Q5_1: return sizeof(BlockQ5_1);
    case QT_Q8_0: return sizeof(BlockQ8_0);
    case QT_Q4_K: return sizeof(BlockQ4_K);
    case QT_Q5_K: return sizeof(BlockQ5_K);
    case QT_Q6_K: return sizeof(BlockQ6_K);
    default: return 0;
  }
}

void quantize_blocks(int type, const float *x, uint8_t *y, int64_t nb) {
  switch (type) {
    case QT_F32: std::memcpy(y, x, static_cast<size_t>(nb) * 4); break;
    case QT_F16: {
      auto *h = reinterpret_cast<uint16_t *>(y);
      for (int64_t i = 0; i < nb; ++i) h[i] = f32_to_f16(x[i]);
      break;
    }
    case QT_BF16: {
      auto *h = reinterpret_cast<uint16_t *>(y);
      for (int64_t i = 0; i < nb; ++i) h[i] = f32_to_bf16(x[i]);
      break;
    }
    case QT_Q8_0: quantize_q8_0(x, reinterpret_cast<BlockQ8_0 *>(y), nb); break;
    case QT_Q4_0: quantize_q4_0(x, reinterpret_cast<BlockQ4_0 *>(y), nb); break;
    case QT_Q5_0: quantize_q5_0(x, reinterpret_cast<BlockQ5_0 *>(y), nb); break;
    case QT_Q4_1: quantize_q4_1(x, reinterpret_cast<BlockQ4_1 *>(y), nb); break;
    case QT_Q5_1: quantize_q5_1(x, reinterpret_cast<BlockQ5_1 *>(y), nb); break;
    case QT_Q4_K:
    case QT_Q5_K:
    case QT_Q6_K: quantize_k(type, x, y, nb); break;
    default: break;
  }
}

void dequantize_blocks(int type, const uint8_t *y, float *x, int64_t nb) {
  switch (type) {
    case QT_F32: std::memcpy(x, y, static_cast<size_t>(nb) * 4); break;
    case QT_F16: {
      const auto *h = reinterpret_cast<const uint16_t *>(y);
      for (int64_t i = 0; i < nb; ++i) x[i] = f16_to_f32(h[i]);
      break;
    }
    case QT_BF16: {
      const auto *h = reinterpret_cast<const uint16_t *>(y);
      for (int64_t i = 0; i < nb; ++i) x[i] = bf16_to_f32(h[i]);
      break;
    }
    case QT_Q8_0: dequantize_q8_0(reinterpret_cast<const BlockQ8_0 *>(y), x, nb); break;
    case QT_Q4_0: dequantize_q4_0(reinterpret_cast<const BlockQ4_0 *>(y), x, nb); break;
    case QT_Q5_0: dequantize_q5_0(reinterpret_cast<const BlockQ5_0 *>(y), x, nb); break;
    case QT_Q4_1: dequantize_q4_1(reinterpret_cast<const BlockQ4_1 *>(y), x, nb); break;
    case QT_Q5_1: dequantize_q5_1(reinterpret_cast<const BlockQ5_1 *>(y), x, nb); break;
    case QT_Q4_K:
      dequantize_k45<BlockQ4_K, false>(reinterpret_cast<const BlockQ4_K *>(y), x, nb);
      break;
    case QT_Q5_K:
      dequantize_k45<BlockQ5_K, true>(reinterpret_cast<const BlockQ5_K *>(y), x, nb);
      break;
    case QT_Q6_K: dequantize_q6_k(reinterpret_cast<const BlockQ6_K *>(y), x, nb); break;
    default: break;
  }
}

namespace {

// Split n_blocks into contiguous ranges, one per thread; the calling thread takes the first.
// Threads only pay off past ~64K elements each (a thread start costs tens of microseconds).
template <typename Fn>
void parallel_blocks(int64_t n_blocks, int64_t block_size, int n_threads, Fn fn) {
  if (n_threads <= 0) n_threads = static_cast<int>(std::thread::hardware_concurrency());
  n_threads = std::max(n_threads, 1);
  const int64_t min_blocks = std::max<int64_t>(1, (int64_t{1} << 16) / block_size);
  const int64_t nt = std::max<int64_t>(1, std::min<int64_t>(n_threads, n_blocks / min_blocks));
  const int64_t per = (n_blocks + nt - 1) / nt;
  std::vector<std::thread> pool;
  for (int64_t t = 1; t < nt; ++t) {
    const int64_t b0 = t * per, b1 = std::min(n_blocks, b0 + per);
    if (b0 < b1) pool.emplace_back(fn, b0, b1);
  }
  fn(int64_t{0}, std::min(n_blocks, per));
  for (auto &th : pool) th.join();
}

}  // namespace

void quantize(int type, const float *x, uint8_t *y, int64_t n, int n_threads) {
  const int64_t bs = qtype_block_size(type), ts = qtype_type_size(type);
  if (bs == 0) return;
  parallel_blocks(n / bs, bs, n_threads, [=](int64_t b0, int64_t b1) {
    quantize_blocks(type, x + b0 * bs, y + b0 * ts, b1 - b0);
  });
}

void dequantize(int type, const uint8_t *y, float *x, int64_t n, int n_threads) {
  const int64_t bs = qtype_block_size(type), ts = qtype_type_size(type);
  if (bs == 0) return;
  parallel_blocks(n / bs, bs, n_threads, [=](int64_t b0, int64_t b1) {
    dequantize_blocks(type, y + b0 * ts, x + b0 * bs, b1 - b0);
  });
}

}  // namespace edgenano
