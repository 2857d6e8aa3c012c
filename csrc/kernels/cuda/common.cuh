// Device helpers shared by the CUDA kernels (built by nvcc, and by the host compiler over the SIMT
// emulator): warp and block reductions, unaligned loads, and the ggml block decoders (32 values at
// a time, the same arithmetic as ggml/quants.cpp's reference dequantizers).
#pragma once
#include <cstdint>
#include <string>
#include <type_traits>

#include "kernels/cpu/common.h"
#include "simt/simt.h"

namespace edgenano::cuk {
inline namespace SIMT_IMPL {

using namespace edgenano::ggml;
using kern::BlockA8;
using kern::BlockA8K;

constexpr unsigned kFull = 0xffffffffu;

SIMT_DEVICE float warp_sum(float v) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(kFull, v, o);
  return v;
}
SIMT_DEVICE int warp_sum_int(int v) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(kFull, v, o);
  return v;
}
SIMT_DEVICE float warp_max(float v) {
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(kFull, v, o));
  return v;
}

// Sum over the block (blockDim.x a multiple of 32, every thread calls): each warp's sum to shared
// memory, then every thread adds them in warp order.
SIMT_DEVICE float block_sum(float v) {
  SIMT_SHARED(float, part, 32);
  v = warp_sum(v);
  const int w = int(threadIdx.x) >> 5, nw = int(blockDim.x) >> 5;
  if ((threadIdx.x & 31) == 0) part[w] = v;
  __syncthreads();
  float t = 0.f;
  for (int i = 0; i < nw; ++i) t += part[i];
  __syncthreads();  // part is reused by the next call
  return t;
}

// Loads from ggml blocks. Block layouts only promise 2-byte alignment of their 16-bit fields
// (blocks of 18, 22, 34 or 210 bytes) and 4-byte alignment of some 32-bit ones (blocks of 20,
// 24, 144 or 176 bytes, rows 4-aligned): each load says which it relies on, and the emulator
// checks it (a GPU would fault or, worse, read the wrong bytes).
template <int A>
SIMT_DEVICE void check_aligned(const void *p) {
#if defined(SIMT_HOST)
  if (reinterpret_cast<uintptr_t>(p) % A)
    simt::detail::fail("misaligned " + std::to_string(A) + "-byte load");
#else
  (void)p;
#endif
}
SIMT_DEVICE uint32_t load_u32(const uint8_t *p) {  // any alignment
  return uint32_t(p[0]) | uint32_t(p[1]) << 8 | uint32_t(p[2]) << 16 | uint32_t(p[3]) << 24;
}
SIMT_DEVICE uint16_t load_u16(const uint8_t *p) {  // 2-aligned
  check_aligned<2>(p);
  return *reinterpret_cast<const uint16_t *>(p);
}
SIMT_DEVICE uint32_t load_u32_a2(const uint8_t *p) {  // 2-aligned: two 16-bit loads
  return uint32_t(load_u16(p)) | uint32_t(load_u16(p + 2)) << 16;
}
SIMT_DEVICE uint32_t load_u32_a4(const uint8_t *p) {  // 4-aligned
  check_aligned<4>(p);
  return *reinterpret_cast<const uint32_t *>(p);
}
SIMT_DEVICE float load_f16(const uint8_t *p) { return simt::f16_to_f32(load_u16(p)); }

// Bit j of qh (0..3 relative to a base) spread to bit 4 of byte j: the fifth bits of 4 codes.
SIMT_DEVICE uint32_t spread_bits4(uint32_t qh, int j) {
  return ((qh >> j) & 1u) << 4 | ((qh >> (j + 1)) & 1u) << 12 | ((qh >> (j + 2)) & 1u) << 20 |
         ((qh >> (j + 3)) & 1u) << 28;
}

SIMT_DEVICE void k_scale_min(const uint8_t *s, int j, int &sc, int &m) {
  if (j < 4) {
    sc = s[j] & 63;
    m = s[j + 4] & 63;
  } else {
    sc = (s[j + 4] & 0xf) | ((s[j - 4] >> 6) << 4);
    m = (s[j + 4] >> 4) | ((s[j] >> 6) << 4);
  }
}

