// The non-matmul kernels of nemotron_h on the device: embedding lookup, RMSNorm, grouped gated
// RMSNorm, relu^2, softplus with bias, the causal depthwise conv, the Mamba-2 selective scan (the
// one-step recurrence for decode, the chunked SSD form for prefill) and KV-cache stores. Twins:
// kernels/cpu/nn_impl.h (same formulas, same order of the per-element arithmetic; reductions
// differ in summation order only).
#include <algorithm>
#include <stdexcept>

#include "kernels/cuda/common.cuh"
#include "kernels/cuda/ops.h"

namespace edgenano::cuk {
inline namespace SIMT_IMPL {

namespace {

SIMT_DEVICE float silu(float v) { return v / (1.f + expf(-v)); }

// A thread per 32 values of a row.
template <int TYPE>
__global__ void embed_kernel(const uint8_t *table, size_t row_bytes, int64_t n, const int32_t *ids,
                             float *x, int64_t ldx) {
  const int t = int(blockIdx.y);
  const int64_t k0 = (int64_t(blockIdx.x) * blockDim.x + threadIdx.x) * 32;
  if (k0 >= n) return;
  float v[32];
  dequant32<TYPE>(table + size_t(ids[t]) * row_bytes, k0, n, v);
  for (int i = 0; i < 32 && k0 + i < n; ++i) x[t * ldx + k0 + i] = v[i];
}

__global__ void rmsnorm_kernel(const float *x, int64_t ldx, const float *w, float *y, int64_t ldy,
                               int64_t n, float eps) {
  const float *xt = x + int64_t(blockIdx.x) * ldx;
  float *yt = y + int64_t(blockIdx.x) * ldy;
  float ss = 0.f;
  for (int64_t i = threadIdx.x; i < n; i += blockDim.x) ss += xt[i] * xt[i];
  const float s = 1.f / sqrtf(block_sum(ss) / float(n) + eps);
  for (int64_t i = threadIdx.x; i < n; i += blockDim.x) yt[i] = xt[i] * s * w[i];
}

// A block per (token, group): v = silu(z) * y, then RMSNorm over the group's gs values.
__global__ void gated_rmsnorm_kernel(const float *y, int64_t ldy, const float *z, int64_t ldz,
                                     const float *w, float *out, int64_t ldo, int64_t gs,
                                     float eps) {
  const int64_t t = blockIdx.x, off = int64_t(blockIdx.y) * gs;
  const float *yt = y + t * ldy + off, *zt = z + t * ldz + off;
  float ss = 0.f;
  for (int64_t i = threadIdx.x; i < gs; i += blockDim.x) {
    const float v = silu(zt[i]) * yt[i];
    ss += v * v;
  }
  const float s = 1.f / sqrtf(block_sum(ss) / float(gs) + eps);
  for (int64_t i = threadIdx.x; i < gs; i += blockDim.x)
    out[t * ldo + off + i] = silu(zt[i]) * yt[i] * s * w[off + i];
}

__global__ void relu2_kernel(float *x, int64_t ldx, int T, int64_t n) {
  const int64_t total = int64_t(T) * n;
  for (int64_t e = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; e < total;
       e += int64_t(gridDim.x) * blockDim.x) {
    float &v = x[(e / n) * ldx + e % n];
    v = v > 0.f ? v * v : 0.f;
  }
}

__global__ void softplus_bias_kernel(const float *x, int64_t ldx, const float *bias, float *out,
                                     int64_t ldo, int T, int H) {
  const int64_t e = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (e >= int64_t(T) * H) return;
  const int64_t t = e / H, h = e % H;
  const float v = x[t * ldx + h] + bias[h];
  out[t * ldo + h] = v > 20.f ? v : log1pf(expf(v));
}

// A thread per channel over every token: the K-1 carried inputs in registers, so the state can
// be rewritten in place at the end.
__global__ void causal_conv_kernel(kern::ConvParams p) {
  const int64_t c = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (c >= p.C) return;
  const int K = p.K;
  float st[8], w[8];
  for (int k = 0; k < K - 1; ++k) st[k] = p.state[k * p.C + c];
  for (int k = 0; k < K; ++k) w[k] = p.w[c * K + k];
  const float b = p.b[c];
  for (int t = 0; t < p.T; ++t) {
    float acc = b;
    for (int k = 0; k < K; ++k) {
      const int r = t + k - (K - 1);  // row of x, or of the state when negative
      acc += w[k] * (r < 0 ? st[K - 1 + r] : p.x[r * p.ldx + c]);
    }
    p.y[t * p.ldy + c] = p.silu ? silu(acc) : acc;
  }
  for (int j = 0; j < K - 1; ++j) {  // new state row j = row T + j of [state; x]
    const int r = p.T + j - (K - 1);
    p.state[j * p.C + c] = r < 0 ? st[K - 1 + r] : p.x[r * p.ldx + c];
  }
}

// A warp per (head, channel p): the state row S[h, p, :] in registers (N <= 256, 8 a lane) for
// all T tokens: s = decay * s + dt x B, y = s . C + D x.
__global__ void scan_kernel(kern::ScanParams p) {
  const int64_t row = int64_t(blockIdx.x) * 4 + (threadIdx.x >> 5);
  const int lane = int(threadIdx.x & 31);
  if (row >= int64_t(p.H) * p.P) return;
  const int h = int(row / p.P), i = int(row % p.P), g = h / (p.H / p.G);
  float *S = p.state + row * p.N;
  float s[8];
  for (int j = 0; j < 8; ++j) {
    const int n = lane + 32 * j;
    s[j] = n < p.N ? S[n] : 0.f;
  }
  const float A = p.A[h], Dh = p.D[h];
  for (int t = 0; t < p.T; ++t) {
    const float dt = p.dt[t * p.lddt + h], decay = expf(dt * A);
    const float xv = p.x[t * p.ldx + h * p.P + i], a = dt * xv;
    const float *B = p.B + t * p.ldbc + g * p.N, *C = p.C + t * p.ldbc + g * p.N;
    float part = 0.f;
    for (int j = 0; j < 8; ++j) {
      const int n = lane + 32 * j;
      if (n < p.N) {
        s[j] = decay * s[j] + a * B[n];
        part += s[j] * C[n];
      }
    }
    const float yv = warp_sum(part) + Dh * xv;
    if (lane == 0) p.y[t * p.ldy + h * p.P + i] = yv;
  }
  for (int j = 0; j < 8; ++j) {
    const int n = lane + 32 * j;
    if (n < p.N) S[n] = s[j];
  }
}

// ---- chunked SSD (prefill): the twin of kern::ssm_scan's chunk path, as Mamba-2's ssd_minimal.
// With s_t the cumulative log-decay (dt A) inside a chunk:
//   y[t] = sum_{u<=t} exp(s_t - s_u) dt_u (C_t.B_u) x_u + D x_t   (the chunk's quadratic form)
//        + exp(s_t) C_t S                                         (the state carried in)
//   S'   = exp(s_end) S + sum_u exp(s_end - s_u) dt_u outer(x_u, B_u)
// in three launches: C.B per (chunk, group); the quadratic form per (chunk, head), in parallel
// over chunks; then the state passed from chunk to chunk, a warp per (head, channel) row.

// cb[t * chunk + u] = C_t . B_u of group g for u <= t, in chunk ci (block (ci, g)).
__global__ void ssd_cb_kernel(kern::ScanParams p, int chunk, float *cb) {
  const int ci = int(blockIdx.x), g = int(blockIdx.y), c0 = ci * chunk;
  const int L = min(chunk, p.T - c0);
  float *out = cb + (int64_t(ci) * p.G + g) * chunk * chunk;
  for (int e = int(threadIdx.x); e < L * L; e += int(blockDim.x)) {
    const int t = e / L, u = e % L;
    if (u > t) continue;
    const float *Ct = p.C + int64_t(c0 + t) * p.ldbc + g * p.N;
    const float *Bu = p.B + int64_t(c0 + u) * p.ldbc + g * p.N;
    float acc = 0.f;
    for (int n = 0; n < p.N; ++n) acc += Ct[n] * Bu[n];
    out[t * chunk + u] = acc;
  }
}

// Block (ci, h): the cumulative decay (in double, as the CPU), y = W x + D x with W[t, u] =
// exp(s_t - s_u) dt_u cb[t, u], and for the state pass: e[t, h] = exp(s_t), coef[t, h] =
// exp(s_end - s_u) dt_u, decay[ci, h] = exp(s_end).
__global__ void ssd_chunk_kernel(kern::ScanParams p, int chunk, const float *cb, float *e,
                                 float *coef, float *decay) {
  const int ci = int(blockIdx.x), h = int(blockIdx.y), c0 = ci * chunk;
  const int g = h / (p.H / p.G), L = min(chunk, p.T - c0), P = p.P;
  SIMT_SHARED(double, cs, kSsdMaxChunk);
  SIMT_SHARED(float, dts, kSsdMaxChunk);
  if (threadIdx.x == 0) {
    double acc = 0;
    for (int t = 0; t < L; ++t) {
      const float d = p.dt[int64_t(c0 + t) * p.lddt + h];
      dts[t] = d;
      cs[t] = acc += double(d) * p.A[h];
    }
  }
  __syncthreads();
  const double end = cs[L - 1];
  for (int t = int(threadIdx.x); t < L; t += int(blockDim.x)) {
    const int64_t th = int64_t(c0 + t) * p.H + h;
    e[th] = expf(float(cs[t]));
    coef[th] = expf(float(end - cs[t])) * dts[t];
  }
  if (threadIdx.x == 0) decay[int64_t(ci) * p.H + h] = float(exp(end));
  const float *cbc = cb + (int64_t(ci) * p.G + g) * chunk * chunk;
  const float *x = p.x + int64_t(c0) * p.ldx + h * P;
  const float Dh = p.D[h];
  for (int q = int(threadIdx.x); q < L * P; q += int(blockDim.x)) {
    const int t = q / P, i = q % P;
    const double st = cs[t];
    float acc = 0.f;
    for (int u = 0; u <= t; ++u)
      acc += expf(float(st - cs[u])) * cbc[t * chunk + u] * dts[u] * x[u * p.ldx + i];
    p.y[int64_t(c0 + t) * p.ldy + h * P + i] = acc + Dh * x[t * p.ldx + i];
  }
}

// A warp per (head, channel) row of the state, N values in registers (8 a lane), over the chunks
// in order: y[t] += e_t C_t . S for the chunk's tokens, then S = decay S + sum_u coef_u x_u B_u.
__global__ void ssd_pass_kernel(kern::ScanParams p, int chunk, const float *e, const float *coef,
                                const float *decay) {
  const int64_t row = int64_t(blockIdx.x) * 4 + (threadIdx.x >> 5);
  const int lane = int(threadIdx.x & 31);
  if (row >= int64_t(p.H) * p.P) return;
  const int h = int(row / p.P), i = int(row % p.P), g = h / (p.H / p.G);
  float *S = p.state + row * p.N;
  float s[8], add[8];
  for (int j = 0; j < 8; ++j) {
    const int n = lane + 32 * j;
    s[j] = n < p.N ? S[n] : 0.f;
  }
  for (int c0 = 0, ci = 0; c0 < p.T; c0 += chunk, ++ci) {
    const int L = min(chunk, p.T - c0);
    for (int t = c0; t < c0 + L; ++t) {
      const float *C = p.C + int64_t(t) * p.ldbc + g * p.N;
      float part = 0.f;
      for (int j = 0; j < 8; ++j) {
        const int n = lane + 32 * j;
        if (n < p.N) part += s[j] * C[n];
      }
      const float v = warp_sum(part);
      if (lane == 0) p.y[int64_t(t) * p.ldy + h * p.P + i] += e[int64_t(t) * p.H + h] * v;
    }
    for (int j = 0; j < 8; ++j) add[j] = 0.f;
    for (int u = c0; u < c0 + L; ++u) {
      const float a = coef[int64_t(u) * p.H + h] * p.x[int64_t(u) * p.ldx + h * p.P + i];
      const float *B = p.B + int64_t(u) * p.ldbc + g * p.N;
      for (int j = 0; j < 8; ++j) {
        const int n = lane + 32 * j;
        if (n < p.N) add[j] += a * B[n];
      }
    }
    const float dec = decay[int64_t(ci) * p.H + h];
    for (int j = 0; j < 8; ++j) s[j] = s[j] * dec + add[j];
  }
  for (int j = 0; j < 8; ++j) {
    const int n = lane + 32 * j;
    if (n < p.N) S[n] = s[j];
  }
}

// Routed experts: block (x, j) copies / adds part of row j; an expert's rows are distinct tokens
// (a token picks an expert once), so no two blocks add to one element.
__global__ void gather_rows_kernel(const float *src, int64_t lds, const int32_t *rows, int64_t n,
                                   float *dst, int64_t ldd) {
  const int64_t j = blockIdx.y, r = rows[j];
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x)
    dst[j * ldd + i] = src[r * lds + i];
}

__global__ void scatter_add_rows_kernel(const float *src, int64_t lds, const int32_t *rows,
                                        const float *scale, int64_t n, float *dst, int64_t ldd) {
  const int64_t j = blockIdx.y, r = rows[j];
  const float sc = scale[j];
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x)
    dst[r * ldd + i] += sc * src[j * lds + i];
}

__global__ void kv_store_float_kernel(const float *src, int64_t lds, int T, int64_t width, bool f16,
                                      uint8_t *dst) {
  const int64_t e = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (e >= int64_t(T) * width) return;
  const int64_t t = e / width, i = e % width;
  const float v = src[t * lds + i];
  if (f16)
    reinterpret_cast<uint16_t *>(dst)[e] = simt::f32_to_f16(v);
  else
    reinterpret_cast<float *>(dst)[e] = v;
}

// A warp per 32-value block: ggml's Q8_0 (d = amax/127, q = round(x/d), half away from zero).
__global__ void kv_store_q8_kernel(const float *src, int64_t lds, int T, int64_t width,
                                   uint8_t *dst) {
  const int64_t nb = width / QK, b = int64_t(blockIdx.x) * 4 + (threadIdx.x >> 5);
  const int t = int(blockIdx.y), lane = int(threadIdx.x & 31);
  if (b >= nb) return;
  const float v = src[t * lds + b * QK + lane];
  const float amax = warp_max(fabsf(v));
  const float d = amax / 127.f, id = d != 0.f ? 1.f / d : 0.f;
  auto *o = reinterpret_cast<BlockQ8_0 *>(dst + size_t(t) * size_t(nb) * sizeof(BlockQ8_0)) + b;
  o->qs[lane] = int8_t(roundf(v * id));
  if (lane == 0) o->d = simt::f32_to_f16(d);
}

unsigned blocks_for(int64_t n, int per) { return unsigned((n + per - 1) / per); }

// The chunked scan's scratch: C.B per (chunk, group), then e and coef (T, H), decay (chunks, H).
struct SsdScratch {
  float *cb, *e, *coef, *decay;
  size_t bytes;
};
SsdScratch ssd_layout(const kern::ScanParams &p, int chunk, void *base) {
  const int64_t nc = (p.T + chunk - 1) / chunk;
  auto up = [](size_t n) { return (n * sizeof(float) + 255) / 256 * 256; };
  const size_t b_cb = up(size_t(nc) * size_t(p.G) * size_t(chunk) * size_t(chunk));
  const size_t b_th = up(size_t(p.T) * size_t(p.H)), b_dec = up(size_t(nc) * size_t(p.H));
  auto *c = static_cast<char *>(base);
  SsdScratch s{};
  s.bytes = b_cb + 2 * b_th + b_dec;
  if (c) {
    s.cb = reinterpret_cast<float *>(c);
    s.e = reinterpret_cast<float *>(c + b_cb);
    s.coef = reinterpret_cast<float *>(c + b_cb + b_th);
    s.decay = reinterpret_cast<float *>(c + b_cb + 2 * b_th);
  }
  return s;
}
bool use_ssd(const kern::ScanParams &p, int chunk) {
  return chunk > 0 && chunk <= kSsdMaxChunk && p.T > 1;
}

}  // namespace

