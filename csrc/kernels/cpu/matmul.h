// Quantized matrix products y = W x for every supported weight type (decode and prefill).
// Small batches quantize activations to int8 blocks and use integer dot products (register tiles of
// rows x tokens); larger batches of Q4_0/Q5_0 run int8 panels (AVX2), other types dequantize
// weight panels to f32 once per call and run a register-blocked f32 kernel.
#pragma once
#include <cstdint>
#include <vector>

#include "kernels/cpu/common.h"
#include "kernels/params.h"
#include "kernels/cpu/threadpool.h"

namespace edgenano::kern {

// Scratch memory reused across calls (quantized activations, packed weight panels).
struct Workspace {
  std::vector<uint8_t> shared;                 // one buffer all threads read
  std::vector<std::vector<float>> per_thread;  // one per pool thread
  uint8_t *get_shared(size_t bytes);
  float *get_thread(int tid, size_t n_floats);
};

// Vec: the dot kernels (int8 activations for quantized types); Gemm: f32 panels; I8Gemm: int8
// panels (Q4_0/Q5_0 on AVX2; other types and CPUs fall back to Auto's choice).
enum class MatmulPath { Auto, Vec, Gemm, I8Gemm };

// y[t*ldy + r] (=, or += when accumulate) sum_k W[r, k] * x[t*ldx + k], for t < T, r < n_out.
void matmul(const Weight &w, const float *x, int64_t ldx, float *y, int64_t ldy, int T,
            bool accumulate, ThreadPool &pool, Workspace &ws, MatmulPath path = MatmulPath::Auto);

// The kernel matmul runs for T tokens of this type on this CPU when asked for path: Auto picks
// by batch size; I8Gemm where this CPU or type has no int8 panels is taken as Auto.
MatmulPath resolve_path(int type, int T, MatmulPath path = MatmulPath::Auto);

// The row-lane dots' own layout (AVX-512 VNNI: Q4_0, Q5_0, Q8_0, Q4_K), made once at load. Each
// whole group of 16 rows keeps its 16 * row_bytes bytes, rearranged per block: the 16 rows' f16
// scales (*_0 types), then dword k of every row's block for each k in turn (row r in 32-bit lane r
// of a 64-byte vector). A kernel then loads a block of 16 rows ready to use, where from ggml's
// rows it spends a shuffle network on it (Q5_0 15360x4480, 2 threads: 0.70x the time at 4
// tokens). Q8_0's codes are stored biased to unsigned, Q5_0's high bits reordered (repack.cpp).
// The last n_rows % 16 rows stay as they are. Slices must start at a multiple of 16 rows.
// packable: this CPU's kernels read the layout for this type (matmul then always takes them).
bool packable(int type);
void pack_rows16(int type, int64_t n_in, const uint8_t *src, uint8_t *dst, int64_t n_rows);
void unpack_rows16(int type, int64_t n_in, const uint8_t *src, uint8_t *dst, int64_t n_rows);

// One row of n values of any supported type to f32 (n a multiple of the block size).
void dequantize_row(int type, const void *src, float *dst, int64_t n);

// The batch size from which matmul's Auto path uses the f32 panel kernel where it has no int8
// panels for this weight type
// (measured crossovers on 2 AVX2 threads: below it the int8 dots beat dequantizing f32 panels.
// Q8_0/Q4_0/Q5_0, register tiles of 4 rows x 4 tokens (Q4_0/Q5_0 rows rewritten as Q8_0 once per
// 64-token block), at 4096x4480: Q4_0 at 16 tokens 1.55x, at 48 1.14x, at 64 1.03x. K types, each
// block unpacked once per 4 tokens, at 10240x8960: Q4_K at 32 tokens 1.46x, at 128 1.11x, at 256
// 0.91x).
int gemm_min_batch(int type);

}  // namespace edgenano::kern
