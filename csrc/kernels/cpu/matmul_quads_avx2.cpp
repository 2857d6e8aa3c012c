// Int8 panels: the prefill product for Q8_0, Q4_0/Q5_0 and Q4_K/Q5_K/Q6_K weights on AVX2
// (GotoBLAS-style blocking over an integer micro-kernel).
//
// Why not the f32 panels: an AVX2 core retires two 8-wide FMAs a cycle, 16 multiply-adds, while
// maddubs does 32 int8 multiply-adds per instruction, two a cycle. What keeps integer kernels from
// that rate is the reduction: a block's 32 products end in 8 lanes of partial sums that must be
// summed, converted and scaled per block (hadd, at one per two cycles, is no way to do it). Here
// one weight block meets 4 tokens at once and their 4 maddubs results are folded into one vector
// with unpacks and 16-bit adds (4 codes x 2 products per lane: at most 4 * 2 * 31 * 127 = 31496,
// inside int16 for 5-bit codes) and one madd, so the conversion, the scale and the FMA are paid
// once per 4 block dots. Measured on Zen 3, one core, operands in cache: 121-133 GFLOP/s against
// 78 for the 4x4 sign-trick tiles and 87 for the f32 panels (the FMA peak is 98).
//
// The K types run the same fold per 32-value sub-block, with the sub-block's 6-bit scale as the
// madd's multiplier, so the integer sums run through a whole 256-value block and the float work
// comes once per 4 x 256 products; the minimums' term is two more madds per block.
//
// Blocking: the activations are quantized once per call into quads (QuadA8 / QuadA8K,
// matmul_impl.h). A work item is a group of rows (matmul.cpp: up to 64); per chunk of the reduced
// dimension, its rows are unpacked into tiles of 4 rows (unsigned codes and scales, up to 150 KB:
// L2), and each pair of quads (their chunk: 20 KB for Q4_0, 9 KB for Q4_K: L1) passes every tile.
#include <algorithm>
#include <cstring>
#include <vector>

#include "kernels/cpu/matmul_avx2.h"
#include "kernels/cpu/matmul_quads_impl.h"

namespace edgenano::kern::avx2 {

namespace {

// One row's codes u against 4 tokens' codes: the 4 maddubs results folded into one vector of
// int16 pairs, token t's in 32-bit lanes t and t + 4. 32-bit unpacks keep each token's pairs
// together: [t0 t1 t0 t1] after the first level, [t0 t1 t2 t3] after the second.
inline __m256i fold4(__m256i u, const int8_t (*qs)[QK]) {
  const __m256i m0 = _mm256_maddubs_epi16(u, loadu(qs[0]));
  const __m256i m1 = _mm256_maddubs_epi16(u, loadu(qs[1]));
  const __m256i m2 = _mm256_maddubs_epi16(u, loadu(qs[2]));
  const __m256i m3 = _mm256_maddubs_epi16(u, loadu(qs[3]));
  const __m256i p01 =
      _mm256_add_epi16(_mm256_unpacklo_epi32(m0, m1), _mm256_unpackhi_epi32(m0, m1));
  const __m256i p23 =
      _mm256_add_epi16(_mm256_unpacklo_epi32(m2, m3), _mm256_unpackhi_epi32(m2, m3));
  return _mm256_add_epi16(_mm256_unpacklo_epi64(p01, p23), _mm256_unpackhi_epi64(p01, p23));
}

// ---- Q4_0 / Q5_0: one scale per 32 values ----

template <int KIND>  // 1 Q4_0, 2 Q5_0
struct Q0Panels {
  using B = std::conditional_t<KIND == 1, BlockQ4_0, BlockQ5_0>;
  using Act = QuadA8;
  using Rows = RowQuad;
  static constexpr int kBlock = QK;
  static constexpr int kChunk = 64;  // blocks per pass

  static __m256i codes(const B &b) {
    if constexpr (KIND == 1) {
      return nibbles32(b.qs);
    } else {
      uint32_t qh;
      std::memcpy(&qh, b.qh, 4);
      return _mm256_or_si256(nibbles32(b.qs), bits_to_0x10(qh));
    }
  }