void embed(const kern::Weight &table, const int32_t *ids, int T, float *x, int64_t ldx, Stream s) {
  if (T <= 0) return;
  const int64_t chunks = (table.n_in + 31) / 32;
  const dim3 grid(blocks_for(chunks, 64), unsigned(T));
  const bool ok = dispatch_type(table.type, [&](auto tag) {
    constexpr int TYPE = decltype(tag)::value;
    simt::launch<embed_kernel<TYPE>>(grid, dim3(64), s, table.data, table.row_bytes, table.n_in,
                                     ids, x, ldx);
  });
  if (!ok) throw std::invalid_argument("cuda embed: unsupported type");
}

void rmsnorm(const float *x, int64_t ldx, const float *w, float *y, int64_t ldy, int T, int64_t n,
             float eps, Stream s) {
  if (T > 0)
    simt::launch<rmsnorm_kernel>(dim3(unsigned(T)), dim3(256), s, x, ldx, w, y, ldy, n, eps);
}

void gated_rmsnorm(const float *y, int64_t ldy, const float *z, int64_t ldz, const float *w,
                   float *out, int64_t ldo, int T, int64_t D, int G, float eps, Stream s) {
  if (G <= 0 || D % G) throw std::invalid_argument("gated_rmsnorm: D must split into G groups");
  if (T > 0)
    simt::launch<gated_rmsnorm_kernel>(dim3(unsigned(T), unsigned(G)), dim3(256), s, y, ldy, z, ldz,
                                       w, out, ldo, D / G, eps);
}

