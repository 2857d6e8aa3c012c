// The int8 panels' blocking, shared by the AVX2 (matmul_quads_avx2.cpp) and AVX-512 VNNI
// (matmul_quads_avx512.cpp) builds: a panel type P supplies its row tiles (Rows), activation quads
// (Act), unpack and the 4 x NQ register tile; this header runs them over a work item.
//
// Everything here is in an anonymous namespace and uses intrinsics only: each file compiled with
// its own ISA flags gets its own copies (an inline function shared across them could be the wider
// build's, called on a CPU without it).
#pragma once
#include <immintrin.h>

#include <algorithm>
#include <cstdint>
#include <vector>

#include "kernels/cpu/matmul_impl.h"

namespace edgenano::kern {
namespace {

// Four weight rows' codes (unsigned, zero point not subtracted) and scales for one block.
struct alignas(32) RowQuad {
  uint8_t u[4][QK];
  float d[4];
  float pad[4];
};
static_assert(sizeof(RowQuad) == 160);

// Rows [0, nr) (nr <= 4) of w, one-scale blocks [i0, i0 + nblk), into out[0 .. nblk): each block's
// 32 codes as codes(block) makes them and its f16 scale; missing rows zero.
template <class B, class Codes>
inline void unpack_row_quads(const uint8_t *w, size_t row_bytes, int nr, int64_t i0, int nblk,
                             RowQuad *out, Codes codes) {
  for (int r = 0; r < 4; ++r) {
    const auto *b = reinterpret_cast<const B *>(w + size_t(r) * row_bytes) + i0;
    for (int i = 0; i < nblk; ++i) {
      _mm256_store_si256(reinterpret_cast<__m256i *>(out[i].u[r]),
                         r < nr ? codes(b[i]) : _mm256_setzero_si256());
      out[i].d[r] = r < nr ? _cvtsh_ss(b[i].d) : 0.f;
    }
  }
}

// 4 tokens' vectors of i32 partial sums -> one vector with token t's whole sum in lanes t and
// t + 4 (32-bit unpacks keep each token's lanes together, then 64-bit ones).
inline __m256i fold4_i32(const __m256i (&s)[4]) {
  const __m256i p01 =
      _mm256_add_epi32(_mm256_unpacklo_epi32(s[0], s[1]), _mm256_unpackhi_epi32(s[0], s[1]));
  const __m256i p23 =
      _mm256_add_epi32(_mm256_unpacklo_epi32(s[2], s[3]), _mm256_unpackhi_epi32(s[2], s[3]));
  return _mm256_add_epi32(_mm256_unpacklo_epi64(p01, p23), _mm256_unpackhi_epi64(p01, p23));
}

// The float side of every one-scale (*_0) tile: sum[r][p] += d_r * d_a(p) * isum(ops, quad p),
// over nblk blocks, 4 rows, NQ quads. prep(codes) makes a row block's operands once (for all
// quads); isum(operands, quad) gives the quad's 4 token sums as i32 (token t in lanes t and t + 4).
template <int NQ, class Prep, class ISum>
inline void tile_blocks(const RowQuad *w, const QuadA8 *const *a, int nblk,
                        __m256 (&sum)[4][NQ], Prep prep, ISum isum) {
  for (int i = 0; i < nblk; ++i) {
#pragma GCC unroll 4
    for (int r = 0; r < 4; ++r) {
      const auto ops = prep(_mm256_load_si256(reinterpret_cast<const __m256i *>(w[i].u[r])));
      const __m256 dr = _mm256_broadcast_ss(&w[i].d[r]);
#pragma GCC unroll 2
      for (int p = 0; p < NQ; ++p) {
        const QuadA8 &q = a[p][i];
        const __m256i st = isum(ops, q);
        const __m256 da = _mm256_broadcast_ps(reinterpret_cast<const __m128 *>(q.d));
        sum[r][p] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(st), _mm256_mul_ps(da, dr), sum[r][p]);
      }
    }
  }
}

// Signed codes for the sign trick: |w| as the unsigned operand (abs(-128) = 0x80, read as 128),
// w for the activations' signs.
struct SignedCodes {
  __m256i u, c;
};
inline SignedCodes signed_codes(__m256i c) { return {_mm256_abs_epi8(c), c}; }
inline __m256i unsigned_codes(__m256i u) { return u; }
// The zero point's term of a quad, per token in lanes t and t + 4 (QuadA8::corr).
inline __m256i quad_corr(const QuadA8 &q) {
  return _mm256_broadcastsi128_si256(_mm_loadu_si128(reinterpret_cast<const __m128i *>(q.corr)));
}

// 4 rows x NQ quads of f32 sums (token t of a quad in lanes t and t + 4) -> y rows [0, nr) of
// tokens [0, nt).
template <int NQ>
inline void store_tile(const __m256 (&sum)[4][NQ], float *y, int64_t ldy, int nr, int nt,
                       bool acc) {
#pragma GCC unroll 2
  for (int p = 0; p < NQ; ++p) {
    __m128 v[4];  // row r: tokens 0..3 of quad p
#pragma GCC unroll 4
    for (int r = 0; r < 4; ++r)
      v[r] = _mm_add_ps(_mm256_castps256_ps128(sum[r][p]), _mm256_extractf128_ps(sum[r][p], 1));
    _MM_TRANSPOSE4_PS(v[0], v[1], v[2], v[3]);  // now v[t]: rows 0..3 of token t
    for (int t = 0; t < 4 && 4 * p + t < nt; ++t) {
      float *o = y + (4 * p + t) * ldy;
      if (nr == 4) {
        _mm_storeu_ps(o, acc ? _mm_add_ps(v[t], _mm_loadu_ps(o)) : v[t]);
      } else {
        alignas(16) float tmp[4];
        _mm_store_ps(tmp, v[t]);
        for (int r = 0; r < nr; ++r) o[r] = acc ? o[r] + tmp[r] : tmp[r];
      }
    }
  }
}

// A 4 rows x NQ quads register tile over nblk blocks, stored to y (rows [0, nr), tokens [0, nt)).
template <class P, int NQ>
void tile(const typename P::Rows *w, const typename P::Act *const *a, int nblk, float *y,
          int64_t ldy, int nr, int nt, bool acc) {
  __m256 sum[4][NQ];
#pragma GCC unroll 4
  for (int r = 0; r < 4; ++r)
#pragma GCC unroll 2
    for (int p = 0; p < NQ; ++p) sum[r][p] = _mm256_setzero_ps();
  P::template tile<NQ>(w, a, nblk, sum);
  store_tile<NQ>(sum, y, ldy, nr, nt, acc);
}

// One work item: its rows unpacked chunk by chunk, every pair of quads against every 4-row tile.
template <class P>
void run_panels(const QuadArgs &a) {
  using Act = typename P::Act;
  using Rows = typename P::Rows;
  const int64_t nb = a.n / P::kBlock;
  const int n_quads = (a.T + 3) / 4;
  const int tiles = int((a.nrows + 3) / 4);
  thread_local std::vector<Rows> buf;
  if (buf.size() < size_t(tiles) * P::kChunk) buf.resize(size_t(tiles) * P::kChunk);
  const auto *act = static_cast<const Act *>(a.act);
  for (int64_t i0 = 0; i0 < nb; i0 += P::kChunk) {
    const int nblk = int(std::min<int64_t>(P::kChunk, nb - i0));
    for (int j = 0; j < tiles; ++j)
      P::unpack(a.w + size_t(4 * j) * a.row_bytes, a.row_bytes,
                int(std::min<int64_t>(4, a.nrows - 4 * j)), i0, nblk, &buf[size_t(j) * P::kChunk]);
    const bool acc = a.acc || i0 > 0;
    for (int q = 0; q < n_quads; q += 2) {
      const Act *qa[2] = {act + int64_t(q) * nb + i0, act + int64_t(q + 1) * nb + i0};
      const int nt = std::min(8, a.T - 4 * q);
      float *y = a.y + int64_t(4 * q) * a.ldy;
      for (int j = 0; j < tiles; ++j) {
        const int nr = int(std::min<int64_t>(4, a.nrows - 4 * j));
        const Rows *w = &buf[size_t(j) * P::kChunk];
        if (q + 1 < n_quads)
          tile<P, 2>(w, qa, nblk, y + 4 * j, a.ldy, nr, nt, acc);
        else
          tile<P, 1>(w, qa, nblk, y + 4 * j, a.ldy, nr, nt, acc);
      }
    }
  }
}

}  // namespace
}  // namespace edgenano::kern
