// AVX-512 VNNI int8 panels for Q8_0, Q4_0 and Q5_0 (built with the AVX-512 flags; entered only
// after use_avx512()): the AVX2 panels' blocking (matmul_quads_impl.h) with each token's block
// product as one vpdpbusd on 256-bit vectors.
//
// The AVX2 Q8_0 tile spends three instructions per token and block on the products (maddubs,
// then a madd to 32 bits because two 8-bit words overflow 16, after a sign) where the 4- and
// 5-bit types spend one maddubs and share the rest between 4 tokens. vpdpbusd multiplies u8 by s8
// and sums groups of 4 into i32 in one instruction: with the sign trick (|w| against sign(a, w))
// a token's block costs a sign and a vpdpbusd, and 4 products of at most 128 * 127 per lane are
// far inside i32 (the block's 32: 520192). The same integer sums as the AVX2 and scalar kernels;
// only the order of the float additions may differ.
#include <immintrin.h>

#include <cstring>
#include <type_traits>

#include "kernels/cpu/matmul_impl.h"
#include "kernels/cpu/matmul_quads_impl.h"

namespace edgenano::kern {

namespace {

inline __m256i load256(const void *p) {
  return _mm256_loadu_si256(static_cast<const __m256i *>(p));
}

struct Q8PanelsVnni {
  using Act = QuadA8;
  using Rows = RowQuad;
  static constexpr int kBlock = QK;
  static constexpr int kChunk = 64;  // blocks per pass, as the AVX2 panels

  static void unpack(const uint8_t *w, size_t row_bytes, int nr, int64_t i0, int nblk,
                     RowQuad *out) {
    unpack_row_quads<BlockQ8_0>(w, row_bytes, nr, i0, nblk, out,
                                [](const BlockQ8_0 &b) { return load256(b.qs); });
  }

  template <int NQ>
  static void tile(const RowQuad *w, const QuadA8 *const *a, int nblk, __m256 (&sum)[4][NQ]) {
    tile_blocks<NQ>(w, a, nblk, sum, signed_codes, [](const SignedCodes &w8, const QuadA8 &q) {
      __m256i s[4];
#pragma GCC unroll 4
      for (int t = 0; t < 4; ++t)
        s[t] = _mm256_dpbusd_epi32(_mm256_setzero_si256(), w8.u,
                                   _mm256_sign_epi8(load256(q.qs[t]), w8.c));
      return fold4_i32(s);
    });
  }
};

// Q4_0 / Q5_0: unsigned codes u = q + zero, as the AVX2 panels (the activation quads carry
// corr = -(zero / 2) * sum(a) per half). Where the AVX2 tile folds 4 tokens' maddubs words in 16
// bits and widens once, here each token's block is one vpdpbusd into i32 (4 products of at most
// 31 * 127 a lane) and the 4 tokens are folded in 32-bit lanes: fewer instructions from 2 tokens
// up, which is what batched decode (a few sequences a step) runs.
inline __m256i nibbles32(const uint8_t *p) {
  const __m256i v =
      _mm256_broadcastsi128_si256(_mm_loadu_si128(reinterpret_cast<const __m128i *>(p)));
  return _mm256_and_si256(_mm256_srlv_epi64(v, _mm256_setr_epi64x(0, 0, 4, 4)),
                          _mm256_set1_epi8(0x0f));
}

template <int KIND>  // 1 Q4_0, 2 Q5_0
struct Q0PanelsVnni {
  using B = std::conditional_t<KIND == 1, BlockQ4_0, BlockQ5_0>;
  using Act = QuadA8;
  using Rows = RowQuad;
  static constexpr int kBlock = QK;
  static constexpr int kChunk = 64;

  static __m256i codes(const B &b) {
    if constexpr (KIND == 1) {
      return nibbles32(b.qs);
    } else {
      uint32_t qh;
      std::memcpy(&qh, b.qh, sizeof qh);
      const __m256i u = nibbles32(b.qs);
      return _mm256_mask_add_epi8(u, _cvtu32_mask32(qh), u, _mm256_set1_epi8(16));
    }
  }

  static void unpack(const uint8_t *w, size_t row_bytes, int nr, int64_t i0, int nblk,
                     RowQuad *out) {
    unpack_row_quads<B>(w, row_bytes, nr, i0, nblk, out, codes);
  }

  template <int NQ>
  static void tile(const RowQuad *w, const QuadA8 *const *a, int nblk, __m256 (&sum)[4][NQ]) {
    tile_blocks<NQ>(w, a, nblk, sum, unsigned_codes, [](__m256i u, const QuadA8 &q) {
      __m256i s[4];
#pragma GCC unroll 4
      for (int t = 0; t < 4; ++t)
        s[t] = _mm256_dpbusd_epi32(_mm256_setzero_si256(), u, load256(q.qs[t]));
      return _mm256_add_epi32(fold4_i32(s), quad_corr(q));
    });
  }
};

}  // namespace

void quad_gemm_q8_vnni(const QuadArgs &a) { run_panels<Q8PanelsVnni>(a); }
void quad_gemm_q4_0_vnni(const QuadArgs &a) { run_panels<Q0PanelsVnni<1>>(a); }
void quad_gemm_q5_0_vnni(const QuadArgs &a) { run_panels<Q0PanelsVnni<2>>(a); }

}  // namespace edgenano::kern