void relu2(float *x, int64_t ldx, int T, int64_t n, Stream s) {
  const int64_t total = int64_t(T) * n;
  if (total > 0)
    simt::launch<relu2_kernel>(dim3(std::min(blocks_for(total, 256), 4096u)), dim3(256), s, x, ldx,
                               T, n);
}

void softplus_bias(const float *x, int64_t ldx, const float *bias, float *out, int64_t ldo, int T,
                   int H, Stream s) {
  const int64_t total = int64_t(T) * H;
  if (total > 0)
    simt::launch<softplus_bias_kernel>(dim3(blocks_for(total, 256)), dim3(256), s, x, ldx, bias,
                                       out, ldo, T, H);
}

void causal_conv(const kern::ConvParams &p, Stream s) {
  if (p.K < 1 || p.K > 8) throw std::invalid_argument("causal_conv: kernel width must be 1..8");
  if (p.C > 0) simt::launch<causal_conv_kernel>(dim3(blocks_for(p.C, 128)), dim3(128), s, p);
}

size_t ssm_scan_scratch_bytes(const kern::ScanParams &p, int chunk) {
  return use_ssd(p, chunk) ? ssd_layout(p, chunk, nullptr).bytes : 0;
}

void ssm_scan(const kern::ScanParams &p, int chunk, void *scratch, Stream s) {
  if (p.G <= 0 || p.H % p.G) throw std::invalid_argument("ssm_scan: H must be a multiple of G");
  if (p.N > 256) throw std::invalid_argument("cuda ssm_scan: state size N must be <= 256");
  const int64_t rows = int64_t(p.H) * p.P;
  if (rows <= 0 || p.T <= 0) return;
  if (!use_ssd(p, chunk)) {
    simt::launch<scan_kernel>(dim3(blocks_for(rows, 4)), dim3(128), s, p);
    return;
  }
  const SsdScratch w = ssd_layout(p, chunk, scratch);
  const unsigned nc = unsigned((p.T + chunk - 1) / chunk);
  simt::launch<ssd_cb_kernel>(dim3(nc, unsigned(p.G)), dim3(256), s, p, chunk, w.cb);
  simt::launch<ssd_chunk_kernel>(dim3(nc, unsigned(p.H)), dim3(128), s, p, chunk,
                                 static_cast<const float *>(w.cb), w.e, w.coef, w.decay);
  simt::launch<ssd_pass_kernel>(dim3(blocks_for(rows, 4)), dim3(128), s, p, chunk,
                                static_cast<const float *>(w.e),
                                static_cast<const float *>(w.coef),
                                static_cast<const float *>(w.decay));
}

