// Internal to the matmul kernels: the per-CPU kernel table filled by matmul.cpp (scalar) and
// matmul_avx2.cpp (AVX2/FMA/F16C). Not for use outside kernels/.
#pragma once
#include <cstddef>
#include <cstdint>

#include "kernels/cpu/common.h"

namespace edgenano::kern {

// Dense index of the supported weight types (the table below is indexed by it).
enum TypeIdx {
  I_F32,
  I_F16,
  I_BF16,
  I_Q8_0,
  I_Q4_0,
  I_Q5_0,
  I_Q4_1,
  I_Q5_1,
  I_Q4_K,
  I_Q5_K,
  I_Q6_K,
  I_COUNT
};
int type_index(int type);  // -1 when unsupported

// What a type's dot product consumes: f32 activations, A8 blocks (32) or A8K blocks (256).
enum ActKind { ACT_F32, ACT_A8, ACT_A8K };
ActKind act_kind(int type);

constexpr int kPanel = 16;  // weight rows per f32 panel (two 8-wide vectors)
constexpr int kKC = 256;    // reduced-dimension chunk per panel (a multiple of every block)

// For T tokens: y[t*ldy + r] (= or +=) dot(row r of w, activations of token t) for r < nrows.
// Rows are row_bytes apart and n values long; token t's activations start act_stride bytes after
// token t-1's. Kernels that can load each weight block once for several tokens do so.
struct DotArgs {
  const uint8_t *w;
  size_t row_bytes;
  int64_t nrows, n;
  const uint8_t *act;
  size_t act_stride;
  int T;
  float *y;
  int64_t ldy;
  bool acc;
  bool packed = false;  // whole groups of 16 rows in pack_rows16's layout (the dot_rows kernels)
};
using DotFn = void (*)(const DotArgs &a);

// Int8 panels, the prefill path for Q4_0/Q5_0 where the CPU has one (AVX2): activations of 4
// tokens interleaved per 32-value block, so each unpacked weight block meets 4 tokens and their 4
// integer sums share one vector for the float work. corr = -(zero point / 2) * sum(qs): the zero
// point's term, split over the two 128-bit lanes the sums occupy (exact: the zero point is even).
struct QuadA8 {
  int8_t qs[4][QK];
  float d[4];
  int32_t corr[4];
};
static_assert(sizeof(QuadA8) == 160);
// The same for Q4_K/Q5_K rows: 4 tokens per 256 values, one scale each (as A8K), the codes per
// 32-value sub-block j, and the sub-block sums S[t][j] (for the minimums) laid out for two madds
// against the row's minimums: word (j % 4 / 2) * 8 + 2 t + j % 2 of sums[j / 4].
struct QuadA8K {
  int8_t qs[QK_K / QK][4][QK];
  int16_t sums[2][16];
  float d[4];
  float pad[4];
};
static_assert(sizeof(QuadA8K) == 1120);
// y[t*ldy + r] (= or +=) row r of w . token t, for r < nrows, t < T; act holds n_quads =
// ceil(T / 4) quads (QuadA8 or QuadA8K) of n / (block size) blocks each (quad-major), tokens past T
// zero.
struct QuadArgs {
  const uint8_t *w;
  size_t row_bytes;
  int64_t nrows, n;
  const void *act;
  int T;
  float *y;
  int64_t ldy;
  bool acc;
};
using QuadFn = void (*)(const QuadArgs &a);
using DequantFn = void (*)(const void *src, float *dst, int64_t n);

// A DotFn from a one-row, one-token dot F(row, activations, n): every token against every row.
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

struct KernelTable {
  void (*quant_a8)(const float *x, BlockA8 *y, int64_t n);
  void (*quant_a8k)(const float *x, BlockA8K *y, int64_t n);
  DotFn dot[I_COUNT];
  DequantFn dequant[I_COUNT];
  // rows: kPanel rows of kc floats (row-major, stride kKC) -> wp: kc x kPanel (k-major).
  void (*pack_panel)(const float *rows, int64_t kc, float *wp);
  // y[t, 0:nr] (= or +=) wp^T x[t, 0:kc] for t < T; wp is the packed panel.
  void (*gemm_panel)(const float *wp, int64_t kc, const float *x, int64_t ldx, float *y,
                     int64_t ldy, int T, int nr, bool acc);
  // Int8 panels (nullptr where this CPU has none): quads [q0, q1) of the T tokens x (row stride
  // ldx, n values each) quantized as for quant_a8, with the zero point of the weights; the
  // products per weight type (nullptr: that type has none).
  void (*quant_quads)(const float *x, int64_t ldx, int T, int q0, int q1, int64_t n, int zero,
                      QuadA8 *out);
  void (*quant_quads_k)(const float *x, int64_t ldx, int T, int q0, int q1, int64_t n,
                        QuadA8K *out);
  QuadFn quad_gemm[I_COUNT];
  // Several tokens' dots, one row per lane, over BlockA8R / BlockA8KR activations (see below;
  // nullptr: the type has none).
  DotFn dot_rows[I_COUNT];
};

// The AVX-512 VNNI int8 panels (matmul_quads_avx512.cpp).
void quad_gemm_q8_vnni(const QuadArgs &a);
void quad_gemm_q4_0_vnni(const QuadArgs &a);
void quad_gemm_q5_0_vnni(const QuadArgs &a);
// The AVX-512 VNNI dots for several tokens, one row per lane, 16 rows at a time (8 for Q4_K)
// (matmul_rows_avx512.cpp). Their activations: A8 blocks with the weights' zero-point term as an
// integer, interleaved by block in groups of 8 tokens, the last group T % 8 (block i of token t of
// a group of g tokens at [g i + t]; DotArgs::act_stride = bytes per whole group of 8).
struct BlockA8R {
  float d;
  int32_t corr;  // -zero * sum(qs): zero = 8 (Q4_0), 16 (Q5_0), 128 (Q8_0, codes biased)
  int8_t qs[QK];
};
static_assert(sizeof(BlockA8R) == 40);
// The same for Q4_K over 256-value blocks: msum[q] holds the 16-bit pair of sub-block sums
// (S_j, S_j+2) for j = 0, 1, 4, 5 (q = 0..3), against the rows' minimums paired alike.
struct BlockA8KR {
  float d;
  int32_t msum[4];
  int8_t qs[QK_K];
};
static_assert(sizeof(BlockA8KR) == 276);
void dot_rows_q4_k(const DotArgs &a);
void dot_rows_q8_0(const DotArgs &a);
void dot_rows_q4_0(const DotArgs &a);
void dot_rows_q5_0(const DotArgs &a);
// pack_rows16 of `groups` whole groups of 16 rows (Q4_0 / Q5_0 / Q8_0 / Q4_K), from the row-lane
// dots' transposes: the same bytes as the portable packer.
void pack_groups_avx512(int type, const uint8_t *src, uint8_t *dst, size_t row_bytes,
                        int64_t groups);

const KernelTable &scalar_kernels();
const KernelTable &avx2_kernels();    // only on x86-64 builds; call after use_avx2()
const KernelTable &avx512_kernels();  // only where built (EDGENANO_AVX512); after use_avx512()
const KernelTable &active_kernels();

}  // namespace edgenano::kern