// Values [k0, k0 + 32) of a row of TYPE with n values (k0 a multiple of 32; past n: zeros, which
// only the float types, of block size 1, can have).
template <int TYPE>
SIMT_DEVICE void dequant32(const uint8_t *row, int64_t k0, int64_t n, float out[32]) {
  if constexpr (TYPE == T_F32 || TYPE == T_F16 || TYPE == T_BF16) {
    for (int i = 0; i < 32; ++i) {
      const int64_t k = k0 + i;
      float v = 0.f;
      if (k < n) {
        if constexpr (TYPE == T_F32) {
          v = reinterpret_cast<const float *>(row)[k];
        } else if constexpr (TYPE == T_F16) {
          v = simt::f16_to_f32(reinterpret_cast<const uint16_t *>(row)[k]);
        } else {
          v = simt::bf16_to_f32(reinterpret_cast<const uint16_t *>(row)[k]);
        }
      }
      out[i] = v;
    }
  } else if constexpr (TYPE == T_Q8_0) {
    const uint8_t *b = row + (k0 / QK) * sizeof(BlockQ8_0);
    const float d = load_f16(b);
    for (int i = 0; i < 32; ++i) out[i] = d * float(int8_t(b[2 + i]));
  } else if constexpr (TYPE == T_Q4_0 || TYPE == T_Q4_1) {
    constexpr bool kMin = TYPE == T_Q4_1;
    const uint8_t *b = row + (k0 / QK) * (kMin ? sizeof(BlockQ4_1) : sizeof(BlockQ4_0));
    const float d = load_f16(b), m = kMin ? load_f16(b + 2) : 0.f;
    const uint8_t *qs = b + (kMin ? 4 : 2);
    for (int i = 0; i < 16; ++i) {
      if constexpr (kMin) {
        out[i] = d * float(qs[i] & 0xf) + m;
        out[i + 16] = d * float(qs[i] >> 4) + m;
      } else {
        out[i] = d * float((qs[i] & 0xf) - 8);
        out[i + 16] = d * float((qs[i] >> 4) - 8);
      }
    }
  } else if constexpr (TYPE == T_Q5_0 || TYPE == T_Q5_1) {
    constexpr bool kMin = TYPE == T_Q5_1;
    const uint8_t *b = row + (k0 / QK) * (kMin ? sizeof(BlockQ5_1) : sizeof(BlockQ5_0));
    const float d = load_f16(b), m = kMin ? load_f16(b + 2) : 0.f;
    const uint32_t qh = kMin ? load_u32_a4(b + 4) : load_u32_a2(b + 2);
    const uint8_t *qs = b + (kMin ? 8 : 6);
    for (int i = 0; i < 32; ++i) {
      const int lo = i < 16 ? (qs[i] & 0xf) : (qs[i - 16] >> 4);
      const int q = lo | int((qh >> i) & 1u) << 4;
      out[i] = kMin ? d * float(q) + m : d * float(q - 16);
    }
  } else if constexpr (TYPE == T_Q4_K || TYPE == T_Q5_K) {
    constexpr bool kHigh = TYPE == T_Q5_K;
    const uint8_t *b = row + (k0 / QK_K) * (kHigh ? sizeof(BlockQ5_K) : sizeof(BlockQ4_K));
    const int j = int(k0 % QK_K) / 32;
    const float d = load_f16(b), dmin = load_f16(b + 2);
    int sc, m;
    k_scale_min(b + 4, j, sc, m);
    const float dl = d * float(sc), ml = dmin * float(m);
    const uint8_t *qh = b + 16;
    const uint8_t *qs = b + (kHigh ? 48 : 16) + 32 * (j / 2);
    const int shift = 4 * (j & 1);
    for (int i = 0; i < 32; ++i) {
      int q = (qs[i] >> shift) & 0xf;
      if constexpr (kHigh) q |= ((qh[i] >> j) & 1) << 4;
      out[i] = dl * float(q) - ml;
    }
  } else if constexpr (TYPE == T_Q6_K) {
    const uint8_t *b = row + (k0 / QK_K) * sizeof(BlockQ6_K);
    const float d = load_f16(b + 208);
    const int e0 = int(k0 % QK_K);
    for (int i = 0; i < 32; ++i) {
      const int e = e0 + i, h = e / 128, r = e % 128;
      const int lo = (b[64 * h + r % 64] >> (4 * (r / 64))) & 0xf;
      const int hi = (b[128 + 32 * h + r % 32] >> (2 * (r / 32))) & 3;
      const float dl = d * float(int8_t(b[192 + e / 16]));
      out[i] = dl * float((lo | (hi << 4)) - 32);
    }
  }
}

// Calls f(std::integral_constant<int, TYPE>{}) for a run-time ggml type; false when unsupported.
template <class F>
bool dispatch_type(int type, F &&f) {
  switch (type) {
    case T_F32: f(std::integral_constant<int, T_F32>{}); return true;
    case T_F16: f(std::integral_constant<int, T_F16>{}); return true;
    case T_BF16: f(std::integral_constant<int, T_BF16>{}); return true;
    case T_Q8_0: f(std::integral_constant<int, T_Q8_0>{}); return true;
    case T_Q4_0: f(std::integral_constant<int, T_Q4_0>{}); return true;
    case T_Q5_0: f(std::integral_constant<int, T_Q5_0>{}); return true;
    case T_Q4_1: f(std::integral_constant<int, T_Q4_1>{}); return true;
    case T_Q5_1: f(std::integral_constant<int, T_Q5_1>{}); return true;
    case T_Q4_K: f(std::integral_constant<int, T_Q4_K>{}); return true;
    case T_Q5_K: f(std::integral_constant<int, T_Q5_K>{}); return true;
    case T_Q6_K: f(std::integral_constant<int, T_Q6_K>{}); return true;
    default: return false;
  }
}

}  // namespace SIMT_IMPL
}  // namespace edgenano::cuk
