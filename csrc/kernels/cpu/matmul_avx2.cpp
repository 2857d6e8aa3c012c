// AVX2/FMA/F16C matmul kernels (built with -mavx2 -mfma -mf16c; entered only after use_avx2()).
// Same contracts as matmul_scalar.cpp. Here: dequantizers, activation quantizers, f32/f16/bf16
// dots, the f32 panel product and the kernel table; the integer dots are in matmul_avx2.h and the
// several-token kernels in matmul_batch_avx2.cpp.
#include <immintrin.h>

#include <cstring>
#include <type_traits>

#include "kernels/cpu/matmul_avx2.h"

namespace edgenano::kern {

namespace {

using namespace avx2;

// ---- dequantizers ----

void dq_f32(const void *src, float *y, int64_t n) {
  auto *s = static_cast<const float *>(src);
  for (int64_t i = 0; i < n; ++i) y[i] = s[i];
}

void dq_f16(const void *src, float *y, int64_t n) {
  auto *h = static_cast<const uint16_t *>(src);
  int64_t i = 0;
  for (; i + 8 <= n; i += 8)
    _mm256_storeu_ps(y + i, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(h + i))));
  for (; i < n; ++i) y[i] = h2f(h[i]);
}

inline __m256 bf16x8(const uint16_t *h) {
  const __m256i v = _mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)h));
  return _mm256_castsi256_ps(_mm256_slli_epi32(v, 16));
}

void dq_bf16(const void *src, float *y, int64_t n) {
  auto *h = static_cast<const uint16_t *>(src);
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) _mm256_storeu_ps(y + i, bf16x8(h + i));
  for (; i < n; ++i) y[i] = bf16_to_f32(h[i]);
}

// 32 signed bytes times d -> y[0..32).
inline void store_i8x32(__m256i q, float d, float *y) {
  const __m256 vd = _mm256_set1_ps(d);
  const __m128i lo = _mm256_castsi256_si128(q), hi = _mm256_extracti128_si256(q, 1);
  _mm256_storeu_ps(y, _mm256_mul_ps(vd, _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(lo))));
  _mm256_storeu_ps(
      y + 8,
      _mm256_mul_ps(vd, _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_unpackhi_epi64(lo, lo)))));
  _mm256_storeu_ps(y + 16, _mm256_mul_ps(vd, _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(hi))));
  _mm256_storeu_ps(
      y + 24,
      _mm256_mul_ps(vd, _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_unpackhi_epi64(hi, hi)))));
}

void dq_q8_0(const void *src, float *y, int64_t n) {
  auto *b = static_cast<const BlockQ8_0 *>(src);
  for (int64_t i = 0; i < n / QK; ++i) store_i8x32(loadu(b[i].qs), h2f(b[i].d), y + i * QK);
}

void dq_q4_0(const void *src, float *y, int64_t n) {
  auto *b = static_cast<const BlockQ4_0 *>(src);
  for (int64_t i = 0; i < n / QK; ++i) {
    const __m256i q = _mm256_sub_epi8(nibbles32(b[i].qs), _mm256_set1_epi8(8));
    store_i8x32(q, h2f(b[i].d), y + i * QK);
  }
}

void dq_q5_0(const void *src, float *y, int64_t n) {
  auto *b = static_cast<const BlockQ5_0 *>(src);
  for (int64_t i = 0; i < n / QK; ++i) {
    uint32_t qh;
    std::memcpy(&qh, b[i].qh, 4);
    __m256i q = _mm256_or_si256(nibbles32(b[i].qs), bits_to_0x10(qh));
    q = _mm256_sub_epi8(q, _mm256_set1_epi8(16));
    store_i8x32(q, h2f(b[i].d), y + i * QK);
  }
}

