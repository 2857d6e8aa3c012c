// AVX2/FMA/F16C matmul kernels (built with -mavx2 -mfma -mf16c; entered only after use_avx2()).
// Same contracts as matmul_scalar.cpp. Integer dots: unsigned weight codes times signed int8
// activations with maddubs (no int16 saturation: |code| <= 63, |a| <= 127), zero points folded
// into per-block activation sums.
#include <immintrin.h>

#include <algorithm>
#include <cstring>

#include <tuple>
#include <type_traits>
#include <vector>

#include "kernels/matmul_impl.h"
#include "kernels/simd_avx2.h"

namespace edgenano::kern {

namespace {

using avx2::h2f;
using avx2::hsum;
using avx2::hsum_i32;

// Weight rows stream from memory once per token: prefetch this far ahead of the loads.
constexpr int kPrefetch = 2048;

// 16 bytes of nibbles -> 32 bytes: low nibbles in bytes 0..15, high nibbles in bytes 16..31.
inline __m256i nibbles32(const uint8_t *p) {
  const __m128i t = _mm_loadu_si128(reinterpret_cast<const __m128i *>(p));
  const __m256i v = _mm256_set_m128i(_mm_srli_epi16(t, 4), t);
  return _mm256_and_si256(v, _mm256_set1_epi8(0x0f));
}

// Bit j of x -> byte j = 0x10 (set) or 0 (clear), j < 32.
inline __m256i bits_to_0x10(uint32_t x) {
  const __m256i sel =
      _mm256_setr_epi64x(0, 0x0101010101010101LL, 0x0202020202020202LL, 0x0303030303030303LL);
  __m256i v = _mm256_shuffle_epi8(_mm256_set1_epi32(int(x)), sel);  // byte j <- byte j/8 of x
  const __m256i bit = _mm256_set1_epi64x(int64_t(0x8040201008040201ULL));
  v = _mm256_cmpeq_epi8(_mm256_and_si256(v, bit), bit);
  return _mm256_and_si256(v, _mm256_set1_epi8(0x10));
}

inline __m256 dot_u8s8(__m256i u, __m256i s) {
  const __m256i p = _mm256_madd_epi16(_mm256_maddubs_epi16(u, s), _mm256_set1_epi16(1));
  return _mm256_cvtepi32_ps(p);
}

inline __m256i loadu(const void *p) { return _mm256_loadu_si256(static_cast<const __m256i *>(p)); }

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

void k_scales(const uint8_t *s, uint8_t sc[8], uint8_t m[8]) {
  for (int j = 0; j < 4; ++j) {
    sc[j] = s[j] & 63;
    m[j] = s[j + 4] & 63;
    sc[j + 4] = (s[j + 8] & 0xf) | ((s[j] >> 6) << 4);
    m[j + 4] = (s[j + 8] >> 4) | ((s[j + 4] >> 6) << 4);
  }
}

// Q4_K / Q5_K: chunk c of 64 values = sub-blocks 2c (low nibbles) and 2c+1 (high nibbles).
template <bool Q5>
void dq_k45(const void *src, float *y, int64_t n) {
  using B = std::conditional_t<Q5, BlockQ5_K, BlockQ4_K>;
  auto *b = static_cast<const B *>(src);
  const __m256i m4 = _mm256_set1_epi8(0x0f);
  for (int64_t i = 0; i < n / QKK; ++i, y += QKK) {
    uint8_t sc[8], m[8];
    k_scales(b[i].scales, sc, m);
    const float d = h2f(b[i].d), dmin = h2f(b[i].dmin);
    for (int c = 0; c < 4; ++c) {
      const __m256i q = loadu(b[i].qs + 32 * c);
      __m256i lo = _mm256_and_si256(q, m4), hi = _mm256_and_si256(_mm256_srli_epi16(q, 4), m4);
      if constexpr (Q5) {
        const __m256i hb = loadu(b[i].qh), one = _mm256_set1_epi8(1);
        lo = _mm256_or_si256(
            lo, _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(hb, 2 * c), one), 4));
        hi = _mm256_or_si256(
            hi, _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(hb, 2 * c + 1), one), 4));
      }
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

// Q6_K codes (0..63) of 128-half h, quarter q (values 128h + 32q .. +32).
inline __m256i q6_codes(const BlockQ6_K &b, int h, int q) {
  const __m256i m4 = _mm256_set1_epi8(0x0f), m3 = _mm256_set1_epi8(3);
  const __m256i l = loadu(b.ql + 64 * h + 32 * (q & 1));
  const __m256i low =
      q < 2 ? _mm256_and_si256(l, m4) : _mm256_and_si256(_mm256_srli_epi16(l, 4), m4);
  const __m256i high = _mm256_and_si256(_mm256_srli_epi16(loadu(b.qh + 32 * h), 2 * q), m3);
  return _mm256_or_si256(low, _mm256_slli_epi16(high, 4));
}

void dq_q6_k(const void *src, float *y, int64_t n) {
  auto *b = static_cast<const BlockQ6_K *>(src);
  for (int64_t i = 0; i < n / QKK; ++i, y += QKK) {
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

inline __m256 vabs(__m256 v) { return _mm256_andnot_ps(_mm256_set1_ps(-0.f), v); }

inline float hmax(__m256 v) {
  __m128 s = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_max_ps(s, _mm_movehl_ps(s, s));
  s = _mm_max_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

// 32 floats times id -> 32 int8 (in order); sums of the 16-value halves in s0, s1.
inline __m256i quant32(const float *x, __m256 id, int &s0, int &s1) {
  __m256i q[4];
  for (int j = 0; j < 4; ++j)
    q[j] = _mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(x + 8 * j), id));
  s0 = hsum_i32(_mm256_add_epi32(q[0], q[1]));
  s1 = hsum_i32(_mm256_add_epi32(q[2], q[3]));
  const __m256i p16 = _mm256_packs_epi32(q[0], q[1]), p16b = _mm256_packs_epi32(q[2], q[3]);
  const __m256i p8 = _mm256_packs_epi16(p16, p16b);
  return _mm256_permutevar8x32_epi32(p8, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
}

void quant_a8(const float *x, BlockA8 *y, int64_t n) {
  for (int64_t i = 0; i < n / QK; ++i, x += QK) {
    __m256 mx = vabs(_mm256_loadu_ps(x));
    for (int j = 8; j < QK; j += 8) mx = _mm256_max_ps(mx, vabs(_mm256_loadu_ps(x + j)));
    const float amax = hmax(mx);
    const float id = amax > 0.f ? 127.f / amax : 0.f;
    int s0, s1;
    _mm256_storeu_si256((__m256i *)y[i].qs, quant32(x, _mm256_set1_ps(id), s0, s1));
    y[i].d = amax / 127.f;
    y[i].s = y[i].d * float(s0 + s1);
  }
}

void quant_a8k(const float *x, BlockA8K *y, int64_t n) {
  for (int64_t i = 0; i < n / QKK; ++i, x += QKK) {
    __m256 mx = vabs(_mm256_loadu_ps(x));
    for (int j = 8; j < QKK; j += 8) mx = _mm256_max_ps(mx, vabs(_mm256_loadu_ps(x + j)));
    const float amax = hmax(mx);
    const __m256 id = _mm256_set1_ps(amax > 0.f ? 127.f / amax : 0.f);
    y[i].d = amax / 127.f;
    for (int c = 0; c < QKK / 32; ++c) {
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

float dot_q8_0(const uint8_t *w, const BlockA8 *a, int64_t n) {
  auto *b = reinterpret_cast<const BlockQ8_0 *>(w);
  __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
  const int64_t nb = n / QK;
  int64_t i = 0;
  for (; i + 2 <= nb; i += 2) {
    _mm_prefetch(reinterpret_cast<const char *>(b + i) + kPrefetch, _MM_HINT_T0);
    const __m256i w0 = loadu(b[i].qs), w1 = loadu(b[i + 1].qs);
    const __m256 p0 = dot_u8s8(_mm256_abs_epi8(w0), _mm256_sign_epi8(loadu(a[i].qs), w0));
    const __m256 p1 = dot_u8s8(_mm256_abs_epi8(w1), _mm256_sign_epi8(loadu(a[i + 1].qs), w1));
    acc0 = _mm256_fmadd_ps(p0, _mm256_set1_ps(h2f(b[i].d) * a[i].d), acc0);
    acc1 = _mm256_fmadd_ps(p1, _mm256_set1_ps(h2f(b[i + 1].d) * a[i + 1].d), acc1);
  }
  for (; i < nb; ++i) {
    const __m256i w0 = loadu(b[i].qs);
    const __m256 p0 = dot_u8s8(_mm256_abs_epi8(w0), _mm256_sign_epi8(loadu(a[i].qs), w0));
    acc0 = _mm256_fmadd_ps(p0, _mm256_set1_ps(h2f(b[i].d) * a[i].d), acc0);
  }
  return hsum(_mm256_add_ps(acc0, acc1));
}

// Q4_0 / Q5_0: codes u = q + zero (0..15 / 0..31); sum d*(u - zero)*a = d*(sum u*a) - zero*d*s.
template <bool Q5>
float dot_q45_0(const uint8_t *w, const BlockA8 *a, int64_t n) {
  using B = std::conditional_t<Q5, BlockQ5_0, BlockQ4_0>;
  auto *b = reinterpret_cast<const B *>(w);
  __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
  float zsum = 0.f;
  const int64_t nb = n / QK;
  auto codes = [&](int64_t i) {
    __m256i u = nibbles32(b[i].qs);
    if constexpr (Q5) {
      uint32_t qh;
      std::memcpy(&qh, b[i].qh, 4);
      u = _mm256_or_si256(u, bits_to_0x10(qh));
    }
    return u;
  };
  int64_t i = 0;
  for (; i + 2 <= nb; i += 2) {
    _mm_prefetch(reinterpret_cast<const char *>(b + i) + kPrefetch, _MM_HINT_T0);
    const float d0 = h2f(b[i].d), d1 = h2f(b[i + 1].d);
    const __m256 p0 = dot_u8s8(codes(i), loadu(a[i].qs));
    const __m256 p1 = dot_u8s8(codes(i + 1), loadu(a[i + 1].qs));
    acc0 = _mm256_fmadd_ps(p0, _mm256_set1_ps(d0 * a[i].d), acc0);
    acc1 = _mm256_fmadd_ps(p1, _mm256_set1_ps(d1 * a[i + 1].d), acc1);
    zsum += d0 * a[i].s + d1 * a[i + 1].s;
  }
  for (; i < nb; ++i) {
    const float d0 = h2f(b[i].d);
    acc0 = _mm256_fmadd_ps(dot_u8s8(codes(i), loadu(a[i].qs)), _mm256_set1_ps(d0 * a[i].d), acc0);
    zsum += d0 * a[i].s;
  }
  return hsum(_mm256_add_ps(acc0, acc1)) - (Q5 ? 16.f : 8.f) * zsum;
}

// Q4_K / Q5_K: sum over sub-blocks j of d*sc_j*(u.a)_j - dmin*m_j*(sum a)_j.
template <bool Q5>
float dot_k45(const uint8_t *w, const BlockA8K *a, int64_t n) {
  using B = std::conditional_t<Q5, BlockQ5_K, BlockQ4_K>;
  auto *b = reinterpret_cast<const B *>(w);
  const __m256i m4 = _mm256_set1_epi8(0x0f), one8 = _mm256_set1_epi8(1);
  __m256 acc = _mm256_setzero_ps(), accm = _mm256_setzero_ps();
  for (int64_t i = 0; i < n / QKK; ++i) {
    uint8_t sc[8], m[8];
    k_scales(b[i].scales, sc, m);
    const __m256i bs = _mm256_madd_epi16(loadu(a[i].bsums), _mm256_set1_epi16(1));  // 8 sums
    int64_t m8;
    std::memcpy(&m8, m, 8);
    const __m256i mins = _mm256_cvtepu8_epi32(_mm_cvtsi64_si128(m8));
    accm = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_mullo_epi32(bs, mins)),
                           _mm256_set1_ps(h2f(b[i].dmin) * a[i].d), accm);
    __m256i hb = _mm256_setzero_si256();
    if constexpr (Q5) hb = loadu(b[i].qh);
    __m256i sumi = _mm256_setzero_si256();
    for (int c = 0; c < 4; ++c) {
      const __m256i q = loadu(b[i].qs + 32 * c);
      __m256i lo = _mm256_and_si256(q, m4), hi = _mm256_and_si256(_mm256_srli_epi16(q, 4), m4);
      if constexpr (Q5) {
        lo = _mm256_or_si256(lo, _mm256_slli_epi16(_mm256_and_si256(hb, one8), 4));
        hi = _mm256_or_si256(
            hi, _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(hb, 1), one8), 4));
        hb = _mm256_srli_epi16(hb, 2);
      }
      const __m256i p0 = _mm256_maddubs_epi16(lo, loadu(a[i].qs + 64 * c));
      const __m256i p1 = _mm256_maddubs_epi16(hi, loadu(a[i].qs + 64 * c + 32));
      sumi = _mm256_add_epi32(sumi, _mm256_madd_epi16(p0, _mm256_set1_epi16(sc[2 * c])));
      sumi = _mm256_add_epi32(sumi, _mm256_madd_epi16(p1, _mm256_set1_epi16(sc[2 * c + 1])));
    }
    acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(sumi), _mm256_set1_ps(h2f(b[i].d) * a[i].d), acc);
  }
  return hsum(acc) - hsum(accm);
}

// Q6_K: codes u = q + 32 (0..63), one int8 scale per 16 values.
float dot_q6_k(const uint8_t *w, const BlockA8K *a, int64_t n) {
  auto *b = reinterpret_cast<const BlockQ6_K *>(w);
  __m256 acc = _mm256_setzero_ps();
  for (int64_t i = 0; i < n / QKK; ++i) {
    const __m256i sc16 = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)b[i].scales));
    const __m256i zero_terms = _mm256_madd_epi16(sc16, loadu(a[i].bsums));
    __m256i sumi = _mm256_sub_epi32(_mm256_setzero_si256(), _mm256_slli_epi32(zero_terms, 5));
    for (int h = 0; h < 2; ++h)
      for (int q = 0; q < 4; ++q) {
        const int g = 8 * h + 2 * q;
        const __m256i p = _mm256_maddubs_epi16(q6_codes(b[i], h, q), loadu(a[i].qs + 32 * (g / 2)));
        const __m256i s =
            _mm256_set_m128i(_mm_set1_epi16(b[i].scales[g + 1]), _mm_set1_epi16(b[i].scales[g]));
        sumi = _mm256_add_epi32(sumi, _mm256_madd_epi16(p, s));
      }
    acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(sumi), _mm256_set1_ps(h2f(b[i].d) * a[i].d), acc);
  }
  return hsum(acc);
}

