// Prefill matmuls: a block computes 64 weight rows x 64 tokens; per 32-wide slice of the reduced
// dimension, half its threads dequantize 64 weight rows (32 values each) into shared memory while
// the other half stage the 64 tokens' activations, then four warps multiply them as 2x2 TF32
// tensor-core tiles each (simt/mma.h). Twin: kern::matmul's f32 panel path (activations in f32).
#include <stdexcept>

#include "kernels/cuda/common.cuh"
#include "kernels/cuda/ops.h"
#include "simt/mma.h"

namespace edgenano::cuk {
inline namespace SIMT_IMPL {

namespace {

constexpr int kBM = 64, kBN = 64, kBK = 32, kLd = kBK + 4, kLdC = kBN + 4;

template <int TYPE>
__global__ void __launch_bounds__(128)
    gemm_kernel(const uint8_t *w, size_t row_bytes, int64_t n_out, int64_t n, const float *x,
                int64_t ldx, float *y, int64_t ldy, int T, bool acc) {
  SIMT_SHARED(float, ws, kBM *kLd);  // (row, k)
  SIMT_SHARED(float, xs, kBN *kLd);  // (token, k): B column-major
  SIMT_SHARED(float, cs, kBM *kLdC);
  const int tid = int(threadIdx.x), warp = tid >> 5;
  const int64_t r0 = int64_t(blockIdx.x) * kBM;
  const int t0 = int(blockIdx.y) * kBN;
  const int wm = (warp >> 1) * 32, wn = (warp & 1) * 32;  // this warp's 32 x 32 of the tile
  simt::mma::FragC c[2][2];
  for (int i = 0; i < 2; ++i)
    for (int j = 0; j < 2; ++j) simt::mma::fill_zero(c[i][j]);
  for (int64_t k0 = 0; k0 < n; k0 += kBK) {
    float v[kBK];
    if (tid < kBM) {  // a weight row's 32 values
      const int64_t r = r0 + tid;
      if (r < n_out)
        dequant32<TYPE>(w + r * row_bytes, k0, n, v);
      else
        for (float &e : v) e = 0.f;
      for (int i = 0; i < kBK; ++i) ws[tid * kLd + i] = v[i];
    } else {  // a token's 32 activations
      const int tk = tid - kBM, t = t0 + tk;
      for (int i = 0; i < kBK; ++i) v[i] = t < T && k0 + i < n ? x[int64_t(t) * ldx + k0 + i] : 0.f;
      for (int i = 0; i < kBK; ++i) xs[tk * kLd + i] = v[i];
    }
    __syncthreads();
    for (int kk = 0; kk < kBK; kk += 8) {
      simt::mma::FragA a[2];
      simt::mma::FragB b[2];
      for (int i = 0; i < 2; ++i) simt::mma::load_a(a[i], ws, (wm + 16 * i) * kLd + kk, kLd);
      for (int j = 0; j < 2; ++j) simt::mma::load_b(b[j], xs, (wn + 16 * j) * kLd + kk, kLd);
      for (int i = 0; i < 2; ++i)
        for (int j = 0; j < 2; ++j) simt::mma::mma(c[i][j], a[i], b[j], c[i][j]);
    }
    __syncthreads();  // the tiles are overwritten next
  }
  for (int i = 0; i < 2; ++i)
    for (int j = 0; j < 2; ++j)
      simt::mma::store_c(cs, (wm + 16 * i) * kLdC + wn + 16 * j, c[i][j], kLdC);
  __syncthreads();
  for (int e = tid; e < kBM * kBN; e += 128) {  // consecutive threads: consecutive rows
    const int rr = e % kBM, tt = e / kBM;
    const int64_t r = r0 + rr;
    const int t = t0 + tt;
    if (r < n_out && t < T) {
      float *o = y + int64_t(t) * ldy + r;
      const float val = cs[rr * kLdC + tt];
      *o = acc ? *o + val : val;
    }
  }
}

}  // namespace

void gemm(const kern::Weight &w, const float *x, int64_t ldx, float *y, int64_t ldy, int T,
          bool acc, Stream s) {
  if (T <= 0 || w.n_out <= 0) return;
  const dim3 grid(unsigned((w.n_out + kBM - 1) / kBM), unsigned((T + kBN - 1) / kBN));
  const bool ok = dispatch_type(w.type, [&](auto tag) {
    constexpr int TYPE = decltype(tag)::value;
    simt::launch<gemm_kernel<TYPE>>(grid, dim3(128), s, w.data, w.row_bytes, w.n_out, w.n_in, x,
                                    ldx, y, ldy, T, acc);
  });
  if (!ok) throw std::invalid_argument("cuda gemm: unsupported weight type");
}

}  // namespace SIMT_IMPL
}  // namespace edgenano::cuk