template <bool Q5>
void dq_q45_1(const void *src, float *y, int64_t n) {
  using B = std::conditional_t<Q5, BlockQ5_1, BlockQ4_1>;
  auto *b = static_cast<const B *>(src);
  for (int64_t i = 0; i < n / QK; ++i) {
    __m256i q = nibbles32(b[i].qs);
    if constexpr (Q5) {
      uint32_t qh;
      std::memcpy(&qh, b[i].qh, 4);
      q = _mm256_or_si256(q, bits_to_0x10(qh));
    }
    const __m256 vd = _mm256_set1_ps(h2f(b[i].d)), vm = _mm256_set1_ps(h2f(b[i].m));
    for (int k = 0; k < 4; ++k) {  // codes are 0..31: zero-extend 8 at a time
      const __m128i part = k < 2 ? _mm256_castsi256_si128(q) : _mm256_extracti128_si256(q, 1);
      const __m128i eight = k % 2 ? _mm_unpackhi_epi64(part, part) : part;
      const __m256 f = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(eight));
      _mm256_storeu_ps(y + i * QK + 8 * k, _mm256_fmadd_ps(f, vd, vm));
    }
  }
}

// Q4_K / Q5_K: chunk c of 64 values = sub-blocks 2c (low nibbles) and 2c+1 (high nibbles).
template <bool Q5>
void dq_k45(const void *src, float *y, int64_t n) {
  using B = std::conditional_t<Q5, BlockQ5_K, BlockQ4_K>;
  auto *b = static_cast<const B *>(src);
  for (int64_t i = 0; i < n / QK_K; ++i, y += QK_K) {
    uint8_t sc[8], m[8];
    k_scales(b[i].scales, sc, m);
    const float d = h2f(b[i].d), dmin = h2f(b[i].dmin);
    for (int c = 0; c < 4; ++c) {
      __m256i lo, hi;
      k45_codes(b[i], c, lo, hi);
      float *o = y + 64 * c;
      store_i8x32(lo, d * sc[2 * c], o);
      store_i8x32(hi, d * sc[2 * c + 1], o + 32);
      const __m256 m0 = _mm256_set1_ps(dmin * m[2 * c]), m1 = _mm256_set1_ps(dmin * m[2 * c + 1]);
      for (int j = 0; j < 32; j += 8) {
        _mm256_storeu_ps(o + j, _mm256_sub_ps(_mm256_loadu_ps(o + j), m0));
        _mm256_storeu_ps(o + 32 + j, _mm256_sub_ps(_mm256_loadu_ps(o + 32 + j), m1));
      }
    }
  }
}

void dq_q6_k(const void *src, float *y, int64_t n) {
  auto *b = static_cast<const BlockQ6_K *>(src);
  for (int64_t i = 0; i < n / QK_K; ++i, y += QK_K) {
    const float d = h2f(b[i].d);
    for (int h = 0; h < 2; ++h)
      for (int q = 0; q < 4; ++q) {
        const __m256i c = _mm256_sub_epi8(q6_codes(b[i], h, q), _mm256_set1_epi8(32));
        float *o = y + 128 * h + 32 * q;
        const int g = 8 * h + 2 * q;
        alignas(32) float tmp[32];
        store_i8x32(c, 1.f, tmp);
        const __m256 s0 = _mm256_set1_ps(d * b[i].scales[g]),
                     s1 = _mm256_set1_ps(d * b[i].scales[g + 1]);
        _mm256_storeu_ps(o, _mm256_mul_ps(s0, _mm256_load_ps(tmp)));
        _mm256_storeu_ps(o + 8, _mm256_mul_ps(s0, _mm256_load_ps(tmp + 8)));
        _mm256_storeu_ps(o + 16, _mm256_mul_ps(s1, _mm256_load_ps(tmp + 16)));
        _mm256_storeu_ps(o + 24, _mm256_mul_ps(s1, _mm256_load_ps(tmp + 24)));
      }
  }
}

// ---- activation quantizers (same rounding as the scalar twin: x * (127/amax), to nearest even) --

void quant_a8(const float *x, BlockA8 *y, int64_t n) {
  for (int64_t i = 0; i < n / QK; ++i, x += QK) {
    const float amax = amax_of(x, QK);
    int s0, s1;
    _mm256_storeu_si256((__m256i *)y[i].qs, quant32(x, _mm256_set1_ps(inv_scale(amax)), s0, s1));
    y[i].d = amax / 127.f;
    y[i].s = y[i].d * float(s0 + s1);
  }
}