template <class A, float (*F)(const uint8_t *, const A *, int64_t)>
void rows(const DotArgs &a) {
  for (int t = 0; t < a.T; ++t) {
    auto *act = reinterpret_cast<const A *>(a.act + size_t(t) * a.act_stride);
    float *y = a.y + t * a.ldy;
    for (int64_t r = 0; r < a.nrows; ++r) {
      const float v = F(a.w + r * a.row_bytes, act, a.n);
      y[r] = a.acc ? y[r] + v : v;
    }
  }
}

// ---- several tokens per K-quant block (prefill batches below gemm_min_batch): codes and scales
// are unpacked once per block and dotted with up to kTokK tokens' activations ----

constexpr int kTokK = 4;

template <bool Q5, int NT>
void k45_row_tokens(const uint8_t *w, const uint8_t *act, size_t stride, int64_t nb, float *y,
                    int64_t ldy, bool acc) {
  using B = std::conditional_t<Q5, BlockQ5_K, BlockQ4_K>;
  auto *b = reinterpret_cast<const B *>(w);
  const __m256i m4 = _mm256_set1_epi8(0x0f), one8 = _mm256_set1_epi8(1);
  const BlockA8K *a[NT];
  __m256 sum[NT];
#pragma GCC unroll 4
  for (int t = 0; t < NT; ++t) {
    a[t] = reinterpret_cast<const BlockA8K *>(act + size_t(t) * stride);
    sum[t] = _mm256_setzero_ps();
  }
  for (int64_t i = 0; i < nb; ++i) {
    uint8_t sc[8], m[8];
    k_scales(b[i].scales, sc, m);
    int64_t m8;
    std::memcpy(&m8, m, 8);
    const __m256i mins = _mm256_cvtepu8_epi32(_mm_cvtsi64_si128(m8));
    __m256i sumi[NT];
#pragma GCC unroll 4
    for (int t = 0; t < NT; ++t) sumi[t] = _mm256_setzero_si256();
    __m256i hb = _mm256_setzero_si256();
    if constexpr (Q5) hb = loadu(b[i].qh);
    for (int c = 0; c < 4; ++c) {
      const __m256i q = loadu(b[i].qs + 32 * c);
      __m256i lo = _mm256_and_si256(q, m4), hi = _mm256_and_si256(_mm256_srli_epi16(q, 4), m4);
      if constexpr (Q5) {
        lo = _mm256_or_si256(lo, _mm256_slli_epi16(_mm256_and_si256(hb, one8), 4));
        hi = _mm256_or_si256(
            hi, _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(hb, 1), one8), 4));
        hb = _mm256_srli_epi16(hb, 2);
      }
      const __m256i s0 = _mm256_set1_epi16(sc[2 * c]), s1 = _mm256_set1_epi16(sc[2 * c + 1]);
#pragma GCC unroll 4
      for (int t = 0; t < NT; ++t) {
        const int8_t *qa = a[t][i].qs + 64 * c;
        sumi[t] =
            _mm256_add_epi32(sumi[t], _mm256_madd_epi16(_mm256_maddubs_epi16(lo, loadu(qa)), s0));
        sumi[t] = _mm256_add_epi32(sumi[t],
                                   _mm256_madd_epi16(_mm256_maddubs_epi16(hi, loadu(qa + 32)), s1));
      }
    }
    const float d = h2f(b[i].d), dmin = h2f(b[i].dmin);
