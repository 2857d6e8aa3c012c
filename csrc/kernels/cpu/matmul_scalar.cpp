// Scalar kernels: the plain twin of every AVX2 matmul kernel (activation quantizers, dot
// products, the f32 panel product; the dequantizers are the format layer's reference ones).
// Written for clarity; the layouts follow ggml.
#include <algorithm>
#include <cmath>
#include <type_traits>

#include "kernels/cpu/matmul_impl.h"

namespace edgenano::kern {

namespace {

uint32_t load_u32(const uint8_t *p) {
  uint32_t v;
  std::memcpy(&v, p, 4);
  return v;
}

// The 32-value types Q4_0, Q5_0, Q4_1, Q5_1: unsigned 4- or 5-bit codes u; x = d*(u - zero)
// for the *_0 types (zero 8 or 16), x = d*u + m for the *_1 types (m stored per block).
template <class B>
constexpr bool kFive = std::is_same_v<B, BlockQ5_0> || std::is_same_v<B, BlockQ5_1>;
template <class B>
constexpr bool kMin = std::is_same_v<B, BlockQ4_1> || std::is_same_v<B, BlockQ5_1>;
template <class B>
constexpr int kZero = kMin<B>    ? 0
                      : kFive<B> ? 16
                                 : 8;

// The 32 codes of a block minus its zero point, in element order.
template <class B>
void signed_codes(const B &b, int q[QK]) {
  uint32_t qh = 0;  // bit j: high bit of element j
  if constexpr (kFive<B>) qh = load_u32(b.qh);
  for (int j = 0; j < QK / 2; ++j) {
    q[j] = ((b.qs[j] & 0xf) | int((qh >> j) & 1) << 4) - kZero<B>;
    q[j + QK / 2] = ((b.qs[j] >> 4) | int((qh >> (j + 16)) & 1) << 4) - kZero<B>;
  }
}

// The stored minimum of a *_1 block (0 for the *_0 types, which have none).
template <class B>
float block_min(const B &b) {
  if constexpr (kMin<B>)
    return f16_to_f32(b.m);
  else
    return 0.f;
}

// The 6-bit scale and min of sub-block j (0..7) of a Q4_K/Q5_K super-block.
void k_scale_min(const uint8_t *s, int j, int &sc, int &m) {
  if (j < 4) {
    sc = s[j] & 63;
    m = s[j + 4] & 63;
  } else {
    sc = (s[j + 4] & 0xf) | ((s[j - 4] >> 6) << 4);
    m = (s[j + 4] >> 4) | ((s[j] >> 6) << 4);
  }
}

// Q6_K element of 128-half h, position l (0..31) and quarter q (0..3): low 4 bits from
// ql[64h + l + 32*(q&1)] (high nibble when q >= 2), 2 high bits from qh[32h + l] >> 2q.
int q6_value(const BlockQ6_K &b, int h, int q, int l) {
  const uint8_t lbyte = b.ql[64 * h + l + 32 * (q & 1)];
  const int low = q < 2 ? (lbyte & 0xf) : (lbyte >> 4);
  const int high = (b.qh[32 * h + l] >> (2 * q)) & 3;
  return (low | high << 4) - 32;
}

// ---- activation quantizers (symmetric int8, max |q| = 127, round half to even) ----

void quant_a8(const float *x, BlockA8 *y, int64_t n) {
  for (int64_t i = 0; i < n / QK; ++i, x += QK) {
    float amax = 0.f;
    for (int j = 0; j < QK; ++j) amax = std::max(amax, std::fabs(x[j]));
    const float d = amax / 127.f, id = amax > 0.f ? 127.f / amax : 0.f;
    int sum = 0;
    for (int j = 0; j < QK; ++j) {
      const int q = int(std::nearbyint(x[j] * id));
      y[i].qs[j] = int8_t(q);
      sum += q;
    }
    y[i].d = d;
    y[i].s = d * float(sum);
  }
}

void quant_a8k(const float *x, BlockA8K *y, int64_t n) {
  for (int64_t i = 0; i < n / QK_K; ++i, x += QK_K) {
    float amax = 0.f;
    for (int j = 0; j < QK_K; ++j) amax = std::max(amax, std::fabs(x[j]));
    const float id = amax > 0.f ? 127.f / amax : 0.f;
    y[i].d = amax / 127.f;
    for (int g = 0; g < QK_K / 16; ++g) {
      int sum = 0;
      for (int j = 16 * g; j < 16 * g + 16; ++j) {
        const int q = int(std::nearbyint(x[j] * id));
        y[i].qs[j] = int8_t(q);
        sum += q;
      }
      y[i].bsums[g] = int16_t(sum);
    }
  }
}

// ---- dot products, one weight row against one activation row ----

template <DequantFn DQ>
float dot_float_row(const uint8_t *w, const float *a, int64_t n) {
  float buf[kKC];
  float acc[8] = {};  // eight partial sums, as the vector twin keeps
  const size_t bytes_per = DQ == dequantize_row_f32 ? 4 : 2;
  for (int64_t k = 0; k < n; k += kKC) {
    const int64_t m = std::min<int64_t>(kKC, n - k);
    DQ(w + k * bytes_per, buf, m);
    for (int64_t j = 0; j < m; ++j) acc[j % 8] += buf[j] * a[k + j];
  }
  return ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
}

float dot_q8_0(const uint8_t *w, const BlockA8 *a, int64_t n) {
  auto *b = reinterpret_cast<const BlockQ8_0 *>(w);
  float acc = 0.f;
  for (int64_t i = 0; i < n / QK; ++i) {
    int s = 0;
    for (int j = 0; j < QK; ++j) s += b[i].qs[j] * a[i].qs[j];
    acc += f16_to_f32(b[i].d) * a[i].d * float(s);
  }
  return acc;
}

// sum x*a = d*a.d*(q.qa) (+ m*a.s for the *_1 types, a.s = a.d*sum(qa)).
template <class B>
float dot_small(const uint8_t *w, const BlockA8 *a, int64_t n) {
  auto *b = reinterpret_cast<const B *>(w);
  int q[QK];
  float acc = 0.f;
  for (int64_t i = 0; i < n / QK; ++i) {
    signed_codes(b[i], q);
    int s = 0;
    for (int j = 0; j < QK; ++j) s += q[j] * a[i].qs[j];
    acc += f16_to_f32(b[i].d) * a[i].d * float(s);
    if constexpr (kMin<B>) acc += block_min(b[i]) * a[i].s;
  }
  return acc;
}

template <bool Q5>
float dot_k45(const uint8_t *w, const BlockA8K *a, int64_t n) {
  using B = std::conditional_t<Q5, BlockQ5_K, BlockQ4_K>;
  auto *b = reinterpret_cast<const B *>(w);
  float acc = 0.f;
  for (int64_t i = 0; i < n / QK_K; ++i) {
    int sum_q = 0, sum_m = 0;
    for (int j = 0; j < 8; ++j) {  // sub-block j: 32 values, chunk j/2, nibble j%2
      int sc, m;
      k_scale_min(b[i].scales, j, sc, m);
      int s = 0;
      for (int l = 0; l < 32; ++l) {
        const uint8_t byte = b[i].qs[32 * (j / 2) + l];
        int q = j % 2 ? byte >> 4 : byte & 0xf;
        if constexpr (Q5) q |= ((b[i].qh[l] >> j) & 1) << 4;
        s += q * a[i].qs[32 * j + l];
      }
      sum_q += sc * s;
      sum_m += m * (a[i].bsums[2 * j] + a[i].bsums[2 * j + 1]);
    }
    acc += a[i].d * (f16_to_f32(b[i].d) * float(sum_q) - f16_to_f32(b[i].dmin) * float(sum_m));
  }
  return acc;
}

float dot_q6_k(const uint8_t *w, const BlockA8K *a, int64_t n) {
  auto *b = reinterpret_cast<const BlockQ6_K *>(w);
  float acc = 0.f;
  for (int64_t i = 0; i < n / QK_K; ++i) {
    int sum = 0;
    for (int g = 0; g < QK_K / 16; ++g) {
      int s = 0;
      for (int e = 16 * g; e < 16 * g + 16; ++e)
        s += q6_value(b[i], e / 128, (e % 128) / 32, e % 32) * a[i].qs[e];
      sum += b[i].scales[g] * s;
    }
    acc += a[i].d * f16_to_f32(b[i].d) * float(sum);
  }
  return acc;
}

template <DequantFn DQ>
float dot_float(const uint8_t *w, const float *a, int64_t n) {
  return dot_float_row<DQ>(w, a, n);
}

// ---- the f32 panel product ----

void pack_panel(const float *rows, int64_t kc, float *wp) {
  for (int64_t k = 0; k < kc; ++k)
    for (int r = 0; r < kPanel; ++r) wp[k * kPanel + r] = rows[r * kKC + k];
}

void gemm_panel(const float *wp, int64_t kc, const float *x, int64_t ldx, float *y, int64_t ldy,
                int T, int nr, bool acc) {
  for (int t = 0; t < T; ++t) {
    float s[kPanel] = {};
    for (int64_t k = 0; k < kc; ++k)
      for (int r = 0; r < kPanel; ++r) s[r] += wp[k * kPanel + r] * x[t * ldx + k];
    for (int r = 0; r < nr; ++r) y[t * ldy + r] = acc ? y[t * ldy + r] + s[r] : s[r];
  }
}

const KernelTable kScalar = {
    quant_a8,
    quant_a8k,
    {rows<float, dot_float<dequantize_row_f32>>, rows<float, dot_float<dequantize_row_f16>>,
     rows<float, dot_float<dequantize_row_bf16>>, rows<BlockA8, dot_q8_0>,
     rows<BlockA8, dot_small<BlockQ4_0>>, rows<BlockA8, dot_small<BlockQ5_0>>,
     rows<BlockA8, dot_small<BlockQ4_1>>, rows<BlockA8, dot_small<BlockQ5_1>>,
     rows<BlockA8K, dot_k45<false>>, rows<BlockA8K, dot_k45<true>>, rows<BlockA8K, dot_q6_k>},
    // the dequantizers are the format layer's reference (ggml/quants.cpp)
    {dequantize_row_f32, dequantize_row_f16, dequantize_row_bf16, dequantize_row_q8_0,
     dequantize_row_q4_0, dequantize_row_q5_0, dequantize_row_q4_1, dequantize_row_q5_1,
     dequantize_row_q4_k, dequantize_row_q5_k, dequantize_row_q6_k},
    pack_panel,
    gemm_panel,
    nullptr,  // no int8 panels: prefill takes the f32 panels
    nullptr,
    {},
};

}  // namespace

const KernelTable &scalar_kernels() { return kScalar; }

}  // namespace edgenano::kern
