// Int8 panels: the prefill product for Q4_0/Q5_0 weights on AVX2 (GotoBLAS-style blocking over
// an integer micro-kernel).
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
// Blocking: the activations are quantized once per call into quads (QuadA8, matmul_impl.h). A
// work item is a group of up to kItemRows rows; per chunk of kChunk blocks of the reduced
// dimension, its rows are unpacked into tiles of 4 rows (unsigned codes and f32 scales, about 150
// KB: L2), and each pair of quads (their chunk is 20 KB: L1) passes every tile.
#include <algorithm>
#include <cstring>
#include <vector>

#include "kernels/matmul_avx2.h"

namespace edgenano::kern::avx2 {

namespace {

constexpr int kChunk = 64;  // blocks of the reduced dimension per pass

// Four weight rows' codes (unsigned, zero point not subtracted) and scales for one block.
struct alignas(32) RowQuad {
  uint8_t u[4][QK];
  float d[4];
  float pad[4];
};
static_assert(sizeof(RowQuad) == 160);

template <int KIND>
using Block = std::conditional_t<KIND == 1, BlockQ4_0, BlockQ5_0>;

template <int KIND>
inline __m256i codes(const Block<KIND> &b) {
  if constexpr (KIND == 1) {
    return nibbles32(b.qs);
  } else {
    uint32_t qh;
    std::memcpy(&qh, b.qh, 4);
    return _mm256_or_si256(nibbles32(b.qs), bits_to_0x10(qh));
  }
}

// Rows [0, nr) (nr <= 4) of w, blocks [i0, i0 + nblk), into out[0 .. nblk); missing rows zero.
template <int KIND>
void unpack_rows(const uint8_t *w, size_t row_bytes, int nr, int64_t i0, int nblk, RowQuad *out) {
  for (int r = 0; r < 4; ++r) {
    if (r >= nr) {
      for (int i = 0; i < nblk; ++i) {
        _mm256_store_si256(reinterpret_cast<__m256i *>(out[i].u[r]), _mm256_setzero_si256());
        out[i].d[r] = 0.f;
      }
      continue;
    }
    const auto *b = reinterpret_cast<const Block<KIND> *>(w + size_t(r) * row_bytes) + i0;
    for (int i = 0; i < nblk; ++i) {
      _mm256_store_si256(reinterpret_cast<__m256i *>(out[i].u[r]), codes<KIND>(b[i]));
      out[i].d[r] = h2f(b[i].d);
    }
  }
}

// One row's codes against a quad: the 4 integer dots in lanes 0-3, their other halves in 4-7.
inline __m256i quad_dot(__m256i u, const QuadA8 &a) {
  const __m256i m0 = _mm256_maddubs_epi16(u, loadu(a.qs[0]));
  const __m256i m1 = _mm256_maddubs_epi16(u, loadu(a.qs[1]));
  const __m256i m2 = _mm256_maddubs_epi16(u, loadu(a.qs[2]));
  const __m256i m3 = _mm256_maddubs_epi16(u, loadu(a.qs[3]));
  // 32-bit unpacks keep each token's int16 pairs together: lanes [t0 t1 t0 t1], then [t0..t3].
  const __m256i p01 =
      _mm256_add_epi16(_mm256_unpacklo_epi32(m0, m1), _mm256_unpackhi_epi32(m0, m1));
  const __m256i p23 =
      _mm256_add_epi16(_mm256_unpacklo_epi32(m2, m3), _mm256_unpackhi_epi32(m2, m3));
  const __m256i p =
      _mm256_add_epi16(_mm256_unpacklo_epi64(p01, p23), _mm256_unpackhi_epi64(p01, p23));
  return _mm256_add_epi32(
      _mm256_madd_epi16(p, _mm256_set1_epi16(1)),
      _mm256_broadcastsi128_si256(_mm_loadu_si128(reinterpret_cast<const __m128i *>(a.corr))));
}

// 4 rows x NQ quads over nblk blocks; a[p] is quad p's first block. y gets rows [0, nr) of
// tokens [0, nt).
template <int NQ>
void tile(const RowQuad *w, const QuadA8 *const *a, int nblk, float *y, int64_t ldy, int nr, int nt,
          bool acc) {
  __m256 sum[4][NQ];
#pragma GCC unroll 4
  for (int r = 0; r < 4; ++r)
#pragma GCC unroll 2
    for (int p = 0; p < NQ; ++p) sum[r][p] = _mm256_setzero_ps();
  for (int i = 0; i < nblk; ++i) {
#pragma GCC unroll 4
    for (int r = 0; r < 4; ++r) {
      const __m256i u = _mm256_load_si256(reinterpret_cast<const __m256i *>(w[i].u[r]));
      const __m256 dr = _mm256_broadcast_ss(&w[i].d[r]);
#pragma GCC unroll 2
      for (int p = 0; p < NQ; ++p) {
        const QuadA8 &q = a[p][i];
        const __m256 da = _mm256_broadcast_ps(reinterpret_cast<const __m128 *>(q.d));
        sum[r][p] =
            _mm256_fmadd_ps(_mm256_cvtepi32_ps(quad_dot(u, q)), _mm256_mul_ps(da, dr), sum[r][p]);
      }
    }
  }
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

}  // namespace

void quant_quads(const float *x, int64_t ldx, int T, int q0, int q1, int64_t n, int zero,
                 QuadA8 *out) {
  const int64_t nb = n / QK;
  for (int q = q0; q < q1; ++q) {
    QuadA8 *o = out + int64_t(q) * nb;
    for (int k = 0; k < 4; ++k) {
      const int t = 4 * q + k;
      if (t >= T) {
        for (int64_t i = 0; i < nb; ++i) {
          std::memset(o[i].qs[k], 0, QK);
          o[i].d[k] = 0.f;
          o[i].corr[k] = 0;
        }
        continue;
      }
      const float *xt = x + t * ldx;
      for (int64_t i = 0; i < nb; ++i, xt += QK) {  // quant_a8's arithmetic, code for code
        __m256 mx = vabs(_mm256_loadu_ps(xt));
        for (int j = 8; j < QK; j += 8) mx = _mm256_max_ps(mx, vabs(_mm256_loadu_ps(xt + j)));
        const float amax = hmax(mx);
        int s0, s1;
        _mm256_storeu_si256(reinterpret_cast<__m256i *>(o[i].qs[k]),
                            quant32(xt, _mm256_set1_ps(amax > 0.f ? 127.f / amax : 0.f), s0, s1));
        o[i].d[k] = amax / 127.f;
        o[i].corr[k] = -(zero / 2) * (s0 + s1);
      }
    }
  }
}

template <int KIND>
void quad_gemm(const QuadArgs &a) {
  const int64_t nb = a.n / QK;
  const int n_quads = (a.T + 3) / 4;
  const int tiles = int((a.nrows + 3) / 4);
  thread_local std::vector<RowQuad> buf;
  if (buf.size() < size_t(tiles) * kChunk) buf.resize(size_t(tiles) * kChunk);
  for (int64_t i0 = 0; i0 < nb; i0 += kChunk) {
    const int nblk = int(std::min<int64_t>(kChunk, nb - i0));
    for (int j = 0; j < tiles; ++j)
      unpack_rows<KIND>(a.w + size_t(4 * j) * a.row_bytes, a.row_bytes,
                        int(std::min<int64_t>(4, a.nrows - 4 * j)), i0, nblk,
                        &buf[size_t(j) * kChunk]);
    const bool acc = a.acc || i0 > 0;
    for (int q = 0; q < n_quads; q += 2) {
      const QuadA8 *qa[2] = {a.act + int64_t(q) * nb + i0, a.act + int64_t(q + 1) * nb + i0};
      const int nt = std::min(8, a.T - 4 * q);
      float *y = a.y + int64_t(4 * q) * a.ldy;
      for (int j = 0; j < tiles; ++j) {
        const int nr = int(std::min<int64_t>(4, a.nrows - 4 * j));
        if (q + 1 < n_quads)
          tile<2>(&buf[size_t(j) * kChunk], qa, nblk, y + 4 * j, a.ldy, nr, nt, acc);
        else
          tile<1>(&buf[size_t(j) * kChunk], qa, nblk, y + 4 * j, a.ldy, nr, nt, acc);
      }
    }
  }
}

template void quad_gemm<1>(const QuadArgs &);
template void quad_gemm<2>(const QuadArgs &);

}  // namespace edgenano::kern::avx2