#pragma GCC unroll 4
    for (int t = 0; t < NT; ++t) {
      const __m256i bs = _mm256_madd_epi16(loadu(a[t][i].bsums), _mm256_set1_epi16(1));
      sum[t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(sumi[t]), _mm256_set1_ps(d * a[t][i].d), sum[t]);
      sum[t] = _mm256_fnmadd_ps(_mm256_cvtepi32_ps(_mm256_mullo_epi32(bs, mins)),
                                _mm256_set1_ps(dmin * a[t][i].d), sum[t]);
    }
  }
#pragma GCC unroll 4
  for (int t = 0; t < NT; ++t) {
    const float v = hsum(sum[t]);
    y[t * ldy] = acc ? y[t * ldy] + v : v;
  }
}

template <int NT>
void q6k_row_tokens(const uint8_t *w, const uint8_t *act, size_t stride, int64_t nb, float *y,
                    int64_t ldy, bool acc) {
  auto *b = reinterpret_cast<const BlockQ6_K *>(w);
  const BlockA8K *a[NT];
  __m256 sum[NT];
#pragma GCC unroll 4
  for (int t = 0; t < NT; ++t) {
    a[t] = reinterpret_cast<const BlockA8K *>(act + size_t(t) * stride);
    sum[t] = _mm256_setzero_ps();
  }
  for (int64_t i = 0; i < nb; ++i) {
    const __m256i sc16 = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)b[i].scales));
    __m256i sumi[NT];
