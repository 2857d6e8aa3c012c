// Decode matmuls: activations quantized to int8 blocks on the device (the CPU's BlockA8 / BlockA8K
// layouts and rounding), then one warp per weight row and token, lanes over consecutive blocks
// (coalesced), integer dot products with __dp4a, one pass over the weights. Float weights (F32,
// F16, BF16) take f32 activations. Twin: kern::matmul's dot path (kernels/cpu/matmul_scalar.cpp).
#include <stdexcept>

#include "kernels/cuda/common.cuh"
#include "kernels/cuda/ops.h"

namespace edgenano::cuk {
inline namespace SIMT_IMPL {

namespace {

constexpr int kRowsPerBlock = 4;  // warps per block, a row each

// A warp per 32-value block: symmetric int8, max |q| = 127, round half to even (quant_a8).
__global__ void quant_a8_kernel(const float *x, int64_t ldx, int64_t n, BlockA8 *out) {
  const int64_t nb = n / QK, b = int64_t(blockIdx.x) * 4 + (threadIdx.x >> 5);
  const int t = int(blockIdx.y), lane = int(threadIdx.x & 31);
  if (b >= nb) return;  // whole warps
  const float v = x[t * ldx + b * QK + lane];
  const float amax = warp_max(fabsf(v));
  const float d = amax / 127.f, id = amax > 0.f ? 127.f / amax : 0.f;
  const int q = int(rintf(v * id));
  const int sum = warp_sum_int(q);
  BlockA8 &o = out[t * nb + b];
  o.qs[lane] = int8_t(q);
  if (lane == 0) o.d = d, o.s = d * float(sum);
}

// A warp per 256-value super-block, 8 values a lane; bsums per 16 (a lane pair).
__global__ void quant_a8k_kernel(const float *x, int64_t ldx, int64_t n, BlockA8K *out) {
  const int64_t nb = n / QK_K, b = int64_t(blockIdx.x) * 4 + (threadIdx.x >> 5);
  const int t = int(blockIdx.y), lane = int(threadIdx.x & 31);
  if (b >= nb) return;
  const float *src = x + t * ldx + b * QK_K + lane * 8;
  float v[8], m = 0.f;
  for (int i = 0; i < 8; ++i) v[i] = src[i], m = fmaxf(m, fabsf(v[i]));
  const float amax = warp_max(m);
  const float id = amax > 0.f ? 127.f / amax : 0.f;
  BlockA8K &o = out[t * nb + b];
  int sum = 0;
  for (int i = 0; i < 8; ++i) {
    const int q = int(rintf(v[i] * id));
    o.qs[lane * 8 + i] = int8_t(q);
    sum += q;
  }
  sum += __shfl_xor_sync(kFull, sum, 1);
  if ((lane & 1) == 0) o.bsums[lane / 2] = int16_t(sum);
  if (lane == 0) o.d = amax / 127.f;
}

// The integer dot of one 32-value block of a *_0 / *_1 type with an A8 block: sum of
// (code - zero) * a, codes unsigned and the zero point taken off with the activations' sum.
template <int TYPE>
SIMT_DEVICE float dot_block32(const uint8_t *b, const BlockA8 &a) {
  const int *aq = reinterpret_cast<const int *>(a.qs);
  int s = 0;
  if constexpr (TYPE == T_Q8_0) {
    for (int i = 0; i < 8; ++i) s = __dp4a(int(load_u32_a2(b + 2 + 4 * i)), aq[i], s);
    return load_f16(b) * a.d * float(s);
  } else {
    constexpr bool kMin = TYPE == T_Q4_1 || TYPE == T_Q5_1;
    constexpr bool kFive = TYPE == T_Q5_0 || TYPE == T_Q5_1;
    constexpr int kZero = kMin ? 0 : kFive ? 16 : 8;
    // the *_1 blocks (20, 24 bytes) keep their 32-bit fields 4-aligned, the *_0 ones only 2
    auto load32 = [](const uint8_t *p) { return kMin ? load_u32_a4(p) : load_u32_a2(p); };
    const uint8_t *qs = b + (kMin ? 4 : 2) + (kFive ? 4 : 0);
    const uint32_t qh = kFive ? load32(b + (kMin ? 4 : 2)) : 0u;
    int asum = 0;
    for (int i = 0; i < 4; ++i) {
      const uint32_t w = load32(qs + 4 * i);
      uint32_t lo = w & 0x0f0f0f0fu, hi = (w >> 4) & 0x0f0f0f0fu;
      if constexpr (kFive) lo |= spread_bits4(qh, 4 * i), hi |= spread_bits4(qh, 16 + 4 * i);
      s = __dp4a(int(lo), aq[i], s);
      s = __dp4a(int(hi), aq[i + 4], s);
      if constexpr (kZero != 0) {
        asum = __dp4a(0x01010101, aq[i], asum);
        asum = __dp4a(0x01010101, aq[i + 4], asum);
      }
    }
    s -= kZero * asum;
    const float d = load_f16(b);
    float r = d * a.d * float(s);
    if constexpr (kMin) r += load_f16(b + 2) * a.s;
    return r;
  }
}

template <int TYPE>
__global__ void matvec_a8_kernel(const uint8_t *w, size_t row_bytes, int64_t n_out, int64_t n,
                                 const BlockA8 *act, float *y, int64_t ldy, bool acc) {
  const int64_t r = int64_t(blockIdx.x) * kRowsPerBlock + (threadIdx.x >> 5);
  const int t = int(blockIdx.y), lane = int(threadIdx.x & 31);
  if (r >= n_out) return;
  const int64_t nb = n / QK;
  constexpr size_t kBytes = TYPE == T_Q8_0   ? sizeof(BlockQ8_0)
                            : TYPE == T_Q4_0 ? sizeof(BlockQ4_0)
                            : TYPE == T_Q5_0 ? sizeof(BlockQ5_0)
                            : TYPE == T_Q4_1 ? sizeof(BlockQ4_1)
                                             : sizeof(BlockQ5_1);
  const uint8_t *row = w + r * row_bytes;
  const BlockA8 *a = act + t * nb;
  float sum = 0.f;
  for (int64_t b = lane; b < nb; b += 32) sum += dot_block32<TYPE>(row + b * kBytes, a[b]);
  sum = warp_sum(sum);
  if (lane == 0) {
    float *o = y + t * ldy + r;
    *o = acc ? *o + sum : sum;
  }
}

// K types: a lane per (super-block, 32-value sub-block j), 8 lanes a super-block; the integer
// sums of a super-block are reduced over its 8 lanes (exact) before its one float term.
template <int TYPE>
__global__ void matvec_k_kernel(const uint8_t *w, size_t row_bytes, int64_t n_out, int64_t n,
                                const BlockA8K *act, float *y, int64_t ldy, bool acc) {
  const int64_t r = int64_t(blockIdx.x) * kRowsPerBlock + (threadIdx.x >> 5);
  const int t = int(blockIdx.y), lane = int(threadIdx.x & 31), j = lane & 7;
  if (r >= n_out) return;
  const int64_t nb = n / QK_K;
  constexpr size_t kBytes = TYPE == T_Q4_K   ? sizeof(BlockQ4_K)
                            : TYPE == T_Q5_K ? sizeof(BlockQ5_K)
                                             : sizeof(BlockQ6_K);
  const uint8_t *row = w + r * row_bytes;
  const BlockA8K *act_t = act + t * nb;
  float sum = 0.f;
  for (int64_t i0 = 0; i0 < nb; i0 += 4) {  // uniform trip count: every lane shuffles
    const int64_t i = i0 + (lane >> 3);
    int sq = 0, sm = 0;
    const bool valid = i < nb;
    if (valid) {
      const uint8_t *b = row + i * kBytes;
      const BlockA8K &a = act_t[i];
      const int *aq = reinterpret_cast<const int *>(a.qs + 32 * j);
      if constexpr (TYPE == T_Q6_K) {
        const int h = j / 4, q = j % 4;
        const uint8_t *ql = b + 64 * h + 32 * (q & 1), *qh = b + 128 + 32 * h;
        int s0 = 0, s1 = 0;  // the two 16-value halves (a scale each)
        for (int k = 0; k < 8; ++k) {
          uint32_t lo = load_u32_a2(ql + 4 * k);
          lo = (q < 2 ? lo : lo >> 4) & 0x0f0f0f0fu;
          const uint32_t hi = ((load_u32_a2(qh + 4 * k) >> (2 * q)) & 0x03030303u) << 4;
          if (k < 4)
            s0 = __dp4a(int(lo | hi), aq[k], s0);
          else
            s1 = __dp4a(int(lo | hi), aq[k], s1);
        }
        s0 -= 32 * a.bsums[2 * j], s1 -= 32 * a.bsums[2 * j + 1];
        sq = int(int8_t(b[192 + 2 * j])) * s0 + int(int8_t(b[192 + 2 * j + 1])) * s1;
      } else {
        constexpr bool kHigh = TYPE == T_Q5_K;
        const uint8_t *qs = b + (kHigh ? 48 : 16) + 32 * (j / 2), *qh = b + 16;
        int s = 0;
        for (int k = 0; k < 8; ++k) {
          uint32_t c = (load_u32_a4(qs + 4 * k) >> (4 * (j & 1))) & 0x0f0f0f0fu;
          if constexpr (kHigh) c |= ((load_u32_a4(qh + 4 * k) >> j) & 0x01010101u) << 4;
          s = __dp4a(int(c), aq[k], s);
        }
        int sc, m;
        k_scale_min(b + 4, j, sc, m);
        sq = sc * s;
        sm = m * (a.bsums[2 * j] + a.bsums[2 * j + 1]);
      }
    }
    for (int o = 1; o < 8; o <<= 1) {
      sq += __shfl_xor_sync(kFull, sq, o);
      sm += __shfl_xor_sync(kFull, sm, o);
    }
    if (valid && j == 0) {
      const uint8_t *b = row + i * kBytes;
      const float ad = act_t[i].d;
      if constexpr (TYPE == T_Q6_K)
        sum += ad * load_f16(b + 208) * float(sq);
      else
        sum += ad * (load_f16(b) * float(sq) - load_f16(b + 2) * float(sm));
    }
  }
  sum = warp_sum(sum);
  if (lane == 0) {
    float *o = y + t * ldy + r;
    *o = acc ? *o + sum : sum;
  }
}

template <int TYPE>
__global__ void matvec_f_kernel(const uint8_t *w, size_t row_bytes, int64_t n_out, int64_t n,
                                const float *x, int64_t ldx, float *y, int64_t ldy, bool acc) {
  const int64_t r = int64_t(blockIdx.x) * kRowsPerBlock + (threadIdx.x >> 5);
  const int t = int(blockIdx.y), lane = int(threadIdx.x & 31);
  if (r >= n_out) return;
  const uint8_t *row = w + r * row_bytes;
  const float *xt = x + t * ldx;
  float sum = 0.f;
  for (int64_t k = lane; k < n; k += 32) {
    float v;
    if constexpr (TYPE == T_F32)
      v = reinterpret_cast<const float *>(row)[k];
    else if constexpr (TYPE == T_F16)
      v = simt::f16_to_f32(reinterpret_cast<const uint16_t *>(row)[k]);
    else
      v = simt::bf16_to_f32(reinterpret_cast<const uint16_t *>(row)[k]);
    sum += v * xt[k];
  }
  sum = warp_sum(sum);
  if (lane == 0) {
    float *o = y + t * ldy + r;
    *o = acc ? *o + sum : sum;
  }
}

bool is_k(int type) { return type == T_Q4_K || type == T_Q5_K || type == T_Q6_K; }
bool is_float(int type) { return type == T_F32 || type == T_F16 || type == T_BF16; }

}  // namespace

size_t matmul_scratch_bytes(int type, int64_t n_in, int T) {
  if (is_float(type)) return 0;
  return is_k(type) ? size_t(n_in / QK_K) * sizeof(BlockA8K) * size_t(T)
                    : size_t(n_in / QK) * sizeof(BlockA8) * size_t(T);
}

void matvec(const kern::Weight &w, const float *x, int64_t ldx, float *y, int64_t ldy, int T,
            bool acc, void *scratch, Stream s) {
  if (T <= 0 || w.n_out <= 0) return;
  const dim3 grid(unsigned((w.n_out + kRowsPerBlock - 1) / kRowsPerBlock), unsigned(T));
  const dim3 block(32 * kRowsPerBlock);
  const bool ok = dispatch_type(w.type, [&](auto tag) {
    constexpr int TYPE = decltype(tag)::value;
    if constexpr (TYPE == T_F32 || TYPE == T_F16 || TYPE == T_BF16) {
      simt::launch<matvec_f_kernel<TYPE>>(grid, block, s, w.data, w.row_bytes, w.n_out, w.n_in, x,
                                          ldx, y, ldy, acc);
    } else if constexpr (TYPE == T_Q4_K || TYPE == T_Q5_K || TYPE == T_Q6_K) {
      auto *a = static_cast<BlockA8K *>(scratch);
      const int64_t nb = w.n_in / QK_K;
      simt::launch<quant_a8k_kernel>(dim3(unsigned((nb + 3) / 4), unsigned(T)), dim3(128), s, x,
                                     ldx, w.n_in, a);
      simt::launch<matvec_k_kernel<TYPE>>(grid, block, s, w.data, w.row_bytes, w.n_out, w.n_in,
                                          static_cast<const BlockA8K *>(a), y, ldy, acc);
    } else {
      auto *a = static_cast<BlockA8 *>(scratch);
      const int64_t nb = w.n_in / QK;
      simt::launch<quant_a8_kernel>(dim3(unsigned((nb + 3) / 4), unsigned(T)), dim3(128), s, x, ldx,
                                    w.n_in, a);
      simt::launch<matvec_a8_kernel<TYPE>>(grid, block, s, w.data, w.row_bytes, w.n_out, w.n_in,
                                           static_cast<const BlockA8 *>(a), y, ldy, acc);
    }
  });
  if (!ok) throw std::invalid_argument("cuda matvec: unsupported weight type");
}

}  // namespace SIMT_IMPL
}  // namespace edgenano::cuk
