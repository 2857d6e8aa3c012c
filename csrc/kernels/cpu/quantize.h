// Whole tensors to and from the ggml formats on the thread pool: the converter's quantizer and
// the dequantizer behind _C.quantize / _C.dequantize. The K types take their AVX2 build
// (identical bytes) when use_avx2(); everything else is the format layer's reference.
#pragma once
#include <cstdint>

#include "kernels/cpu/common.h"
#include "kernels/cpu/threadpool.h"

namespace edgenano::kern {

// n elements (a multiple of the type's block size) of a supported type; blocks split over pool.
void quantize(int type, const float *x, uint8_t *y, int64_t n, ThreadPool &pool);
void dequantize(int type, const uint8_t *y, float *x, int64_t n, ThreadPool &pool);

namespace quants_avx2 {  // kernels/quants_k_avx2.cpp: ggml/quants_k_impl.h built for AVX2
void quantize_q4_k(const float *x, BlockQ4_K *y, int64_t nb);
void quantize_q5_k(const float *x, BlockQ5_K *y, int64_t nb);
void quantize_q6_k(const float *x, BlockQ6_K *y, int64_t nb);
}  // namespace quants_avx2

}  // namespace edgenano::kern