void quant_a8k(const float *x, BlockA8K *y, int64_t n) {
  for (int64_t i = 0; i < n / QK_K; ++i, x += QK_K) {
    const float amax = amax_of(x, QK_K);
    const __m256 id = _mm256_set1_ps(inv_scale(amax));
    y[i].d = amax / 127.f;
    for (int c = 0; c < QK_K / 32; ++c) {
      int s0, s1;
      _mm256_storeu_si256((__m256i *)(y[i].qs + 32 * c), quant32(x + 32 * c, id, s0, s1));
      y[i].bsums[2 * c] = int16_t(s0);
      y[i].bsums[2 * c + 1] = int16_t(s1);
    }
  }
}

// ---- dot products ----

template <int KIND>  // 0 f32, 1 f16, 2 bf16
inline __m256 load8(const uint8_t *w, int64_t k) {
  if constexpr (KIND == 0)
    return _mm256_loadu_ps(reinterpret_cast<const float *>(w) + k);
  else if constexpr (KIND == 1)
    return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(w + 2 * k)));
  else
    return bf16x8(reinterpret_cast<const uint16_t *>(w) + k);
}

template <int KIND>
float dot_float(const uint8_t *w, const float *a, int64_t n) {
  __m256 acc[4] = {_mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps(),
                   _mm256_setzero_ps()};
  int64_t k = 0;
  for (; k + 32 <= n; k += 32)
    for (int j = 0; j < 4; ++j)
      acc[j] = _mm256_fmadd_ps(load8<KIND>(w, k + 8 * j), _mm256_loadu_ps(a + k + 8 * j), acc[j]);
  for (; k + 8 <= n; k += 8)
    acc[0] = _mm256_fmadd_ps(load8<KIND>(w, k), _mm256_loadu_ps(a + k), acc[0]);
  float s = hsum(_mm256_add_ps(_mm256_add_ps(acc[0], acc[1]), _mm256_add_ps(acc[2], acc[3])));
  for (; k < n; ++k) {
    if constexpr (KIND == 0)
      s += reinterpret_cast<const float *>(w)[k] * a[k];
    else if constexpr (KIND == 1)
      s += h2f(reinterpret_cast<const uint16_t *>(w)[k]) * a[k];
    else
      s += bf16_to_f32(reinterpret_cast<const uint16_t *>(w)[k]) * a[k];
  }
  return s;
}

// ---- the f32 panel product: a 6-token x 16-row register tile, weights broadcast-free ----

inline void transpose8(__m256 r[8]) {
  __m256 t[8];
  for (int i = 0; i < 4; ++i) {
    t[2 * i] = _mm256_unpacklo_ps(r[2 * i], r[2 * i + 1]);
    t[2 * i + 1] = _mm256_unpackhi_ps(r[2 * i], r[2 * i + 1]);
  }
  __m256 u[8];
  for (int i = 0; i < 2; ++i) {
    u[4 * i + 0] = _mm256_shuffle_ps(t[4 * i], t[4 * i + 2], 0x44);
    u[4 * i + 1] = _mm256_shuffle_ps(t[4 * i], t[4 * i + 2], 0xee);
    u[4 * i + 2] = _mm256_shuffle_ps(t[4 * i + 1], t[4 * i + 3], 0x44);
    u[4 * i + 3] = _mm256_shuffle_ps(t[4 * i + 1], t[4 * i + 3], 0xee);
  }
  for (int i = 0; i < 4; ++i) {
    r[i] = _mm256_permute2f128_ps(u[i], u[i + 4], 0x20);
    r[i + 4] = _mm256_permute2f128_ps(u[i], u[i + 4], 0x31);
  }
}

void pack_panel(const float *rows, int64_t kc, float *wp) {
  int64_t k = 0;
  for (; k + 8 <= kc; k += 8)
    for (int h = 0; h < 2; ++h) {
      __m256 r[8];
      for (int i = 0; i < 8; ++i) r[i] = _mm256_loadu_ps(rows + (8 * h + i) * kKC + k);
      transpose8(r);
      for (int j = 0; j < 8; ++j) _mm256_storeu_ps(wp + (k + j) * kPanel + 8 * h, r[j]);
    }
  for (; k < kc; ++k)
    for (int r = 0; r < kPanel; ++r) wp[k * kPanel + r] = rows[r * kKC + k];
}