  static void unpack(const uint8_t *w, size_t row_bytes, int nr, int64_t i0, int nblk,
                     RowQuad *out) {
    unpack_row_quads<B>(w, row_bytes, nr, i0, nblk, out, codes);
  }

  // sum[r][p] += row r . quad p over nblk blocks; a[p] is quad p's first block.
  template <int NQ>
  static void tile(const RowQuad *w, const QuadA8 *const *a, int nblk, __m256 (&sum)[4][NQ]) {
    tile_blocks<NQ>(w, a, nblk, sum, unsigned_codes, [](__m256i u, const QuadA8 &q) {
      return _mm256_add_epi32(_mm256_madd_epi16(fold4(u, q.qs), _mm256_set1_epi16(1)),
                              quad_corr(q));
    });
  }
};

// ---- Q8_0: signed 8-bit codes, one scale per 32 values ----
//
// The codes are copied (RowQuad::u holds them as signed bytes) and meet the activations by the sign
// trick: maddubs(|w|, sign(a, w)) = w * a pair by pair. The 16-bit fold of fold4 is not exact here:
// |w| <= 128 and |a| <= 127 (quant32: |x| * 127 / amax rounds to at most 127, never -128) give a
// maddubs word of up to 2 * 128 * 127 = 32512, inside int16 but with no room for a second one
// (65024). So each token's words go to int32 with their own madd (4 products: at most 65024) and
// the 4 tokens are folded in 32-bit lanes (32 products: at most 32 * 128 * 127 = 520192): exact.
struct Q8Panels {
  using Act = QuadA8;
  using Rows = RowQuad;
  static constexpr int kBlock = QK;
  static constexpr int kChunk = 64;  // blocks per pass

  static void unpack(const uint8_t *w, size_t row_bytes, int nr, int64_t i0, int nblk,
                     RowQuad *out) {
    unpack_row_quads<BlockQ8_0>(w, row_bytes, nr, i0, nblk, out,
                                [](const BlockQ8_0 &b) { return loadu(b.qs); });
  }

  template <int NQ>
  static void tile(const RowQuad *w, const QuadA8 *const *a, int nblk, __m256 (&sum)[4][NQ]) {
    tile_blocks<NQ>(w, a, nblk, sum, signed_codes, [](const SignedCodes &w8, const QuadA8 &q) {
      const __m256i ones = _mm256_set1_epi16(1);
      __m256i s[4];
#pragma GCC unroll 4
      for (int t = 0; t < 4; ++t)
        s[t] = _mm256_madd_epi16(
            _mm256_maddubs_epi16(w8.u, _mm256_sign_epi8(loadu(q.qs[t]), w8.c)), ones);
      return fold4_i32(s);
    });
  }
};

// ---- Q4_K / Q5_K: 256-value blocks of 8 sub-blocks, 6-bit scales and minimums ----

struct alignas(32) RowQuadK {
  uint8_t u[QK_K / QK][4][QK];   // sub-block j, row r
  int16_t sc[4][QK_K / QK][16];  // row r's scale of sub-block j, in every word
  int16_t m[4][2][16];           // row r's minimums, laid out as QuadA8K::sums
  float d[4];
  float dmin[4];
};
static_assert(sizeof(RowQuadK) == 2336);

// Word of QuadA8K::sums[j / 4] (and RowQuadK::m[r][j / 4]) for token t, sub-block j.
constexpr int sums_word(int t, int j) { return (j % 4 / 2) * 8 + 2 * t + j % 2; }

template <bool Q5>
struct KPanels {
  using B = std::conditional_t<Q5, BlockQ5_K, BlockQ4_K>;
  using Act = QuadA8K;
  using Rows = RowQuadK;
  static constexpr int kBlock = QK_K;
  static constexpr int kChunk = 4;  // blocks per pass: 64 rows' tiles take 150 KB