#pragma GCC unroll 4
    for (int t = 0; t < NT; ++t)  // the zero point: codes are q + 32
      sumi[t] =
          _mm256_sub_epi32(_mm256_setzero_si256(),
                           _mm256_slli_epi32(_mm256_madd_epi16(sc16, loadu(a[t][i].bsums)), 5));
    for (int h = 0; h < 2; ++h)
      for (int q = 0; q < 4; ++q) {
        const int g = 8 * h + 2 * q;
        const __m256i u = q6_codes(b[i], h, q);
        const __m256i s =
            _mm256_set_m128i(_mm_set1_epi16(b[i].scales[g + 1]), _mm_set1_epi16(b[i].scales[g]));
#pragma GCC unroll 4
        for (int t = 0; t < NT; ++t)
          sumi[t] = _mm256_add_epi32(
              sumi[t],
              _mm256_madd_epi16(_mm256_maddubs_epi16(u, loadu(a[t][i].qs + 32 * (g / 2))), s));
      }
    const float d = h2f(b[i].d);
#pragma GCC unroll 4
    for (int t = 0; t < NT; ++t)
      sum[t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(sumi[t]), _mm256_set1_ps(d * a[t][i].d), sum[t]);
  }
#pragma GCC unroll 4
  for (int t = 0; t < NT; ++t) {
    const float v = hsum(sum[t]);
    y[t * ldy] = acc ? y[t * ldy] + v : v;
  }
}