inline void store_row(float *o, __m256 c0, __m256 c1, int nr, bool acc) {
  if (nr == kPanel) {
    if (acc) {
      c0 = _mm256_add_ps(c0, _mm256_loadu_ps(o));
      c1 = _mm256_add_ps(c1, _mm256_loadu_ps(o + 8));
    }
    _mm256_storeu_ps(o, c0);
    _mm256_storeu_ps(o + 8, c1);
    return;
  }
  alignas(32) float t[kPanel];
  _mm256_store_ps(t, c0);
  _mm256_store_ps(t + 8, c1);
  for (int r = 0; r < nr; ++r) o[r] = acc ? o[r] + t[r] : t[r];
}

// Loops over m are unrolled fully so the accumulators stay in registers.
template <int MR>
void tile(const float *wp, int64_t kc, const float *x, int64_t ldx, float *y, int64_t ldy, int nr,
          bool acc) {
  __m256 c0[MR], c1[MR];
#pragma GCC unroll 8
  for (int m = 0; m < MR; ++m) c0[m] = c1[m] = _mm256_setzero_ps();
  for (int64_t k = 0; k < kc; ++k) {
    const __m256 w0 = _mm256_loadu_ps(wp + k * kPanel), w1 = _mm256_loadu_ps(wp + k * kPanel + 8);
#pragma GCC unroll 8
    for (int m = 0; m < MR; ++m) {
      const __m256 xb = _mm256_broadcast_ss(x + m * ldx + k);
      c0[m] = _mm256_fmadd_ps(w0, xb, c0[m]);
      c1[m] = _mm256_fmadd_ps(w1, xb, c1[m]);
    }
  }
#pragma GCC unroll 8
  for (int m = 0; m < MR; ++m) store_row(y + m * ldy, c0[m], c1[m], nr, acc);
}

void gemm_panel(const float *wp, int64_t kc, const float *x, int64_t ldx, float *y, int64_t ldy,
                int T, int nr, bool acc) {
  int t = 0;
  for (; t + 6 <= T; t += 6) tile<6>(wp, kc, x + t * ldx, ldx, y + t * ldy, ldy, nr, acc);
  switch (T - t) {
    case 5: tile<5>(wp, kc, x + t * ldx, ldx, y + t * ldy, ldy, nr, acc); break;
    case 4: tile<4>(wp, kc, x + t * ldx, ldx, y + t * ldy, ldy, nr, acc); break;
    case 3: tile<3>(wp, kc, x + t * ldx, ldx, y + t * ldy, ldy, nr, acc); break;
    case 2: tile<2>(wp, kc, x + t * ldx, ldx, y + t * ldy, ldy, nr, acc); break;
    case 1: tile<1>(wp, kc, x + t * ldx, ldx, y + t * ldy, ldy, nr, acc); break;
    default: break;
  }
}

const KernelTable kAvx2 = {
    quant_a8,
    quant_a8k,
    {rows<float, dot_float<0>>, rows<float, dot_float<1>>, rows<float, dot_float<2>>, q0_rows<0>,
     q0_rows<1>, q0_rows<2>, q0_rows<3>, q0_rows<4>, k45_rows<false>, k45_rows<true>, q6k_rows},
    {dq_f32, dq_f16, dq_bf16, dq_q8_0, dq_q4_0, dq_q5_0, dq_q45_1<false>, dq_q45_1<true>,
     dq_k45<false>, dq_k45<true>, dq_q6_k},
    pack_panel,
    gemm_panel,
    quant_quads,
    quant_quads_k,
    {nullptr, nullptr, nullptr, quad_gemm_q8, quad_gemm<1>, quad_gemm<2>, nullptr, nullptr,
     quad_gemm_k<false>, quad_gemm_k<true>, quad_gemm_q6k},
};

}  // namespace

const KernelTable &avx2_kernels() { return kAvx2; }

}  // namespace edgenano::kern
