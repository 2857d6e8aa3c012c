// Reference quantize/dequantize of every ggml type edgenano handles, and the traits table.
// The *_0 / *_1 formats and F16/BF16 reproduce gguf.quants (ggml's reference) bit for bit: same
// float32 operation order, no fused multiply-add, and numpy's float->int cast semantics.
#if defined(__clang__)
#pragma STDC FP_CONTRACT OFF
#elif defined(__GNUC__)
#pragma GCC optimize("fp-contract=off")
#endif

#include <algorithm>
#include <climits>
#include <cmath>

#include "ggml/format.h"

namespace edgenano::ggml {
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

void quantize_row_f32(const float *x, void *y, int64_t n) {
  std::memcpy(y, x, static_cast<size_t>(n) * 4);
}

void quantize_row_f16(const float *x, void *y, int64_t n) {
  auto *h = static_cast<uint16_t *>(y);
  for (int64_t i = 0; i < n; ++i) h[i] = f32_to_f16(x[i]);
}

void quantize_row_bf16(const float *x, void *y, int64_t n) {
  auto *h = static_cast<uint16_t *>(y);
  for (int64_t i = 0; i < n; ++i) h[i] = f32_to_bf16(x[i]);
}

void quantize_row_q8_0(const float *x, void *out, int64_t n) {
  auto *y = static_cast<BlockQ8_0 *>(out);
  for (int64_t b = 0; b < n / QK; ++b, x += QK) {
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

void quantize_row_q4_0(const float *x, void *out, int64_t n) {
  auto *y = static_cast<BlockQ4_0 *>(out);
  uint8_t q[QK];
  for (int64_t b = 0; b < n / QK; ++b, x += QK) {
    quantize_sym_block<8>(x, &y[b].d, q);
    for (int j = 0; j < QK / 2; ++j) y[b].qs[j] = static_cast<uint8_t>(q[j] | (q[j + 16] << 4));
  }
}

void quantize_row_q5_0(const float *x, void *out, int64_t n) {
  auto *y = static_cast<BlockQ5_0 *>(out);
  uint8_t q[QK];
  for (int64_t b = 0; b < n / QK; ++b, x += QK) {
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

void quantize_row_q4_1(const float *x, void *out, int64_t n) {
  auto *y = static_cast<BlockQ4_1 *>(out);
  uint8_t q[QK];
  for (int64_t b = 0; b < n / QK; ++b, x += QK) {
    quantize_affine_block<15>(x, &y[b].d, &y[b].m, q);
    for (int j = 0; j < QK / 2; ++j) y[b].qs[j] = static_cast<uint8_t>(q[j] | (q[j + 16] << 4));
  }
}

void quantize_row_q5_1(const float *x, void *out, int64_t n) {
  auto *y = static_cast<BlockQ5_1 *>(out);
  uint8_t q[QK];
  for (int64_t b = 0; b < n / QK; ++b, x += QK) {
    quantize_affine_block<31>(x, &y[b].d, &y[b].m, q);
    pack_q5(q, y[b].qh, y[b].qs);
  }
}

void quantize_row_q4_k(const float *x, void *y, int64_t n) {
  quantize_q4_k(x, static_cast<BlockQ4_K *>(y), n / QK_K);
}
void quantize_row_q5_k(const float *x, void *y, int64_t n) {
  quantize_q5_k(x, static_cast<BlockQ5_K *>(y), n / QK_K);
}
void quantize_row_q6_k(const float *x, void *y, int64_t n) {
  quantize_q6_k(x, static_cast<BlockQ6_K *>(y), n / QK_K);
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

}  // namespace

void dequantize_row_f32(const void *src, float *x, int64_t n) {
  std::memcpy(x, src, static_cast<size_t>(n) * 4);
}

void dequantize_row_f16(const void *src, float *x, int64_t n) {
  const auto *h = static_cast<const uint16_t *>(src);
  for (int64_t i = 0; i < n; ++i) x[i] = f16_to_f32(h[i]);
}

void dequantize_row_bf16(const void *src, float *x, int64_t n) {
  const auto *h = static_cast<const uint16_t *>(src);
  for (int64_t i = 0; i < n; ++i) x[i] = bf16_to_f32(h[i]);
}

void dequantize_row_q8_0(const void *src, float *x, int64_t n) {
  const auto *y = static_cast<const BlockQ8_0 *>(src);
  for (int64_t b = 0; b < n / QK; ++b, x += QK) {
    const float d = f16_to_f32(y[b].d);
    for (int j = 0; j < QK; ++j) x[j] = static_cast<float>(y[b].qs[j]) * d;
  }
}

void dequantize_row_q4_0(const void *src, float *x, int64_t n) {
  const auto *y = static_cast<const BlockQ4_0 *>(src);
  for (int64_t b = 0; b < n / QK; ++b, x += QK) {
    const float d = f16_to_f32(y[b].d);
    for (int j = 0; j < QK / 2; ++j) {
      x[j] = d * static_cast<float>((y[b].qs[j] & 0x0f) - 8);
      x[j + 16] = d * static_cast<float>((y[b].qs[j] >> 4) - 8);
    }
  }
}

void dequantize_row_q5_0(const void *src, float *x, int64_t n) {
  const auto *y = static_cast<const BlockQ5_0 *>(src);
  for (int64_t b = 0; b < n / QK; ++b, x += QK) {
    const float d = f16_to_f32(y[b].d);
    uint32_t qh;
    std::memcpy(&qh, y[b].qh, 4);
    for (int j = 0; j < QK; ++j) x[j] = d * static_cast<float>(q5_code(y[b].qs, qh, j) - 16);
  }
}

void dequantize_row_q4_1(const void *src, float *x, int64_t n) {
  const auto *y = static_cast<const BlockQ4_1 *>(src);
  for (int64_t b = 0; b < n / QK; ++b, x += QK) {
    const float d = f16_to_f32(y[b].d), m = f16_to_f32(y[b].m);
    for (int j = 0; j < QK / 2; ++j) {
      x[j] = d * static_cast<float>(y[b].qs[j] & 0x0f) + m;
      x[j + 16] = d * static_cast<float>(y[b].qs[j] >> 4) + m;
    }
  }
}

void dequantize_row_q5_1(const void *src, float *x, int64_t n) {
  const auto *y = static_cast<const BlockQ5_1 *>(src);
  for (int64_t b = 0; b < n / QK; ++b, x += QK) {
    const float d = f16_to_f32(y[b].d), m = f16_to_f32(y[b].m);
    uint32_t qh;
    std::memcpy(&qh, y[b].qh, 4);
    for (int j = 0; j < QK; ++j) x[j] = d * static_cast<float>(q5_code(y[b].qs, qh, j)) + m;
  }
}

void dequantize_row_q4_k(const void *src, float *x, int64_t n) {
  dequantize_k45<BlockQ4_K, false>(static_cast<const BlockQ4_K *>(src), x, n / QK_K);
}

void dequantize_row_q5_k(const void *src, float *x, int64_t n) {
  dequantize_k45<BlockQ5_K, true>(static_cast<const BlockQ5_K *>(src), x, n / QK_K);
}

void dequantize_row_q6_k(const void *src, float *x, int64_t n) {
  const auto *y = static_cast<const BlockQ6_K *>(src);
  for (int64_t b = 0; b < n / QK_K; ++b, x += QK_K) {
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

namespace {
const TypeTraits kTraits[] = {
    {T_F32, "F32", 1, 4, dequantize_row_f32, quantize_row_f32},
    {T_F16, "F16", 1, 2, dequantize_row_f16, quantize_row_f16},
    {T_BF16, "BF16", 1, 2, dequantize_row_bf16, quantize_row_bf16},
    {T_Q8_0, "Q8_0", QK, sizeof(BlockQ8_0), dequantize_row_q8_0, quantize_row_q8_0},
    {T_Q4_0, "Q4_0", QK, sizeof(BlockQ4_0), dequantize_row_q4_0, quantize_row_q4_0},
    {T_Q4_1, "Q4_1", QK, sizeof(BlockQ4_1), dequantize_row_q4_1, quantize_row_q4_1},
    {T_Q5_0, "Q5_0", QK, sizeof(BlockQ5_0), dequantize_row_q5_0, quantize_row_q5_0},
    {T_Q5_1, "Q5_1", QK, sizeof(BlockQ5_1), dequantize_row_q5_1, quantize_row_q5_1},
    {T_Q4_K, "Q4_K", QK_K, sizeof(BlockQ4_K), dequantize_row_q4_k, quantize_row_q4_k},
    {T_Q5_K, "Q5_K", QK_K, sizeof(BlockQ5_K), dequantize_row_q5_k, quantize_row_q5_k},
    {T_Q6_K, "Q6_K", QK_K, sizeof(BlockQ6_K), dequantize_row_q6_k, quantize_row_q6_k},
};
}  // namespace

const TypeTraits *all_types(size_t *count) {
  *count = sizeof(kTraits) / sizeof(kTraits[0]);
  return kTraits;
}

const TypeTraits *traits(int type) {
  for (const auto &t : kTraits)
    if (t.type == type) return &t;
  return nullptr;
}

int type_block_size(int type) {
  const TypeTraits *t = traits(type);
  return t ? t->block_size : 0;
}
size_t type_block_bytes(int type) {
  const TypeTraits *t = traits(type);
  return t ? t->type_size : 0;
}
bool type_supported(int type) { return traits(type) != nullptr; }
const char *type_name(int type) {
  const TypeTraits *t = traits(type);
  return t ? t->name : "unsupported";
}
size_t row_bytes(int type, int64_t n) {
  const TypeTraits *t = traits(type);
  if (!t || n <= 0 || n % t->block_size) return 0;
  return size_t(n / t->block_size) * t->type_size;
}

}  // namespace edgenano::ggml