template <bool Q5>
struct K45 {
  static constexpr auto one = dot_k45<Q5>;
  template <int NT>
  static void tokens(const uint8_t *w, const uint8_t *act, size_t stride, int64_t nb, float *y,
                     int64_t ldy, bool acc) {
    k45_row_tokens<Q5, NT>(w, act, stride, nb, y, ldy, acc);
  }
};

struct Q6K {
  static constexpr auto one = dot_q6_k;
  template <int NT>
  static void tokens(const uint8_t *w, const uint8_t *act, size_t stride, int64_t nb, float *y,
                     int64_t ldy, bool acc) {
    q6k_row_tokens<NT>(w, act, stride, nb, y, ldy, acc);
  }
};

// One token: the single-row dots; more: each row's blocks unpacked once per kTokK tokens, rows
// taken kRowChunk at a time (they stay in L2 while every token passes), so the weights are read
// from memory once per call and the activations once per kRowChunk rows.
constexpr int kRowChunk = 16;

template <class Kern>
void k_rows(const DotArgs &a) {
  if (a.T == 1) return rows<BlockA8K, Kern::one>(a);
  const int64_t nb = a.n / QKK;
  for (int64_t r0 = 0; r0 < a.nrows; r0 += kRowChunk) {
    const int64_t r1 = std::min<int64_t>(a.nrows, r0 + kRowChunk);
    for (int t0 = 0; t0 < a.T; t0 += kTokK) {
      const uint8_t *act = a.act + size_t(t0) * a.act_stride;
      float *y = a.y + t0 * a.ldy;
      const int nt = std::min(kTokK, a.T - t0);
      for (int64_t r = r0; r < r1; ++r) {
        const uint8_t *w = a.w + r * a.row_bytes;
        switch (nt) {
          case 1: Kern::template tokens<1>(w, act, a.act_stride, nb, y + r, a.ldy, a.acc); break;
          case 2: Kern::template tokens<2>(w, act, a.act_stride, nb, y + r, a.ldy, a.acc); break;
          case 3: Kern::template tokens<3>(w, act, a.act_stride, nb, y + r, a.ldy, a.acc); break;
          default: Kern::template tokens<4>(w, act, a.act_stride, nb, y + r, a.ldy, a.acc); break;
        }
      }
    }
  }
}