  static void unpack(const uint8_t *w, size_t row_bytes, int nr, int64_t i0, int nblk,
                     RowQuadK *out) {
    for (int i = 0; i < nblk; ++i) {
      RowQuadK &o = out[i];
      for (int r = 0; r < 4; ++r) {
        if (r >= nr) {
          for (int j = 0; j < QK_K / QK; ++j) std::memset(o.u[j][r], 0, QK);
          std::memset(o.sc[r], 0, sizeof(o.sc[r]));
          std::memset(o.m[r], 0, sizeof(o.m[r]));
          o.d[r] = o.dmin[r] = 0.f;
          continue;
        }
        const B &b = reinterpret_cast<const B *>(w + size_t(r) * row_bytes)[i0 + i];
        uint8_t sc[8], m[8];
        k_scales(b.scales, sc, m);
        for (int c = 0; c < 4; ++c) {
          __m256i lo, hi;
          k45_codes(b, c, lo, hi);
          _mm256_store_si256(reinterpret_cast<__m256i *>(o.u[2 * c][r]), lo);
          _mm256_store_si256(reinterpret_cast<__m256i *>(o.u[2 * c + 1][r]), hi);
        }
        for (int j = 0; j < QK_K / QK; ++j) {
          _mm256_store_si256(reinterpret_cast<__m256i *>(o.sc[r][j]), _mm256_set1_epi16(sc[j]));
          for (int t = 0; t < 4; ++t) o.m[r][j / 4][sums_word(t, j)] = m[j];
        }
        o.d[r] = h2f(b.d);
        o.dmin[r] = h2f(b.dmin);
      }
    }
  }

  template <int NQ>
  static void tile(const RowQuadK *w, const QuadA8K *const *a, int nblk, __m256 (&sum)[4][NQ]) {
    for (int i = 0; i < nblk; ++i) {
      const RowQuadK &wi = w[i];
#pragma GCC unroll 4
      for (int r = 0; r < 4; ++r) {
        __m256i isum[NQ];
#pragma GCC unroll 2
        for (int p = 0; p < NQ; ++p) isum[p] = _mm256_setzero_si256();
        for (int j = 0; j < QK_K / QK; ++j) {
          const __m256i u = _mm256_load_si256(reinterpret_cast<const __m256i *>(wi.u[j][r]));
          const __m256i sc = _mm256_load_si256(reinterpret_cast<const __m256i *>(wi.sc[r][j]));
#pragma GCC unroll 2
          for (int p = 0; p < NQ; ++p)
            isum[p] = _mm256_add_epi32(isum[p], _mm256_madd_epi16(fold4(u, a[p][i].qs[j]), sc));
        }
        const __m256 d = _mm256_broadcast_ss(&wi.d[r]), dmin = _mm256_broadcast_ss(&wi.dmin[r]);
#pragma GCC unroll 2
        for (int p = 0; p < NQ; ++p) {
          const QuadA8K &q = a[p][i];
          const __m256i mins =
              _mm256_add_epi32(_mm256_madd_epi16(loadu(q.sums[0]), loadu(wi.m[r][0])),
                               _mm256_madd_epi16(loadu(q.sums[1]), loadu(wi.m[r][1])));
          const __m256 da = _mm256_broadcast_ps(reinterpret_cast<const __m128 *>(q.d));
          sum[r][p] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(isum[p]), _mm256_mul_ps(da, d), sum[r][p]);
          sum[r][p] =
              _mm256_fnmadd_ps(_mm256_cvtepi32_ps(mins), _mm256_mul_ps(da, dmin), sum[r][p]);
        }
      }
    }
  }
};

// ---- Q6_K: 256-value blocks, 6-bit codes, one int8 scale per 16 values ----
//
// The codes are held signed (q - 32, in -32..31) and meet the activations by the sign trick, as
// Q8_0's: |c| <= 32 makes a maddubs word at most 2 * 32 * 127 = 8128 and a word of fold4's sum of
// 4 tokens' words (8 products) at most 32512, inside int16 (the unsigned codes 0..63 would reach
// 64008). fold4's unpacks stay within 128-bit halves, so the low half of its result holds values
// 0..15 of the sub-block and the high half 16..31: the madd's multiplier carries the scale of
// each 16 values in its own half (at most 2 * 32512 * 128 a madd, 8 of them a block: exact).
struct alignas(32) RowQuad6 {
  int8_t c[QK_K / QK][4][QK];    // sub-block j, row r: q - 32
  int16_t sc[4][QK_K / QK][16];  // row r, sub-block j: scale 2j in words 0-7, 2j+1 in 8-15
  float d[4];
  float pad[4];
};
static_assert(sizeof(RowQuad6) == 2080);

// fold4 for signed codes c (u = |c|): token t's products are maddubs(u, sign(a_t, c)).
inline __m256i fold4_signed(__m256i u, __m256i c, const int8_t (*qs)[QK]) {
  const __m256i m0 = _mm256_maddubs_epi16(u, _mm256_sign_epi8(loadu(qs[0]), c));
  const __m256i m1 = _mm256_maddubs_epi16(u, _mm256_sign_epi8(loadu(qs[1]), c));
  const __m256i m2 = _mm256_maddubs_epi16(u, _mm256_sign_epi8(loadu(qs[2]), c));
  const __m256i m3 = _mm256_maddubs_epi16(u, _mm256_sign_epi8(loadu(qs[3]), c));
  const __m256i p01 =
      _mm256_add_epi16(_mm256_unpacklo_epi32(m0, m1), _mm256_unpackhi_epi32(m0, m1));
  const __m256i p23 =
      _mm256_add_epi16(_mm256_unpacklo_epi32(m2, m3), _mm256_unpackhi_epi32(m2, m3));
  return _mm256_add_epi16(_mm256_unpacklo_epi64(p01, p23), _mm256_unpackhi_epi64(p01, p23));
}

struct Q6Panels {
  using Act = QuadA8K;
  using Rows = RowQuad6;
  static constexpr int kBlock = QK_K;
  static constexpr int kChunk = 4;  // blocks per pass: 64 rows' tiles take 133 KB