void gather_rows(const float *src, int64_t lds, const int32_t *rows, int n_rows, int64_t n,
                 float *dst, int64_t ldd, Stream s) {
  if (n_rows > 0 && n > 0)
    simt::launch<gather_rows_kernel>(dim3(std::min(blocks_for(n, 256), 64u), unsigned(n_rows)),
                                     dim3(256), s, src, lds, rows, n, dst, ldd);
}

void scatter_add_rows(const float *src, int64_t lds, const int32_t *rows, const float *scale,
                      int n_rows, int64_t n, float *dst, int64_t ldd, Stream s) {
  if (n_rows > 0 && n > 0)
    simt::launch<scatter_add_rows_kernel>(
        dim3(std::min(blocks_for(n, 256), 64u), unsigned(n_rows)), dim3(256), s, src, lds, rows,
        scale, n, dst, ldd);
}

void kv_store(const float *src, int64_t lds, int T, int64_t width, int kv_type, uint8_t *dst,
              Stream s) {
  if (row_bytes(kv_type, width) == 0 || (kv_type != T_F32 && kv_type != T_F16 && kv_type != T_Q8_0))
    throw std::invalid_argument("kv_store: cache type must be F32, F16 or Q8_0 (whole blocks)");
  if (T <= 0) return;
  if (kv_type == T_Q8_0)
    simt::launch<kv_store_q8_kernel>(dim3(blocks_for(width / QK, 4), unsigned(T)), dim3(128), s,
                                     src, lds, T, width, dst);
  else
    simt::launch<kv_store_float_kernel>(dim3(blocks_for(int64_t(T) * width, 256)), dim3(256), s,
                                        src, lds, T, width, kv_type == T_F16, dst);
}

}  // namespace SIMT_IMPL
}  // namespace edgenano::cuk