// ---- several tokens per weight block (the *_0 types): each block is loaded and unpacked once,
// then dotted with up to kTok tokens' activation blocks held in as many accumulators ----

constexpr int kTok = 6;

template <int KIND>  // 0 Q8_0, 1 Q4_0, 2 Q5_0, 3 Q4_1, 4 Q5_1
struct Q0 {
  using B =
      std::tuple_element_t<KIND, std::tuple<BlockQ8_0, BlockQ4_0, BlockQ5_0, BlockQ4_1, BlockQ5_1>>;
  static constexpr bool kFive = KIND == 2 || KIND == 4;
  // Coefficient of the activation block's s = d_a * sum(q_a): -zero * d for *_0, m for *_1.
  static float s_coef(const B &b, float d) {
    if constexpr (KIND == 0)
      return 0.f;
    else if constexpr (KIND == 1)
      return -8.f * d;
    else if constexpr (KIND == 2)
      return -16.f * d;
    else
      return h2f(b.m);
  }
  // Unsigned codes (Q4_0/Q5_0), or |q| with the signs kept for the activations (Q8_0).
  static __m256i codes(const B &b) {
    if constexpr (KIND == 0) {
      return _mm256_abs_epi8(loadu(b.qs));
    } else if constexpr (!kFive) {
      return nibbles32(b.qs);
    } else {
      uint32_t qh;
      std::memcpy(&qh, b.qh, 4);
      return _mm256_or_si256(nibbles32(b.qs), bits_to_0x10(qh));
    }
  }
  static __m256 dot(const B &b, __m256i u, const BlockA8 &a) {
    if constexpr (KIND == 0)
      return dot_u8s8(u, _mm256_sign_epi8(loadu(a.qs), loadu(b.qs)));
    else
      return dot_u8s8(u, loadu(a.qs));
  }
};

template <int KIND, int NT>
void q0_row_tokens(const uint8_t *w, const uint8_t *act, size_t stride, int64_t nb, float *y,
                   int64_t ldy, bool acc) {
  using Q = Q0<KIND>;
  auto *b = reinterpret_cast<const typename Q::B *>(w);
  const BlockA8 *a[NT];
  __m256 sum[NT];
  float z[NT];  // sum_i coef_i * s_t,i: the zero-point (*_0) or minimum (*_1) terms
#pragma GCC unroll 8
  for (int t = 0; t < NT; ++t) {
    a[t] = reinterpret_cast<const BlockA8 *>(act + size_t(t) * stride);
    sum[t] = _mm256_setzero_ps();
    z[t] = 0.f;
  }
  for (int64_t i = 0; i < nb; ++i) {
    _mm_prefetch(reinterpret_cast<const char *>(b + i) + kPrefetch, _MM_HINT_T0);
    const __m256i u = Q::codes(b[i]);
    const float d = h2f(b[i].d), c = Q::s_coef(b[i], d);
#pragma GCC unroll 8
    for (int t = 0; t < NT; ++t) {
      sum[t] = _mm256_fmadd_ps(Q::dot(b[i], u, a[t][i]), _mm256_set1_ps(d * a[t][i].d), sum[t]);
      if constexpr (KIND != 0) z[t] += c * a[t][i].s;
    }
  }
#pragma GCC unroll 8
  for (int t = 0; t < NT; ++t) {
    const float v = hsum(sum[t]) + z[t];
    y[t * ldy] = acc ? y[t * ldy] + v : v;
  }
}

// ---- prefill for the *_0 types: a register tile of RM weight rows x 2*NP tokens ----
//
// Weights as signed codes (q - zero), dotted by maddubs(|w|, sign(a, w)); every weight block is
// unpacked once per tile and every activation block is reused by RM rows. Integer work runs on
// the vector ALUs, which AVX2 machines have more of than FMA units, so the float side is kept
// small: the two tokens of a pair share one accumulator (hadd puts token 0's partial sums in
// lanes 0,1,4,5 and token 1's in 2,3,6,7), so one convert and one FMA serve two block dots.

template <int KIND>  // 0 Q8_0, 1 Q4_0, 2 Q5_0
inline __m256i signed_codes(const typename Q0<KIND>::B &b) {
  if constexpr (KIND == 0) {
    return loadu(b.qs);
  } else if constexpr (KIND == 1) {
    return _mm256_sub_epi8(nibbles32(b.qs), _mm256_set1_epi8(8));
  } else {
    uint32_t qh;
    std::memcpy(&qh, b.qh, 4);
    return _mm256_sub_epi8(_mm256_or_si256(nibbles32(b.qs), bits_to_0x10(qh)),
                           _mm256_set1_epi8(16));
  }
}

