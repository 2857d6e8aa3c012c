// Shared kernel definitions: ggml type ids, block layouts (SPEC section 4), half/bfloat conversion,
// and the run-time CPU dispatch switch. Plain C++: no Python headers.
#pragma once
#include <cstddef>
#include <cstdint>
#include <cstring>

namespace edgenano::kern {

// ggml type ids as stored in GGUF tensor infos.
enum GType : int {
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
  T_Q8_K = 15,
  T_BF16 = 30,
};

constexpr int QK = 32;    // elements per block of the *_0 types
constexpr int QKK = 256;  // elements per super-block of the K types

#pragma pack(push, 1)
struct BlockQ8_0 {
  uint16_t d;
  int8_t qs[QK];
};  // 34 bytes
struct BlockQ4_0 {
  uint16_t d;
  uint8_t qs[QK / 2];
};  // 18 bytes
struct BlockQ5_0 {
  uint16_t d;
  uint8_t qh[4];
  uint8_t qs[QK / 2];
};  // 22 bytes
struct BlockQ4_1 {
  uint16_t d, m;
  uint8_t qs[QK / 2];
};  // 20 bytes: d*q + m
struct BlockQ5_1 {
  uint16_t d, m;
  uint8_t qh[4];
  uint8_t qs[QK / 2];
};  // 24 bytes
struct BlockQ4_K {
  uint16_t d, dmin;
  uint8_t scales[12];
  uint8_t qs[QKK / 2];
};                  // 144
struct BlockQ5_K {  // 176
  uint16_t d, dmin;
  uint8_t scales[12];
  uint8_t qh[QKK / 8];
  uint8_t qs[QKK / 2];
};
struct BlockQ6_K {
  uint8_t ql[QKK / 2];
  uint8_t qh[QKK / 4];
  int8_t scales[QKK / 16];
  uint16_t d;
};
#pragma pack(pop)
static_assert(sizeof(BlockQ8_0) == 34 && sizeof(BlockQ4_0) == 18 && sizeof(BlockQ5_0) == 22);
static_assert(sizeof(BlockQ4_1) == 20 && sizeof(BlockQ5_1) == 24);
static_assert(sizeof(BlockQ4_K) == 144 && sizeof(BlockQ5_K) == 176 && sizeof(BlockQ6_K) == 210);

// Activations quantized on the fly (our own layouts, never stored in files).
// A8: one per 32 values of a *_0 / *_1 weight row; s = d * sum(qs) serves the zero-point (*_0)
// and minimum (*_1) terms.
struct BlockA8 {
  float d;
  float s;
  int8_t qs[QK];
};
// A8K: one per 256 values of a K-type row; bsums are the sums of each 16 qs.
struct BlockA8K {
  float d;
  int16_t bsums[QKK / 16];
  int8_t qs[QKK];
};

// Elements per block and bytes per block; 0 block size marks an unsupported type.
int type_block_size(int type);
size_t type_block_bytes(int type);
size_t row_bytes(int type, int64_t n);  // 0 when n is not a multiple of the block size
bool type_supported(int type);
const char *type_name(int type);

// static: each translation unit (AVX2 ones included) keeps its own copy, so no AVX2-built
// instance of a shared inline function can end up called from scalar code.
static inline float fp16_to_f32(uint16_t h) {
  const uint32_t sign = uint32_t(h & 0x8000) << 16;
  uint32_t exp = (h >> 10) & 0x1f, man = h & 0x3ff, bits;
  if (exp == 0x1f) {
    bits = sign | 0x7f800000u | (man << 13);
  } else if (exp != 0) {
    bits = sign | ((exp + 112) << 23) | (man << 13);
  } else if (man == 0) {
    bits = sign;
  } else {  // subnormal: normalize
    int e = -1;
    do {
      man <<= 1;
      ++e;
    } while (!(man & 0x400));
    bits = sign | uint32_t(112 - e) << 23 | ((man & 0x3ff) << 13);
  }
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

// Round to nearest even; overflow goes to infinity, NaN stays NaN.
static inline uint16_t f32_to_fp16(float f) {
  uint32_t x;
  std::memcpy(&x, &f, 4);
  const uint16_t sign = uint16_t((x >> 16) & 0x8000);
  x &= 0x7fffffffu;
  if (x >= 0x7f800000u) return sign | 0x7c00 | (x > 0x7f800000u ? 0x200 : 0);
  if (x >= 0x477ff000u) return sign | 0x7c00;  // rounds past 65504
  if (x < 0x38800000u) {                       // subnormal or zero in half
    if (x < 0x33000000u) return sign;
    const uint32_t e = x >> 23, m = (x & 0x7fffff) | 0x800000, shift = 126 - e;
    uint32_t r = m >> shift;
    const uint32_t rem = m & ((1u << shift) - 1), half = 1u << (shift - 1);
    if (rem > half || (rem == half && (r & 1))) ++r;
    return sign | uint16_t(r);
  }
  uint32_t r = x + 0xfff + ((x >> 13) & 1) - 0x38000000u;
  return sign | uint16_t(r >> 13);
}

static inline float bf16_to_f32(uint16_t h) {
  const uint32_t bits = uint32_t(h) << 16;
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

// Run-time dispatch: AVX2/FMA/F16C kernels are used only when the CPU has them and the scalar
// path is not forced (set_force_scalar or EDGENANO_FORCE_SCALAR=1 in the environment).
bool cpu_has_avx2();
bool use_avx2();
void set_force_scalar(bool on);
bool force_scalar();

}  // namespace edgenano::kern
