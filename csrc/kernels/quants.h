// ggml block formats: quantize f32 rows to blocks and back, over raw pointers (SPEC section 4).
// Type ids are ggml's (gguf.GGMLQuantizationType). Every format stores blocks back to back, so a
// C-contiguous (rows, cols) tensor with cols % block == 0 is just rows*cols/block blocks in a row.
#pragma once
#include <cstdint>
#include <cstring>

#include "kernels/common.h"

namespace edgenano {

enum QType : int {
  QT_F32 = 0,
  QT_F16 = 1,
  QT_Q4_0 = 2,
  QT_Q4_1 = 3,
  QT_Q5_0 = 6,
  QT_Q5_1 = 7,
  QT_Q8_0 = 8,
  QT_Q4_K = 12,
  QT_Q5_K = 13,
  QT_Q6_K = 14,
  QT_BF16 = 30,
};

constexpr int QK = 32;     // block of the *_0 formats
constexpr int QK_K = 256;  // super-block of the K formats

// Block layouts, byte for byte as ggml stores them. f16 fields are raw bits.
struct BlockQ8_0 {
  uint16_t d;
  int8_t qs[QK];
};
struct BlockQ4_0 {
  uint16_t d;
  uint8_t qs[QK / 2];  // element i in the low nibble of qs[i], element i+16 in the high nibble
};
struct BlockQ5_0 {
  uint16_t d;
  uint8_t qh[4];       // bit i (little-endian u32) = bit 4 of element i
  uint8_t qs[QK / 2];  // low 4 bits, as Q4_0
};
struct BlockQ4_1 {  // x = d*q + m
  uint16_t d, m;
  uint8_t qs[QK / 2];
};
struct BlockQ5_1 {
  uint16_t d, m;
  uint8_t qh[4];
  uint8_t qs[QK / 2];
};
struct BlockQ4_K {
  uint16_t d, dmin;
  uint8_t scales[12];    // 8 six-bit scales and 8 six-bit mins (unpack_scale_min in quants.cpp)
  uint8_t qs[QK_K / 2];  // 32-byte chunk c: sub-block 2c low nibbles, 2c+1 high nibbles
};
struct BlockQ5_K {
  uint16_t d, dmin;
  uint8_t scales[12];
  uint8_t qh[QK_K / 8];  // bit j of qh[i] = bit 4 of element i of sub-block j
  uint8_t qs[QK_K / 2];
};
struct BlockQ6_K {
  uint8_t ql[QK_K / 2];  // half h, byte k: element 128h+k low nibble, 128h+64+k high nibble
  uint8_t qh[QK_K / 4];  // half h, byte i: bits 2s..2s+1 = high bits of element 128h+32s+i
  int8_t scales[QK_K / 16];
  uint16_t d;
};
static_assert(sizeof(BlockQ8_0) == 34 && sizeof(BlockQ4_0) == 18 && sizeof(BlockQ5_0) == 22 &&
                  sizeof(BlockQ4_1) == 20 && sizeof(BlockQ5_1) == 24,
              "ggml *_0 / *_1 block sizes");
static_assert(sizeof(BlockQ4_K) == 144 && sizeof(BlockQ5_K) == 176 && sizeof(BlockQ6_K) == 210,
              "ggml K block sizes");

// Elements per block and bytes per block; 0 for a type this file does not handle.
int64_t qtype_block_size(int type);
int64_t qtype_type_size(int type);

// Quantize n_blocks consecutive blocks of x into y (and back). One thread, no allocation.
void quantize_blocks(int type, const float *x, uint8_t *y, int64_t n_blocks);
void dequantize_blocks(int type, const uint8_t *y, float *x, int64_t n_blocks);

// The same over n elements (a multiple of the block size) split across n_threads std::threads
// (0 = hardware concurrency; small inputs run on the calling thread).
void quantize(int type, const float *x, uint8_t *y, int64_t n, int n_threads);
void dequantize(int type, const uint8_t *y, float *x, int64_t n, int n_threads);

// Use the AVX2 kernels when the CPU has them (default); false forces the portable ones. Both
// write identical bytes. Returns the previous setting.
bool set_quant_simd(bool enabled);

// K-quant quantizers over nb super-blocks (kernels/quants_k_impl.h): a portable build
// (quants_k.cpp) and, on x86, an AVX2 build (quants_avx2.cpp) of the same code.
void quantize_q4_k(const float *x, BlockQ4_K *y, int64_t nb);
void quantize_q5_k(const float *x, BlockQ5_K *y, int64_t nb);
void quantize_q6_k(const float *x, BlockQ6_K *y, int64_t nb);
namespace avx2 {
void quantize_q4_k(const float *x, BlockQ4_K *y, int64_t nb);
void quantize_q5_k(const float *x, BlockQ5_K *y, int64_t nb);
void quantize_q6_k(const float *x, BlockQ6_K *y, int64_t nb);
}  // namespace avx2

// The number formats (f32_bits, f16 and bf16 conversions) are kern's, in kernels/common.h.
using kern::bf16_to_f32;
using kern::f16_to_f32;
using kern::f32_bits;
using kern::f32_from_bits;
using kern::f32_to_bf16;
using kern::f32_to_f16;

}  // namespace edgenano