inline __m256i dot_i32(__m256i aw, __m256i w, __m256i a) {
  return _mm256_madd_epi16(_mm256_maddubs_epi16(aw, _mm256_sign_epi8(a, w)), _mm256_set1_epi16(1));
}

template <int KIND, int RM, int NP>
void q0_tile(const uint8_t *w, size_t row_bytes, const uint8_t *act, size_t stride, int64_t nb,
             float *y, int64_t ldy, bool acc) {
  using B = typename Q0<KIND>::B;
  const B *b[RM];
  const BlockA8 *a[2 * NP];
  __m256 sum[RM][NP];
#pragma GCC unroll 8
  for (int r = 0; r < RM; ++r) {
    b[r] = reinterpret_cast<const B *>(w + size_t(r) * row_bytes);
#pragma GCC unroll 8
    for (int p = 0; p < NP; ++p) sum[r][p] = _mm256_setzero_ps();
  }
#pragma GCC unroll 8
  for (int t = 0; t < 2 * NP; ++t)
    a[t] = reinterpret_cast<const BlockA8 *>(act + size_t(t) * stride);
  for (int64_t i = 0; i < nb; ++i) {
    __m256 da[NP];  // d of the pair's tokens, in the lanes their partial sums occupy
#pragma GCC unroll 8
    for (int p = 0; p < NP; ++p) {
      const __m128 d2 =
          _mm_setr_ps(a[2 * p][i].d, a[2 * p][i].d, a[2 * p + 1][i].d, a[2 * p + 1][i].d);
      da[p] = _mm256_set_m128(d2, d2);
    }
#pragma GCC unroll 8
    for (int r = 0; r < RM; ++r) {
      const __m256i wq = signed_codes<KIND>(b[r][i]);
      const __m256i aw = _mm256_abs_epi8(wq);
      const __m256 dr = _mm256_set1_ps(h2f(b[r][i].d));
#pragma GCC unroll 8
      for (int p = 0; p < NP; ++p) {
        const __m256i s0 = dot_i32(aw, wq, loadu(a[2 * p][i].qs));
        const __m256i s1 = dot_i32(aw, wq, loadu(a[2 * p + 1][i].qs));
        sum[r][p] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_hadd_epi32(s0, s1)),
                                    _mm256_mul_ps(da[p], dr), sum[r][p]);
      }
    }
  }
#pragma GCC unroll 8
  for (int r = 0; r < RM; ++r)
#pragma GCC unroll 8
    for (int p = 0; p < NP; ++p) {
      __m128 v = _mm_add_ps(_mm256_castps256_ps128(sum[r][p]), _mm256_extractf128_ps(sum[r][p], 1));
      v = _mm_hadd_ps(v, v);  // token 0, token 1, token 0, token 1
      float *o0 = y + (2 * p) * ldy + r, *o1 = o0 + ldy;
      const float v0 = _mm_cvtss_f32(v), v1 = _mm_cvtss_f32(_mm_movehdup_ps(v));
      *o0 = acc ? *o0 + v0 : v0;
      *o1 = acc ? *o1 + v1 : v1;
    }
}

constexpr int kTileRows = 4;   // RM
constexpr int kTilePairs = 2;  // NP: 4 tokens per tile
constexpr int kTokBlock = 64;  // tokens whose activations stay in L2 while the rows stream by

// Tiles over tokens [t0, t1) for RM rows starting at row r of the output; w points at those rows
// (row_bytes apart), in the layout of KIND.
template <int KIND, int RM>
void q0_tile_rows(const DotArgs &a, const uint8_t *w, size_t row_bytes, int64_t r, int t0, int t1,
                  int64_t nb) {
  int t = t0;
  for (; t + 2 * kTilePairs <= t1; t += 2 * kTilePairs)
    q0_tile<KIND, RM, kTilePairs>(w, row_bytes, a.act + size_t(t) * a.act_stride, a.act_stride, nb,
                                  a.y + t * a.ldy + r, a.ldy, a.acc);
  for (; t + 2 <= t1; t += 2)
    q0_tile<KIND, RM, 1>(w, row_bytes, a.act + size_t(t) * a.act_stride, a.act_stride, nb,
                         a.y + t * a.ldy + r, a.ldy, a.acc);
  if (t < t1)
    for (int j = 0; j < RM; ++j)
      q0_row_tokens<KIND, 1>(w + j * row_bytes, a.act + size_t(t) * a.act_stride, a.act_stride, nb,
                             a.y + t * a.ldy + r + j, a.ldy, a.acc);
}

