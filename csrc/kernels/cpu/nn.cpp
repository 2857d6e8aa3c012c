// Drivers of the non-matmul kernels: split the work over the pool and call the kernel table of
// this CPU (scalar primitives here, AVX2 ones in nn_avx2.cpp).
#include "kernels/cpu/nn.h"

#include <algorithm>
#include <cmath>
#include <stdexcept>
#include <vector>

#include "kernels/cpu/nn_impl.h"

namespace edgenano::kern {

namespace {

struct ScalarV {
  static float dot(const float *a, const float *b, int64_t n) {
    float s0 = 0.f, s1 = 0.f, s2 = 0.f, s3 = 0.f;
    int64_t i = 0;
    for (; i + 4 <= n; i += 4) {
      s0 += a[i] * b[i];
      s1 += a[i + 1] * b[i + 1];
      s2 += a[i + 2] * b[i + 2];
      s3 += a[i + 3] * b[i + 3];
    }
    for (; i < n; ++i) s0 += a[i] * b[i];
    return (s0 + s1) + (s2 + s3);
  }
  static float sumsq(const float *x, int64_t n) { return dot(x, x, n); }
  static void axpy(float *y, float a, const float *x, int64_t n) {
    for (int64_t i = 0; i < n; ++i) y[i] += a * x[i];
  }
  // out[s] = q . x[s * ldx + (0, n)] for s < ns.
  static void dot_rows(const float *q, const float *x, int ns, int64_t ldx, int64_t n, float *out) {
    for (int s = 0; s < ns; ++s) out[s] = dot(q, x + s * ldx, n);
  }
  // y[0, n) += sum over s < ns of w[s] * x[s * ldx + (0, n)], in s order.
  static void axpy_rows(float *y, const float *w, const float *x, int ns, int64_t ldx, int64_t n) {
    for (int s = 0; s < ns; ++s) axpy(y, w[s], x + s * ldx, n);
  }
  static void scale_axpy(float *y, float s, float a, const float *x, int64_t n) {
    for (int64_t i = 0; i < n; ++i) y[i] = s * y[i] + a * x[i];
  }
  static void exp_inplace(float *x, int64_t n) {
    for (int64_t i = 0; i < n; ++i) x[i] = std::exp(x[i]);
  }
  static float max_of(const float *x, int64_t n) {
    float m = x[0];
    for (int64_t i = 1; i < n; ++i) m = std::max(m, x[i]);
    return m;
  }
  // x[i] = e^(x[i] - m) for i < n; returns their sum.
  static float exp_sub_sum(float *x, int64_t n, float m) {
    for (int64_t i = 0; i < n; ++i) x[i] -= m;
    exp_inplace(x, n);
    float s = 0.f;
    for (int64_t i = 0; i < n; ++i) s += x[i];
    return s;
  }
  static void silu_inplace(float *x, int64_t n) {
    for (int64_t i = 0; i < n; ++i) x[i] = x[i] / (1.f + std::exp(-x[i]));
  }
  static void q8_0_to_f32(const BlockQ8_0 *b, float *y, int64_t nb) {
    for (int64_t i = 0; i < nb; ++i) {
      const float d = kern::f16_to_f32(b[i].d);
      for (int j = 0; j < QK; ++j) y[i * QK + j] = d * b[i].qs[j];
    }
  }
  static void f16_to_f32(const uint16_t *h, float *y, int64_t n) {
    for (int64_t i = 0; i < n; ++i) y[i] = kern::f16_to_f32(h[i]);
  }
  static void f32_to_f16(const float *x, uint16_t *h, int64_t n) {
    for (int64_t i = 0; i < n; ++i) h[i] = kern::f32_to_f16(x[i]);
  }
  static void relu2_inplace(float *x, int64_t n) {
    for (int64_t i = 0; i < n; ++i) x[i] = x[i] > 0.f ? x[i] * x[i] : 0.f;
  }
  static float update_dot(float *s, float decay, float a, const float *b, const float *c,
                          int64_t n) {
    scale_axpy(s, decay, a, b, n);
    return dot(s, c, n);
  }
  static void gemm_panel(const float *wp, int64_t kc, const float *x, int64_t ldx, float *y,
                         int64_t ldy, int T, int nr, bool acc) {
    scalar_kernels().gemm_panel(wp, kc, x, ldx, y, ldy, T, nr, acc);
  }
};

const NnTable kScalarNn = NnImpl<ScalarV>::table();

const NnTable &nn() {
#ifdef EDGENANO_X86
  if (use_avx2()) return nn_avx2();
#endif
  return kScalarNn;
}

float *thread_buffer(size_t n) {
  thread_local std::vector<float> buf;
  if (buf.size() < n) buf.resize(n);
  return buf.data();
}

// Items of about `grain` units each over [0, n): calls fn(begin, end).
template <class F>
void for_ranges(ThreadPool &pool, int64_t n, int64_t grain, F &&fn) {
  const int64_t items = (n + grain - 1) / grain;
  pool.parallel_for(items, [&](int64_t i, int) { fn(i * grain, std::min(n, (i + 1) * grain)); });
}

}  // namespace

const NnTable &nn_scalar() { return kScalarNn; }

void rmsnorm(const float *x, int64_t ldx, const float *w, float *y, int64_t ldy, int T, int64_t n,
             float eps, ThreadPool &pool) {
  const auto f = nn().rmsnorm_rows;
  if (T < 8) return f(x, ldx, w, y, ldy, 0, T, n, eps);
  for_ranges(pool, T, 8,
             [&](int64_t a, int64_t b) { f(x, ldx, w, y, ldy, int(a), int(b), n, eps); });
}

void gated_rmsnorm(const float *y, int64_t ldy, const float *z, int64_t ldz, const float *w,
                   float *out, int64_t ldo, int T, int64_t D, int G, float eps, ThreadPool &pool) {
  if (G <= 0 || D % G) throw std::invalid_argument("gated_rmsnorm: D must split into G groups");
  const auto f = nn().gated_rows;
  for_ranges(pool, T, 4, [&](int64_t a, int64_t b) {
    f(y, ldy, z, ldz, w, out, ldo, int(a), int(b), D, G, eps, thread_buffer(size_t(D)));
  });
}

void relu2(float *x, int64_t ldx, int T, int64_t n, ThreadPool &pool) {
  const auto f = nn().relu2_rows;
  if (T < 8) return f(x, ldx, 0, T, n);
  for_ranges(pool, T, 8, [&](int64_t a, int64_t b) { f(x, ldx, int(a), int(b), n); });
}

void softplus_bias(const float *x, int64_t ldx, const float *bias, float *out, int64_t ldo, int T,
                   int H) {
  for (int t = 0; t < T; ++t)
    for (int h = 0; h < H; ++h) {
      const float v = x[t * ldx + h] + bias[h];
      out[t * ldo + h] = v > 20.f ? v : std::log1p(std::exp(v));
    }
}

void causal_conv(const ConvParams &p, ThreadPool &pool) {
  if (p.K < 1 || p.K > 8) throw std::invalid_argument("causal_conv: kernel width must be 1..8");
  const auto f = nn().conv_channels;
  for_ranges(pool, p.C, 256, [&](int64_t a, int64_t b) { f(p, a, b); });
}

void causal_conv_many(const ConvParams *p, int n, ThreadPool &pool) {
  if (n < 1) return;
  for (int i = 0; i < n; ++i)
    if (p[i].K < 1 || p[i].K > 8 || p[i].C != p[0].C)
      throw std::invalid_argument("causal_conv_many: kernel widths 1..8 and one channel count");
  const auto f = nn().conv_channels;
  const int64_t per = (p[0].C + 255) / 256;  // ranges of 256 channels, as causal_conv
  pool.parallel_for(n * per, [&](int64_t it, int) {
    const ConvParams &q = p[it / per];
    const int64_t a = it % per * 256;
    f(q, a, std::min(q.C, a + 256));
  });
}

void ssm_scan_many(const ScanParams *p, int n, ThreadPool &pool) {
  if (n < 1) return;
  for (int i = 0; i < n; ++i)
    if (p[i].G <= 0 || p[i].H % p[i].G || p[i].H != p[0].H)
      throw std::invalid_argument("ssm_scan_many: one head count, a multiple of G");
  const NnTable &k = nn();
  const int H = p[0].H;
  pool.parallel_for(int64_t(n) * H, [&](int64_t it, int) {
    k.scan_head_recurrent(p[it / H], int(it % H));
  });
}

void ssm_scan(const ScanParams &p, int chunk, ThreadPool &pool, Workspace &ws) {
  if (p.G <= 0 || p.H % p.G) throw std::invalid_argument("ssm_scan: H must be a multiple of G");
  const NnTable &k = nn();
  if (chunk <= 0 || p.T == 1) {
    pool.parallel_for(p.H, [&](int64_t h, int) { k.scan_head_recurrent(p, int(h)); });
    return;
  }
  if (chunk > 1024) throw std::invalid_argument("ssm_scan: chunk must be <= 1024");
  const int n_chunks = (p.T + chunk - 1) / chunk;
  const size_t cb_floats = size_t(n_chunks) * size_t(p.G) * size_t(chunk) * size_t(chunk);
  auto *cb = reinterpret_cast<float *>(ws.get_shared(cb_floats * sizeof(float)));
  pool.parallel_for(int64_t(n_chunks) * p.G, [&](int64_t i, int) {
    const int ci = int(i / p.G), g = int(i % p.G), c0 = ci * chunk;
    k.chunk_cb(p, g, c0, std::min(chunk, p.T - c0), chunk, cb + size_t(i) * chunk * chunk);
  });
  pool.parallel_for(p.H, [&](int64_t h, int) {
    k.scan_head_chunked(p, int(h), chunk, cb, thread_buffer(scan_scratch_floats(chunk, p.P, p.N)));
  });
}

void attention(const AttnParams &p, ThreadPool &pool, Workspace &) {
  if (p.n_head_kv <= 0 || p.n_head % p.n_head_kv)
    throw std::invalid_argument("attention: n_head must be a multiple of n_head_kv");
  if (p.kv_type == T_Q8_0 && p.head_dim % QK)
    throw std::invalid_argument("attention: a q8_0 cache needs head_dim % 32 == 0");
  const int tb = std::min(p.T, 16);  // tokens per item: K/V rows are converted once per item
  const int blocks = (p.T + tb - 1) / tb;
  const size_t scratch = attn_scratch_floats(p, tb);
  const auto f = nn().attn_block;
  pool.parallel_for(int64_t(blocks) * p.n_head_kv, [&](int64_t i, int) {
    const int kvh = int(i % p.n_head_kv), t0 = int(i / p.n_head_kv) * tb;
    f(p, kvh, t0, std::min(p.T, t0 + tb), thread_buffer(scratch));
  });
}

void kv_store(const float *src, int64_t lds, int T, int64_t width, int kv_type, uint8_t *dst) {
  const size_t rb = row_bytes(kv_type, width);
  if (rb == 0 || (kv_type != T_F32 && kv_type != T_F16 && kv_type != T_Q8_0))
    throw std::invalid_argument("kv_store: cache type must be F32, F16 or Q8_0 (whole blocks)");
  for (int t = 0; t < T; ++t) nn().kv_row(src + t * lds, width, kv_type, dst + size_t(t) * rb);
}

}  // namespace edgenano::kern
