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
};  // 144
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

// ---- scalar number formats, exact (match numpy's conversions bit for bit) ----
// static: every translation unit, the AVX2 one included, keeps its own copy, so no AVX2-built
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

// Run-time dispatch: AVX2/FMA/F16C kernels are used only when the CPU has them and the scalar
// path is not forced (set_force_scalar or EDGENANO_FORCE_SCALAR=1 in the environment).
bool cpu_has_avx2();
bool use_avx2();
void set_force_scalar(bool on);
bool force_scalar();

}  // namespace edgenano::kern
