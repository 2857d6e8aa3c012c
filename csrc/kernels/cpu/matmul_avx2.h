// Internal to the AVX2 matmul kernels: helpers and one-token integer dots shared by
// matmul_avx2.cpp (dequantizers, activation quantizers, f32 dots and panels, the kernel table) and
// matmul_batch_avx2.cpp (several tokens per weight block). Include only from translation units
// built with -mavx2 -mfma -mf16c. Integer dots: unsigned weight codes times signed int8
// activations with maddubs (no int16 saturation: |code| <= 63, |a| <= 127), zero points folded
// into per-block activation sums.
#pragma once
#include <immintrin.h>

#include <cstring>
#include <type_traits>

#include "kernels/cpu/matmul_impl.h"
#include "kernels/cpu/simd_avx2.h"

namespace edgenano::kern::avx2 {

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

inline __m256 vabs(__m256 v) { return _mm256_andnot_ps(_mm256_set1_ps(-0.f), v); }

inline float hmax(__m256 v) {
  __m128 s = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_max_ps(s, _mm_movehl_ps(s, s));
  s = _mm_max_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

// max |x| over n floats (n a multiple of 8), and the quantizers' 127 / amax (0 for a zero block).
inline float amax_of(const float *x, int64_t n) {
  __m256 mx = vabs(_mm256_loadu_ps(x));
  for (int64_t j = 8; j < n; j += 8) mx = _mm256_max_ps(mx, vabs(_mm256_loadu_ps(x + j)));
  return hmax(mx);
}
inline float inv_scale(float amax) { return amax > 0.f ? 127.f / amax : 0.f; }

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

inline void k_scales(const uint8_t *s, uint8_t sc[8], uint8_t m[8]) {
  for (int j = 0; j < 4; ++j) {
    sc[j] = s[j] & 63;
    m[j] = s[j + 4] & 63;
    sc[j + 4] = (s[j + 8] & 0xf) | ((s[j] >> 6) << 4);
    m[j + 4] = (s[j + 8] >> 4) | ((s[j + 4] >> 6) << 4);
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

// Q4_K / Q5_K codes of chunk c (64 values): lo = sub-block 2c (low nibbles), hi = sub-block 2c+1
// (high nibbles), with Q5_K's fifth bits from qh.
template <class B>
inline void k45_codes(const B &b, int c, __m256i &lo, __m256i &hi) {
  const __m256i m4 = _mm256_set1_epi8(0x0f);
  const __m256i q = loadu(b.qs + 32 * c);
  lo = _mm256_and_si256(q, m4);
  hi = _mm256_and_si256(_mm256_srli_epi16(q, 4), m4);
  if constexpr (std::is_same_v<B, BlockQ5_K>) {
    const __m256i hb = loadu(b.qh), one = _mm256_set1_epi8(1);
    lo = _mm256_or_si256(lo,
                         _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(hb, 2 * c), one), 4));
    hi = _mm256_or_si256(
        hi, _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(hb, 2 * c + 1), one), 4));
  }
}

// ---- one-token dot products (decode; the batched kernels take several tokens per block) ----

inline float dot_q8_0(const uint8_t *w, const BlockA8 *a, int64_t n) {
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
  __m256 acc = _mm256_setzero_ps(), accm = _mm256_setzero_ps();
  for (int64_t i = 0; i < n / QK_K; ++i) {
    uint8_t sc[8], m[8];
    k_scales(b[i].scales, sc, m);
    const __m256i bs = _mm256_madd_epi16(loadu(a[i].bsums), _mm256_set1_epi16(1));  // 8 sums
    int64_t m8;
    std::memcpy(&m8, m, 8);
    const __m256i mins = _mm256_cvtepu8_epi32(_mm_cvtsi64_si128(m8));
    accm = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_mullo_epi32(bs, mins)),
                           _mm256_set1_ps(h2f(b[i].dmin) * a[i].d), accm);
    __m256i sumi = _mm256_setzero_si256();
    for (int c = 0; c < 4; ++c) {
      __m256i lo, hi;
      k45_codes(b[i], c, lo, hi);
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
inline float dot_q6_k(const uint8_t *w, const BlockA8K *a, int64_t n) {
  auto *b = reinterpret_cast<const BlockQ6_K *>(w);
  __m256 acc = _mm256_setzero_ps();
  for (int64_t i = 0; i < n / QK_K; ++i) {
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

// ---- several tokens per weight block (matmul_batch_avx2.cpp) ----

template <int KIND>  // 0 Q8_0, 1 Q4_0, 2 Q5_0, 3 Q4_1, 4 Q5_1
void q0_rows(const DotArgs &a);
template <bool Q5>  // Q4_K, Q5_K
void k45_rows(const DotArgs &a);
void q6k_rows(const DotArgs &a);

// ---- int8 panels (matmul_quads_avx2.cpp) ----

void quant_quads(const float *x, int64_t ldx, int T, int q0, int q1, int64_t n, int zero,
                 QuadA8 *out);
template <int KIND>  // 1 Q4_0, 2 Q5_0
void quad_gemm(const QuadArgs &a);
void quad_gemm_q8(const QuadArgs &a);  // Q8_0
void quant_quads_k(const float *x, int64_t ldx, int T, int q0, int q1, int64_t n, QuadA8K *out);
template <bool Q5>  // Q4_K, Q5_K
void quad_gemm_k(const QuadArgs &a);
void quad_gemm_q6k(const QuadArgs &a);  // Q6_K (QuadA8K activations; their sums unused)

}  // namespace edgenano::kern::avx2