  static void unpack(const uint8_t *w, size_t row_bytes, int nr, int64_t i0, int nblk,
                     RowQuad6 *out) {
    const __m256i bias = _mm256_set1_epi8(32);
    for (int i = 0; i < nblk; ++i) {
      RowQuad6 &o = out[i];
      for (int r = 0; r < 4; ++r) {
        if (r >= nr) {
          for (int j = 0; j < QK_K / QK; ++j) std::memset(o.c[j][r], 0, QK);
          std::memset(o.sc[r], 0, sizeof(o.sc[r]));
          o.d[r] = 0.f;
          continue;
        }
        const auto &b = reinterpret_cast<const BlockQ6_K *>(w + size_t(r) * row_bytes)[i0 + i];
        for (int j = 0; j < QK_K / QK; ++j) {
          _mm256_store_si256(reinterpret_cast<__m256i *>(o.c[j][r]),
                             _mm256_sub_epi8(q6_codes(b, j / 4, j % 4), bias));
          _mm256_store_si256(reinterpret_cast<__m256i *>(o.sc[r][j]),
                             _mm256_set_m128i(_mm_set1_epi16(b.scales[2 * j + 1]),
                                              _mm_set1_epi16(b.scales[2 * j])));
        }
        o.d[r] = h2f(b.d);
      }
    }
  }

