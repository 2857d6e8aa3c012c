// The CUDA kernels' host entry points, one per backend operation, over the same params structs
// as kernels/cpu (their twins and references). Pointers are device memory (emulated device memory
// in the emulator build: the same sources compiled by the host compiler over simt/simt.h, in the
// inline namespace simt::host instead of simt::cuda). Every call is asynchronous on `s`.
#pragma once
#include <cstddef>
#include <cstdint>

#include "kernels/params.h"
#include "simt/simt.h"

namespace edgenano::cuk {
inline namespace SIMT_IMPL {

using simt::Stream;

// ---- matmul: y[t*ldy + r] (= or +=) W[r, :] . x[t*ldx + :] ----
// Decode (T < kGemmMinT): activations quantized to int8 blocks (as kern::matmul's dot path: A8
// for the 32-value types, A8K for the K types) and integer dots, a warp per weight row.
// Prefill: dequantized weight tiles and TF32 tensor-core tiles (simt/mma.h), f32 activations.
constexpr int kGemmMinT = 8;
size_t matmul_scratch_bytes(int type, int64_t n_in, int T);  // quantized activations
void matvec(const kern::Weight &w, const float *x, int64_t ldx, float *y, int64_t ldy, int T,
            bool acc, void *scratch, Stream s);
void gemm(const kern::Weight &w, const float *x, int64_t ldx, float *y, int64_t ldy, int T,
          bool acc, Stream s);
// F32 weights take the f32 dots for every T: the MoE router is F32 in every file, and TF32's
// rounding flipped a near-tie in its top-k against the CPU (a tiny MoE model, 70-token prefill).
inline void matmul(const kern::Weight &w, const float *x, int64_t ldx, float *y, int64_t ldy, int T,
                   bool acc, void *scratch, Stream s) {
  if (T < kGemmMinT || w.type == ggml::T_F32)
    matvec(w, x, ldx, y, ldy, T, acc, scratch, s);
  else
    gemm(w, x, ldx, y, ldy, T, acc, s);
}

// ---- the other operations (backend.h's, same arguments) ----
void embed(const kern::Weight &table, const int32_t *ids, int T, float *x, int64_t ldx, Stream s);
void rmsnorm(const float *x, int64_t ldx, const float *w, float *y, int64_t ldy, int T, int64_t n,
             float eps, Stream s);
void gated_rmsnorm(const float *y, int64_t ldy, const float *z, int64_t ldz, const float *w,
                   float *out, int64_t ldo, int T, int64_t D, int G, float eps, Stream s);
void relu2(float *x, int64_t ldx, int T, int64_t n, Stream s);
void softplus_bias(const float *x, int64_t ldx, const float *bias, float *out, int64_t ldo, int T,
                   int H, Stream s);
void causal_conv(const kern::ConvParams &p, Stream s);
// chunk <= 0 or T == 1: the one-step recurrence over the T tokens, a warp per (h, p). Otherwise
// (chunk <= kSsdMaxChunk) the chunked SSD form, as kern::ssm_scan, with device scratch of
// ssm_scan_scratch_bytes (0 for the recurrence).
constexpr int kSsdMaxChunk = 256;
size_t ssm_scan_scratch_bytes(const kern::ScanParams &p, int chunk);
void ssm_scan(const kern::ScanParams &p, int chunk, void *scratch, Stream s);
void kv_store(const float *src, int64_t lds, int T, int64_t width, int kv_type, uint8_t *dst,
              Stream s);
// Routed experts (backend.h's gather_rows / scatter_add_rows), rows and scale in device memory.
void gather_rows(const float *src, int64_t lds, const int32_t *rows, int n_rows, int64_t n,
                 float *dst, int64_t ldd, Stream s);
void scatter_add_rows(const float *src, int64_t lds, const int32_t *rows, const float *scale,
                      int n_rows, int64_t n, float *dst, int64_t ldd, Stream s);
// One query: split-K flash decoding (key ranges, then a combine; scratch for the partials).
// Prefill: tiles of 16 queries x 32 keys through shared memory (no scratch).
size_t attention_scratch_bytes(const kern::AttnParams &p);
void attention(const kern::AttnParams &p, void *scratch, Stream s);

}  // namespace SIMT_IMPL
}  // namespace edgenano::cuk
