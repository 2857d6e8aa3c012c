// The ggml formats, each defined once: type ids (as GGUF stores them), block layouts (SPEC
// section 4), the f16/bf16 number formats, and the traits table (block size, bytes, reference
// to_float / from_float) that the loader's checks, the converter's quantizer and the kernels read.
#pragma once
#include <cstddef>
#include <cstdint>
#include <cstring>

namespace edgenano::ggml {

// ggml type ids (gguf.GGMLQuantizationType).
enum Type : int {
  T_F32 = 0,
  T_F16 = 1,
  T_Q4_0 = 2,
  T_Q4_1 = 3,
  T_Q5_0 = 6,
  T_Q5_1 = 7,
  T_Q8_0 = 8,
  T_Q4_K = 12,
  T_Q5_K = 13,
  T_Q6_K = 14,
  T_BF16 = 30,
};

constexpr int QK = 32;     // elements per block of the *_0 / *_1 types
constexpr int QK_K = 256;  // elements per super-block of the K types

// Block layouts, byte for byte as ggml stores them; f16 fields are raw bits.
#pragma pack(push, 1)
struct BlockQ8_0 {
  uint16_t d;
  int8_t qs[QK];  // x = d*q
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
  uint8_t scales[12];    // 8 six-bit scales and 8 six-bit mins (unpack in ggml/quants.cpp)
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
#pragma pack(pop)
static_assert(sizeof(BlockQ8_0) == 34 && sizeof(BlockQ4_0) == 18 && sizeof(BlockQ5_0) == 22 &&
                  sizeof(BlockQ4_1) == 20 && sizeof(BlockQ5_1) == 24,
              "ggml *_0 / *_1 block sizes");
static_assert(sizeof(BlockQ4_K) == 144 && sizeof(BlockQ5_K) == 176 && sizeof(BlockQ6_K) == 210,
              "ggml K block sizes");

// n values (a multiple of the block size) of a row, to f32 and from f32.
using ToFloat = void (*)(const void *src, float *dst, int64_t n);
using FromFloat = void (*)(const float *src, void *dst, int64_t n);

struct TypeTraits {
  Type type;
  const char *name;
  int block_size;    // elements per block
  size_t type_size;  // bytes per block
  ToFloat to_float;  // exact: gguf.quants' dequantizers bit for bit
  // The reference quantizer: bit-exact with gguf.quants where it has the type (*_0, *_1, F16,
  // BF16); the K types use edgenano's search (ggml/quants_k_impl.h).
  FromFloat from_float_ref;
};

// The table, in a fixed order (the order _C.quant_types() lists).
const TypeTraits *all_types(size_t *count);
const TypeTraits *traits(int type);  // nullptr when edgenano does not handle the type

int type_block_size(int type);          // 0 when unsupported
size_t type_block_bytes(int type);      // 0 when unsupported
size_t row_bytes(int type, int64_t n);  // 0 when unsupported or n is not whole blocks
bool type_supported(int type);
const char *type_name(int type);  // "unsupported" when unsupported

// The reference row functions the table points to (n values, a multiple of the block size).
void dequantize_row_f32(const void *src, float *dst, int64_t n);
void dequantize_row_f16(const void *src, float *dst, int64_t n);
void dequantize_row_bf16(const void *src, float *dst, int64_t n);
void dequantize_row_q8_0(const void *src, float *dst, int64_t n);
void dequantize_row_q4_0(const void *src, float *dst, int64_t n);
void dequantize_row_q5_0(const void *src, float *dst, int64_t n);
void dequantize_row_q4_1(const void *src, float *dst, int64_t n);
void dequantize_row_q5_1(const void *src, float *dst, int64_t n);
void dequantize_row_q4_k(const void *src, float *dst, int64_t n);
void dequantize_row_q5_k(const void *src, float *dst, int64_t n);
void dequantize_row_q6_k(const void *src, float *dst, int64_t n);

// K-type quantizers over nb super-blocks (ggml/quants_k_impl.h, portable build).
void quantize_q4_k(const float *x, BlockQ4_K *y, int64_t nb);
void quantize_q5_k(const float *x, BlockQ5_K *y, int64_t nb);
void quantize_q6_k(const float *x, BlockQ6_K *y, int64_t nb);

// ---- scalar number formats, exact (match numpy's conversions bit for bit) ----
// static: every translation unit, the AVX2 ones included, keeps its own copy, so no AVX2-built
// instance can be linked into portable code.

static inline uint32_t f32_bits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
}
static inline float f32_from_bits(uint32_t u) {
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

// Round to nearest even, overflow to inf, gradual underflow. NaN keeps its sign and top mantissa
// bits (never collapsing to inf), as numpy's astype(float16) does.
static inline uint16_t f32_to_f16(float f) {
  const uint32_t x = f32_bits(f);
  const uint16_t sign = static_cast<uint16_t>((x >> 16) & 0x8000u);
  const uint32_t a = x & 0x7fffffffu;
  if (a >= 0x7f800000u) {
    if (a == 0x7f800000u) return sign | 0x7c00u;
    uint16_t h = static_cast<uint16_t>(0x7c00u | ((a & 0x7fffffu) >> 13));
    return sign | (h == 0x7c00u ? 0x7c01u : h);
  }
  if (a >= 0x47800000u) return sign | 0x7c00u;  // >= 65536: inf
  if (a >= 0x38800000u) {                       // normal half (>= 2^-14)
    uint32_t h = (a - 0x38000000u) >> 13;       // rebias 127 -> 15, keep 10 mantissa bits
    const uint32_t rem = a & 0x1fffu;
    if (rem > 0x1000u || (rem == 0x1000u && (h & 1u))) h++;  // carry may give inf: correct
    return static_cast<uint16_t>(sign | h);
  }
  if (a < 0x33000000u) return sign;  // below 2^-25 (a tie at 2^-25 rounds to even 0)
  const int shift = 126 - static_cast<int>(a >> 23);  // 14..24: units of 2^-24
  const uint32_t m = (a & 0x7fffffu) | 0x800000u;
  uint32_t h = m >> shift;
  const uint32_t rem = m & ((1u << shift) - 1u), half = 1u << (shift - 1);
  if (rem > half || (rem == half && (h & 1u))) h++;
  return static_cast<uint16_t>(sign | h);
}

static inline float f16_to_f32(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  const uint32_t e = (h >> 10) & 0x1fu, m = h & 0x3ffu;
  if (e == 0x1fu) return f32_from_bits(sign | 0x7f800000u | (m << 13));
  if (e != 0) return f32_from_bits(sign | ((e + 112u) << 23) | (m << 13));
  const float v = static_cast<float>(m) * 5.9604644775390625e-8f;  // m * 2^-24, exact
  return sign ? -v : v;
}

// ggml's fp32 -> bf16: NaN becomes a quiet NaN with the same top bits; otherwise nearest even.
static inline uint16_t f32_to_bf16(float f) {
  const uint32_t x = f32_bits(f);
  if ((x & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((x >> 16) | 64u);
  return static_cast<uint16_t>((x + 0x7fffu + ((x >> 16) & 1u)) >> 16);
}
static inline float bf16_to_f32(uint16_t h) {
  return f32_from_bits(static_cast<uint32_t>(h) << 16);
}

}  // namespace edgenano::ggml