// Q4_0/Q5_0 rows rewritten as Q8_0 blocks (same d, codes minus the zero point): exact, and then
// the nibbles are unpacked once per token block instead of once per 4-token tile.
template <int KIND>
void unpack_to_q8_0(const uint8_t *w, size_t row_bytes, int rows, int64_t nb, BlockQ8_0 *out) {
  for (int j = 0; j < rows; ++j) {
    auto *b = reinterpret_cast<const typename Q0<KIND>::B *>(w + j * row_bytes);
    for (int64_t i = 0; i < nb; ++i) {
      BlockQ8_0 &o = out[j * nb + i];
      o.d = b[i].d;
      _mm256_storeu_si256(reinterpret_cast<__m256i *>(o.qs), signed_codes<KIND>(b[i]));
    }
  }
}

template <int KIND>
void q0_tiles(const DotArgs &a) {
  const int64_t nb = a.n / QK;
  thread_local std::vector<BlockQ8_0> unpacked;
  const bool unpack = KIND != 0 && a.T > 2 * kTilePairs;
  if (unpack && unpacked.size() < size_t(kTileRows * nb)) unpacked.resize(size_t(kTileRows * nb));
  const size_t q8_row = size_t(nb) * sizeof(BlockQ8_0);
  for (int tb = 0; tb < a.T; tb += kTokBlock) {
    const int te = std::min(a.T, tb + kTokBlock);
    int64_t r = 0;
    for (; r + kTileRows <= a.nrows; r += kTileRows) {
      const uint8_t *w = a.w + r * a.row_bytes;
      if (unpack) {
        unpack_to_q8_0<KIND>(w, a.row_bytes, kTileRows, nb, unpacked.data());
        q0_tile_rows<0, kTileRows>(a, reinterpret_cast<const uint8_t *>(unpacked.data()), q8_row, r,
                                   tb, te, nb);
      } else {
        q0_tile_rows<KIND, kTileRows>(a, w, a.row_bytes, r, tb, te, nb);
      }
    }
    for (; r < a.nrows; ++r)
      q0_tile_rows<KIND, 1>(a, a.w + r * a.row_bytes, a.row_bytes, r, tb, te, nb);
  }
}

// One token: the two-accumulator single-row kernels above; Q8_0/Q4_0/Q5_0 with more: the tiles;
// Q4_1/Q5_1: q0_row_tokens.
template <int KIND>
void q0_rows(const DotArgs &a) {
  if (a.T == 1) {
    if constexpr (KIND == 0)
      return rows<BlockA8, dot_q8_0>(a);
    else if constexpr (KIND <= 2)
      return rows<BlockA8, dot_q45_0<KIND == 2>>(a);
  }
  if constexpr (KIND <= 2) {
    if (a.T >= 2) return q0_tiles<KIND>(a);
  }
  const int64_t nb = a.n / QK;
  for (int t0 = 0; t0 < a.T; t0 += kTok) {
    const uint8_t *act = a.act + size_t(t0) * a.act_stride;
    float *y = a.y + t0 * a.ldy;
    for (int64_t r = 0; r < a.nrows; ++r) {
      const uint8_t *w = a.w + r * a.row_bytes;
      switch (a.T - t0 < kTok ? a.T - t0 : kTok) {
        case 1: q0_row_tokens<KIND, 1>(w, act, a.act_stride, nb, y + r, a.ldy, a.acc); break;
        case 2: q0_row_tokens<KIND, 2>(w, act, a.act_stride, nb, y + r, a.ldy, a.acc); break;
        case 3: q0_row_tokens<KIND, 3>(w, act, a.act_stride, nb, y + r, a.ldy, a.acc); break;
        case 4: q0_row_tokens<KIND, 4>(w, act, a.act_stride, nb, y + r, a.ldy, a.acc); break;
        case 5: q0_row_tokens<KIND, 5>(w, act, a.act_stride, nb, y + r, a.ldy, a.acc); break;
        default: q0_row_tokens<KIND, 6>(w, act, a.act_stride, nb, y + r, a.ldy, a.acc); break;
      }
    }
  }
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
     q0_rows<1>, q0_rows<2>, q0_rows<3>, q0_rows<4>, k_rows<K45<false>>, k_rows<K45<true>>,
     k_rows<Q6K>},
    {dq_f32, dq_f16, dq_bf16, dq_q8_0, dq_q4_0, dq_q5_0, dq_q45_1<false>, dq_q45_1<true>,
     dq_k45<false>, dq_k45<true>, dq_q6_k},
    pack_panel,
    gemm_panel,
};

}  // namespace

const KernelTable &avx2_kernels() { return kAvx2; }

}  // namespace edgenano::kern