  template <int NQ>
  static void tile(const RowQuad6 *w, const QuadA8K *const *a, int nblk, __m256 (&sum)[4][NQ]) {
    for (int i = 0; i < nblk; ++i) {
      const RowQuad6 &wi = w[i];
#pragma GCC unroll 4
      for (int r = 0; r < 4; ++r) {
        __m256i isum[NQ];
#pragma GCC unroll 2
        for (int p = 0; p < NQ; ++p) isum[p] = _mm256_setzero_si256();
        for (int j = 0; j < QK_K / QK; ++j) {
          const __m256i c = _mm256_load_si256(reinterpret_cast<const __m256i *>(wi.c[j][r]));
          const __m256i u = _mm256_abs_epi8(c);
          const __m256i sc = _mm256_load_si256(reinterpret_cast<const __m256i *>(wi.sc[r][j]));
#pragma GCC unroll 2
          for (int p = 0; p < NQ; ++p)
            isum[p] = _mm256_add_epi32(isum[p],
                                       _mm256_madd_epi16(fold4_signed(u, c, a[p][i].qs[j]), sc));
        }
        const __m256 d = _mm256_broadcast_ss(&wi.d[r]);
#pragma GCC unroll 2
        for (int p = 0; p < NQ; ++p) {
          const __m256 da = _mm256_broadcast_ps(reinterpret_cast<const __m128 *>(a[p][i].d));
          sum[r][p] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(isum[p]), _mm256_mul_ps(da, d), sum[r][p]);
        }
      }
    }
  }
};

// One block of 32 values: codes into qs (quant_a8's arithmetic, code for code, with id = 127 /
// amax of the block, or of its 256-value block for the K types); returns the sum of the codes.
inline int quant_block(const float *x, float id, int8_t *qs) {
  int s0, s1;
  _mm256_storeu_si256(reinterpret_cast<__m256i *>(qs), quant32(x, _mm256_set1_ps(id), s0, s1));
  return s0 + s1;
}

}  // namespace

// Tokens past T (padding of the last quad) quantize token 0's row with amax 0: codes, scale and
// sums all zero.
void quant_quads(const float *x, int64_t ldx, int T, int q0, int q1, int64_t n, int zero,
                 QuadA8 *out) {
  const int64_t nb = n / QK;
  for (int q = q0; q < q1; ++q) {
    QuadA8 *o = out + int64_t(q) * nb;
    for (int k = 0; k < 4; ++k) {
      const int t = 4 * q + k;
      const float *xt = x + (t < T ? t : 0) * ldx;
      for (int64_t i = 0; i < nb; ++i, xt += QK) {
        const float amax = t < T ? amax_of(xt, QK) : 0.f;
        o[i].corr[k] = -(zero / 2) * quant_block(xt, inv_scale(amax), o[i].qs[k]);
        o[i].d[k] = amax / 127.f;
      }
    }
  }
}

void quant_quads_k(const float *x, int64_t ldx, int T, int q0, int q1, int64_t n, QuadA8K *out) {
  const int64_t nb = n / QK_K;
  for (int q = q0; q < q1; ++q) {
    QuadA8K *o = out + int64_t(q) * nb;
    for (int k = 0; k < 4; ++k) {
      const int t = 4 * q + k;
      const float *xt = x + (t < T ? t : 0) * ldx;
      for (int64_t i = 0; i < nb; ++i, xt += QK_K) {
        const float amax = t < T ? amax_of(xt, QK_K) : 0.f;
        for (int j = 0; j < QK_K / QK; ++j)
          o[i].sums[j / 4][sums_word(k, j)] =
              int16_t(quant_block(xt + QK * j, inv_scale(amax), o[i].qs[j][k]));
        o[i].d[k] = amax / 127.f;
      }
    }
  }
}

template <int KIND>
void quad_gemm(const QuadArgs &a) {
  run_panels<Q0Panels<KIND>>(a);
}

void quad_gemm_q8(const QuadArgs &a) { run_panels<Q8Panels>(a); }

template <bool Q5>
void quad_gemm_k(const QuadArgs &a) {
  run_panels<KPanels<Q5>>(a);
}

void quad_gemm_q6k(const QuadArgs &a) { run_panels<Q6Panels>(a); }

template void quad_gemm<1>(const QuadArgs &);
template void quad_gemm<2>(const QuadArgs &);
template void quad_gemm_k<false>(const QuadArgs &);
template void quad_gemm_k<true>(const QuadArgs &);

}  // namespace edgenano::kern::avx2
