// AVX2 matmul kernels for several tokens at once (prefill batches below gemm_min_batch): each
// weight block is unpacked once for several tokens' activation blocks. K types: one row x 4 tokens;
// Q8_0/Q4_0/Q5_0: register tiles of 4 rows x 4 tokens; Q4_1/Q5_1: one row x 6 tokens.
#include <algorithm>
#include <cstring>
#include <tuple>
#include <type_traits>
#include <vector>

#include "kernels/cpu/matmul_avx2.h"

namespace edgenano::kern::avx2 {

namespace {

// ---- K types, batches below gemm_min_batch: codes and scales unpacked once per block
// and dotted with up to kTokK tokens' activations ----

constexpr int kTokK = 4;

// NT tokens' activation rows and one f32 accumulator each, for the K-type kernels below.
template <int NT>
struct TokenSums {
  const BlockA8K *a[NT];
  __m256 sum[NT];

  TokenSums(const uint8_t *act, size_t stride) {
#pragma GCC unroll 4
    for (int t = 0; t < NT; ++t) {
      a[t] = reinterpret_cast<const BlockA8K *>(act + size_t(t) * stride);
      sum[t] = _mm256_setzero_ps();
    }
  }
  void store(float *y, int64_t ldy, bool acc) const {
#pragma GCC unroll 4
    for (int t = 0; t < NT; ++t) {
      const float v = hsum(sum[t]);
      y[t * ldy] = acc ? y[t * ldy] + v : v;
    }
  }
};

// Q4_K / Q5_K: sum over sub-blocks j of d*sc_j*(u.a)_j - dmin*m_j*(sum a)_j.
template <bool Q5, int NT>
void k45_row_tokens(const uint8_t *w, const uint8_t *act, size_t stride, int64_t nb, float *y,
                    int64_t ldy, bool acc) {
  auto *b = reinterpret_cast<const std::conditional_t<Q5, BlockQ5_K, BlockQ4_K> *>(w);
  TokenSums<NT> ts(act, stride);
  __m256 mins_sum[NT];  // the dmin terms, a chain of their own
#pragma GCC unroll 4
  for (int t = 0; t < NT; ++t) mins_sum[t] = _mm256_setzero_ps();
  for (int64_t i = 0; i < nb; ++i) {
    uint8_t sc[8], m[8];
    k_scales(b[i].scales, sc, m);
    int64_t m8;
    std::memcpy(&m8, m, 8);
    const __m256i mins = _mm256_cvtepu8_epi32(_mm_cvtsi64_si128(m8));
    __m256i sumi[NT];
#pragma GCC unroll 4
    for (int t = 0; t < NT; ++t) sumi[t] = _mm256_setzero_si256();
    for (int c = 0; c < 4; ++c) {
      __m256i lo, hi;
      k45_codes(b[i], c, lo, hi);
      const __m256i s0 = _mm256_set1_epi16(sc[2 * c]), s1 = _mm256_set1_epi16(sc[2 * c + 1]);
#pragma GCC unroll 4
      for (int t = 0; t < NT; ++t) {
        const int8_t *qa = ts.a[t][i].qs + 64 * c;
        sumi[t] =
            _mm256_add_epi32(sumi[t], _mm256_madd_epi16(_mm256_maddubs_epi16(lo, loadu(qa)), s0));
        sumi[t] = _mm256_add_epi32(sumi[t],
                                   _mm256_madd_epi16(_mm256_maddubs_epi16(hi, loadu(qa + 32)), s1));
      }
    }
    const float d = h2f(b[i].d), dmin = h2f(b[i].dmin);
#pragma GCC unroll 4
    for (int t = 0; t < NT; ++t) {
      const BlockA8K &at = ts.a[t][i];
      const __m256i bs = _mm256_madd_epi16(loadu(at.bsums), _mm256_set1_epi16(1));  // 8 sums
      ts.sum[t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(sumi[t]), _mm256_set1_ps(d * at.d), ts.sum[t]);
      mins_sum[t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_mullo_epi32(bs, mins)),
                                    _mm256_set1_ps(dmin * at.d), mins_sum[t]);
    }
  }
#pragma GCC unroll 4
  for (int t = 0; t < NT; ++t) ts.sum[t] = _mm256_sub_ps(ts.sum[t], mins_sum[t]);
  ts.store(y, ldy, acc);
}

// Q6_K: codes u = q + 32 (0..63), one int8 scale per 16 values.
template <int NT>
void q6k_row_tokens(const uint8_t *w, const uint8_t *act, size_t stride, int64_t nb, float *y,
                    int64_t ldy, bool acc) {
  auto *b = reinterpret_cast<const BlockQ6_K *>(w);
  TokenSums<NT> ts(act, stride);
  for (int64_t i = 0; i < nb; ++i) {
    const __m256i sc16 = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)b[i].scales));
    __m256i sumi[NT];
#pragma GCC unroll 4
    for (int t = 0; t < NT; ++t)  // the zero point: codes are q + 32
      sumi[t] =
          _mm256_sub_epi32(_mm256_setzero_si256(),
                           _mm256_slli_epi32(_mm256_madd_epi16(sc16, loadu(ts.a[t][i].bsums)), 5));
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
              _mm256_madd_epi16(_mm256_maddubs_epi16(u, loadu(ts.a[t][i].qs + 32 * (g / 2))), s));
      }
    const float d = h2f(b[i].d);
#pragma GCC unroll 4
    for (int t = 0; t < NT; ++t)
      ts.sum[t] =
          _mm256_fmadd_ps(_mm256_cvtepi32_ps(sumi[t]), _mm256_set1_ps(d * ts.a[t][i].d), ts.sum[t]);
  }
  ts.store(y, ldy, acc);
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

// One token (decode): the one-token dots, which stream faster than the NT = 1 kernel below (Q4_K
// 22 against 15 GB/s). More: each row's blocks unpacked once per kTokK tokens, rows taken kRowChunk
// at a time (they stay in L2 while every token passes), so the weights are read from memory once
// per call and the activations once per kRowChunk rows.
constexpr int kRowChunk = 16;

template <class Kern>
void k_rows(const DotArgs &a) {
  if (a.T == 1) return rows<BlockA8K, Kern::one>(a);
  const int64_t nb = a.n / QK_K;
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

}  // namespace

// One token: the single-row dots; Q8_0/Q4_0/Q5_0 with more: the tiles;
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

template <bool Q5>
void k45_rows(const DotArgs &a) {
  k_rows<K45<Q5>>(a);
}

void q6k_rows(const DotArgs &a) { k_rows<Q6K>(a); }

template void q0_rows<0>(const DotArgs &);
template void q0_rows<1>(const DotArgs &);
template void q0_rows<2>(const DotArgs &);
template void q0_rows<3>(const DotArgs &);
template void q0_rows<4>(const DotArgs &);
template void k45_rows<false>(const DotArgs &);
template void k45_rows<true>(const DotArgs &);

}  // namespace edgenano::kern::avx2
