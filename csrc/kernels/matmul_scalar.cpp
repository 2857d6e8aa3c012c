// Scalar kernels: the plain twin of every AVX2 matmul kernel (dequantizers, activation
// quantizers, dot products, the f32 panel product). Written for clarity; the layouts follow ggml.
#include <algorithm>
#include <cmath>
#include <type_traits>

#include "kernels/matmul_impl.h"

namespace edgenano::kern {

namespace {

// ---- dequantizers (one row, n a multiple of the block size) ----

void dq_f32(const void *src, float *y, int64_t n) { std::memcpy(y, src, size_t(n) * 4); }

void dq_f16(const void *src, float *y, int64_t n) {
  auto *h = static_cast<const uint16_t *>(src);
  for (int64_t i = 0; i < n; ++i) y[i] = fp16_to_f32(h[i]);
}

void dq_bf16(const void *src, float *y, int64_t n) {
  auto *h = static_cast<const uint16_t *>(src);
  for (int64_t i = 0; i < n; ++i) y[i] = bf16_to_f32(h[i]);
}

void dq_q8_0(const void *src, float *y, int64_t n) {
  auto *b = static_cast<const BlockQ8_0 *>(src);
  for (int64_t i = 0; i < n / QK; ++i, y += QK) {
    const float d = fp16_to_f32(b[i].d);
    for (int j = 0; j < QK; ++j) y[j] = d * b[i].qs[j];
  }
}

void dq_q4_0(const void *src, float *y, int64_t n) {
  auto *b = static_cast<const BlockQ4_0 *>(src);
  for (int64_t i = 0; i < n / QK; ++i, y += QK) {
    const float d = fp16_to_f32(b[i].d);
    for (int j = 0; j < QK / 2; ++j) {
      y[j] = d * ((b[i].qs[j] & 0xf) - 8);
      y[j + QK / 2] = d * ((b[i].qs[j] >> 4) - 8);
    }
  }
}

uint32_t load_u32(const uint8_t *p) {
  uint32_t v;
  std::memcpy(&v, p, 4);
  return v;
}

void dq_q5_0(const void *src, float *y, int64_t n) {
  auto *b = static_cast<const BlockQ5_0 *>(src);
  for (int64_t i = 0; i < n / QK; ++i, y += QK) {
    const float d = fp16_to_f32(b[i].d);
    const uint32_t qh = load_u32(b[i].qh);  // bit j: high bit of element j
    for (int j = 0; j < QK / 2; ++j) {
      const int lo = (b[i].qs[j] & 0xf) | int((qh >> j) & 1) << 4;
      const int hi = (b[i].qs[j] >> 4) | int((qh >> (j + 16)) & 1) << 4;
      y[j] = d * (lo - 16);
      y[j + QK / 2] = d * (hi - 16);
    }
  }
}

// Q4_1 / Q5_1: x = d*q + m with unsigned codes q (4 or 5 bits).
template <bool Q5>
void dq_q45_1(const void *src, float *y, int64_t n) {
  using B = std::conditional_t<Q5, BlockQ5_1, BlockQ4_1>;
  auto *b = static_cast<const B *>(src);
  for (int64_t i = 0; i < n / QK; ++i, y += QK) {
    const float d = fp16_to_f32(b[i].d), m = fp16_to_f32(b[i].m);
    uint32_t qh = 0;
    if constexpr (Q5) qh = load_u32(b[i].qh);
    for (int j = 0; j < QK / 2; ++j) {
      const int lo = (b[i].qs[j] & 0xf) | int((qh >> j) & 1) << 4;
      const int hi = (b[i].qs[j] >> 4) | int((qh >> (j + 16)) & 1) << 4;
      y[j] = d * float(lo) + m;
      y[j + QK / 2] = d * float(hi) + m;
    }
  }
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

// Element l (0..255) of a Q4_K/Q5_K super-block: 64-element chunk c = l/64 holds sub-blocks 2c
// (low nibbles of qs[32c..32c+32]) and 2c+1 (high nibbles); Q5_K's bit 2c / 2c+1 of qh[l%32].
template <bool Q5>
void dq_k45(const void *src, float *y, int64_t n) {
  using B = std::conditional_t<Q5, BlockQ5_K, BlockQ4_K>;
  auto *b = static_cast<const B *>(src);
  for (int64_t i = 0; i < n / QKK; ++i, y += QKK) {
    const float d = fp16_to_f32(b[i].d), dmin = fp16_to_f32(b[i].dmin);
    for (int c = 0; c < 4; ++c) {
      int sc0, m0, sc1, m1;
      k_scale_min(b[i].scales, 2 * c, sc0, m0);
      k_scale_min(b[i].scales, 2 * c + 1, sc1, m1);
      for (int l = 0; l < 32; ++l) {
        int lo = b[i].qs[32 * c + l] & 0xf, hi = b[i].qs[32 * c + l] >> 4;
        if constexpr (Q5) {
          lo |= ((b[i].qh[l] >> (2 * c)) & 1) << 4;
          hi |= ((b[i].qh[l] >> (2 * c + 1)) & 1) << 4;
        }
        y[64 * c + l] = d * sc0 * lo - dmin * m0;
        y[64 * c + 32 + l] = d * sc1 * hi - dmin * m1;
      }
    }
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

void dq_q6_k(const void *src, float *y, int64_t n) {
  auto *b = static_cast<const BlockQ6_K *>(src);
  for (int64_t i = 0; i < n / QKK; ++i, y += QKK) {
    const float d = fp16_to_f32(b[i].d);
    for (int e = 0; e < QKK; ++e) {  // scale index = e / 16
      const int h = e / 128, q = (e % 128) / 32, l = e % 32;
      y[e] = d * b[i].scales[e / 16] * q6_value(b[i], h, q, l);
    }
  }
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
  for (int64_t i = 0; i < n / QKK; ++i, x += QKK) {
    float amax = 0.f;
    for (int j = 0; j < QKK; ++j) amax = std::max(amax, std::fabs(x[j]));
    const float id = amax > 0.f ? 127.f / amax : 0.f;
    y[i].d = amax / 127.f;
    for (int g = 0; g < QKK / 16; ++g) {
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
  const size_t bytes_per = DQ == dq_f32 ? 4 : 2;
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
    acc += fp16_to_f32(b[i].d) * a[i].d * float(s);
  }
  return acc;
}

float dot_q4_0(const uint8_t *w, const BlockA8 *a, int64_t n) {
  auto *b = reinterpret_cast<const BlockQ4_0 *>(w);
  float acc = 0.f;
  for (int64_t i = 0; i < n / QK; ++i) {
    int s = 0;
    for (int j = 0; j < QK / 2; ++j)
      s += ((b[i].qs[j] & 0xf) - 8) * a[i].qs[j] + ((b[i].qs[j] >> 4) - 8) * a[i].qs[j + 16];
    acc += fp16_to_f32(b[i].d) * a[i].d * float(s);
  }
  return acc;
}

float dot_q5_0(const uint8_t *w, const BlockA8 *a, int64_t n) {
  auto *b = reinterpret_cast<const BlockQ5_0 *>(w);
  float acc = 0.f;
  for (int64_t i = 0; i < n / QK; ++i) {
    const uint32_t qh = load_u32(b[i].qh);
    int s = 0;
    for (int j = 0; j < QK / 2; ++j) {
      const int lo = ((b[i].qs[j] & 0xf) | int((qh >> j) & 1) << 4) - 16;
      const int hi = ((b[i].qs[j] >> 4) | int((qh >> (j + 16)) & 1) << 4) - 16;
      s += lo * a[i].qs[j] + hi * a[i].qs[j + 16];
    }
    acc += fp16_to_f32(b[i].d) * a[i].d * float(s);
  }
  return acc;
}

// sum (d*q + m)*a = d*a.d*(q.qa) + m*a.s
template <bool Q5>
float dot_q45_1(const uint8_t *w, const BlockA8 *a, int64_t n) {
  using B = std::conditional_t<Q5, BlockQ5_1, BlockQ4_1>;
  auto *b = reinterpret_cast<const B *>(w);
  float acc = 0.f;
  for (int64_t i = 0; i < n / QK; ++i) {
    uint32_t qh = 0;
    if constexpr (Q5) qh = load_u32(b[i].qh);
    int s = 0;
    for (int j = 0; j < QK / 2; ++j) {
      const int lo = (b[i].qs[j] & 0xf) | int((qh >> j) & 1) << 4;
      const int hi = (b[i].qs[j] >> 4) | int((qh >> (j + 16)) & 1) << 4;
      s += lo * a[i].qs[j] + hi * a[i].qs[j + 16];
    }
    acc += fp16_to_f32(b[i].d) * a[i].d * float(s) + fp16_to_f32(b[i].m) * a[i].s;
  }
  return acc;
}

template <bool Q5>
float dot_k45(const uint8_t *w, const BlockA8K *a, int64_t n) {
  using B = std::conditional_t<Q5, BlockQ5_K, BlockQ4_K>;
  auto *b = reinterpret_cast<const B *>(w);
  float acc = 0.f;
  for (int64_t i = 0; i < n / QKK; ++i) {
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
    acc += a[i].d * (fp16_to_f32(b[i].d) * float(sum_q) - fp16_to_f32(b[i].dmin) * float(sum_m));
  }
  return acc;
}

float dot_q6_k(const uint8_t *w, const BlockA8K *a, int64_t n) {
  auto *b = reinterpret_cast<const BlockQ6_K *>(w);
  float acc = 0.f;
  for (int64_t i = 0; i < n / QKK; ++i) {
    int sum = 0;
    for (int g = 0; g < QKK / 16; ++g) {
      int s = 0;
      for (int e = 16 * g; e < 16 * g + 16; ++e)
        s += q6_value(b[i], e / 128, (e % 128) / 32, e % 32) * a[i].qs[e];
      sum += b[i].scales[g] * s;
    }
    acc += a[i].d * fp16_to_f32(b[i].d) * float(sum);
  }
  return acc;
}

template <class A, float (*F)(const uint8_t *, const A *, int64_t)>
void rows(const DotArgs &a) {
  for (int t = 0; t < a.T; ++t) {
    auto *act = reinterpret_cast<const A *>(a.act + size_t(t) * a.act_stride);
    float *y = a.y + t * a.ldy;
    for (int64_t r = 0; r < a.nrows; ++r) {
      const float v = F(a.w + r * a.row_bytes, act, a.n);
      y[r] = a.acc ? y[r] + v : v;
    }
  }
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
    {rows<float, dot_float<dq_f32>>, rows<float, dot_float<dq_f16>>,
     rows<float, dot_float<dq_bf16>>, rows<BlockA8, dot_q8_0>, rows<BlockA8, dot_q4_0>,
     rows<BlockA8, dot_q5_0>, rows<BlockA8, dot_q45_1<false>>, rows<BlockA8, dot_q45_1<true>>,
     rows<BlockA8K, dot_k45<false>>, rows<BlockA8K, dot_k45<true>>, rows<BlockA8K, dot_q6_k>},
    {dq_f32, dq_f16, dq_bf16, dq_q8_0, dq_q4_0, dq_q5_0, dq_q45_1<false>, dq_q45_1<true>,
     dq_k45<false>, dq_k45<true>, dq_q6_k},
    pack_panel,
    gemm_panel,
};

}  // namespace

const KernelTable &scalar_kernels() { return kScalar; }

}  // namespace edgenano::kern
