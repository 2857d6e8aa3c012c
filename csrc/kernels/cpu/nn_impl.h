// Internal to kernels/: the non-matmul algorithms written once over a vector-primitive policy V,
// instantiated with scalar primitives (nn.cpp) and AVX2 ones (nn_avx2.cpp). V provides:
//   dot(a, b, n), sumsq(x, n), axpy(y, a, x, n): y += a*x, scale_axpy(y, s, a, x, n): y = s*y +
//   a*x, exp_inplace(x, n), silu_inplace(x, n), f16_to_f32(h, y, n), f32_to_f16(x, h, n),
//   relu2_inplace(x, n), update_dot(s, decay, a, b, c, n): s = decay*s + a*b, returns s.c (one
//   pass), gemm_panel(...): the matmul kernels' f32 panel product (matmul_impl.h).
#pragma once
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>

#include "kernels/cpu/common.h"
#include "kernels/cpu/matmul_impl.h"
#include "kernels/cpu/nn.h"

namespace edgenano::kern {

// Per-range entry points; the drivers in nn.cpp split work over the pool and call these.
struct NnTable {
  void (*rmsnorm_rows)(const float *x, int64_t ldx, const float *w, float *y, int64_t ldy, int t0,
                       int t1, int64_t n, float eps);
  void (*gated_rows)(const float *y, int64_t ldy, const float *z, int64_t ldz, const float *w,
                     float *out, int64_t ldo, int t0, int t1, int64_t D, int G, float eps,
                     float *tmp);
  void (*conv_channels)(const ConvParams &p, int64_t c0, int64_t c1);
  void (*scan_head_recurrent)(const ScanParams &p, int h);
  // cb[(t - c0) * ld + u - c0] = C[t] . B[u] of group g, u <= t, in the chunk [c0, c0 + L).
  void (*chunk_cb)(const ScanParams &p, int g, int c0, int L, int ld, float *cb);
  void (*scan_head_chunked)(const ScanParams &p, int h, int chunk, const float *cb_all,
                            float *scratch);
  void (*attn_block)(const AttnParams &p, int kvh, int t0, int t1, float *scratch);
  void (*kv_row)(const float *x, int64_t n, int type, uint8_t *dst);
  void (*relu2_rows)(float *x, int64_t ldx, int t0, int t1, int64_t n);
};
const NnTable &nn_scalar();
const NnTable &nn_avx2();

// Scratch floats scan_head_chunked needs for a chunk of L tokens, and attn_block for tb tokens.
inline size_t panels(int n) { return size_t(n + kPanel - 1) / kPanel; }
inline size_t scan_scratch_floats(int L, int P, int N) {
  const size_t l = size_t(L), p16 = panels(P) * kPanel, n16 = panels(N) * kPanel;
  return 3 * l + l * l + p16 * size_t(N) + l * p16 + size_t(P) * l + l * n16;
}
constexpr int kAttnKeys = 256;      // keys per block in attn_block (panel products)
constexpr int kAttnDotKeys = 32;    // keys per block in attn_block's dots (16 KB of f32 rows)
constexpr int kAttnPanelRows = 12;  // query rows from which attn_block uses panel products
inline size_t attn_scratch_floats(const AttnParams &p, int tb) {
  const size_t nq = size_t(tb) * size_t(p.n_head / p.n_head_kv), S = size_t(p.n_past + p.T);
  const size_t d = size_t(p.head_dim), d16 = (d + 15) / 16 * 16;
  return nq * (2 * d + S) + size_t(kAttnKeys) * (d + d16);
}

template <class V>
struct NnImpl {
  static void rmsnorm_rows(const float *x, int64_t ldx, const float *w, float *y, int64_t ldy,
                           int t0, int t1, int64_t n, float eps) {
    for (int t = t0; t < t1; ++t) {
      const float *xt = x + t * ldx;
      float *yt = y + t * ldy;
      const float s = 1.f / std::sqrt(V::sumsq(xt, n) / float(n) + eps);
      for (int64_t i = 0; i < n; ++i) yt[i] = xt[i] * s * w[i];
    }
  }

  static void gated_rows(const float *y, int64_t ldy, const float *z, int64_t ldz, const float *w,
                         float *out, int64_t ldo, int t0, int t1, int64_t D, int G, float eps,
                         float *tmp) {
    const int64_t gs = D / G;
    for (int t = t0; t < t1; ++t) {
      std::memcpy(tmp, z + t * ldz, size_t(D) * sizeof(float));
      V::silu_inplace(tmp, D);
      const float *yt = y + t * ldy;
      for (int64_t i = 0; i < D; ++i) tmp[i] *= yt[i];
      float *ot = out + t * ldo;
      for (int g = 0; g < G; ++g) {
        const float *v = tmp + g * gs;
        const float s = 1.f / std::sqrt(V::sumsq(v, gs) / float(gs) + eps);
        for (int64_t i = 0; i < gs; ++i) ot[g * gs + i] = v[i] * s * w[g * gs + i];
      }
    }
  }

  // Channels [c0, c1): y[t] = b + sum_k w[:, k] * xp[t + k] over xp = [state; x], then silu;
  // the state becomes the last K-1 rows of xp.
  static void conv_channels(const ConvParams &p, int64_t c0, int64_t c1) {
    constexpr int64_t kMax = 64;
    const int K = p.K;
    for (int64_t cb = c0; cb < c1; cb += kMax) {
      const int64_t nc = std::min(kMax, c1 - cb);
      float wt[8][kMax];  // K <= 8, transposed: wt[k][c]
      for (int k = 0; k < K; ++k)
        for (int64_t c = 0; c < nc; ++c) wt[k][c] = p.w[(cb + c) * K + k];
      for (int t = 0; t < p.T; ++t) {
        float *yt = p.y + t * p.ldy + cb;
        for (int64_t c = 0; c < nc; ++c) yt[c] = p.b[cb + c];
        for (int k = 0; k < K; ++k) {
          const int r = t + k - (K - 1);  // row of x, or of the state when negative
          const float *src = r < 0 ? p.state + (K - 1 + r) * p.C + cb : p.x + r * p.ldx + cb;
          for (int64_t c = 0; c < nc; ++c) yt[c] += wt[k][c] * src[c];
        }
        if (p.silu) V::silu_inplace(yt, nc);
      }
      for (int j = 0; j < K - 1; ++j) {  // new state row j = xp row T + j
        const int r = p.T + j - (K - 1);
        float *dst = p.state + j * p.C + cb;
        if (r < 0)
          std::memmove(dst, p.state + (K - 1 + r) * p.C + cb, size_t(nc) * 4);
        else
          std::memcpy(dst, p.x + r * p.ldx + cb, size_t(nc) * 4);
      }
    }
  }

  static void scan_head_recurrent(const ScanParams &p, int h) {
    const int g = h / (p.H / p.G);
    float *S = p.state + int64_t(h) * p.P * p.N;
    for (int t = 0; t < p.T; ++t) {
      const float dt = p.dt[t * p.lddt + h], decay = std::exp(dt * p.A[h]);
      const float *x = p.x + t * p.ldx + h * p.P;
      const float *B = p.B + t * p.ldbc + g * p.N, *C = p.C + t * p.ldbc + g * p.N;
      float *y = p.y + t * p.ldy + h * p.P;
      for (int i = 0; i < p.P; ++i)
        y[i] = V::update_dot(S + int64_t(i) * p.N, decay, dt * x[i], B, C, p.N) + p.D[h] * x[i];
    }
  }

  static void chunk_cb(const ScanParams &p, int g, int c0, int L, int ld, float *cb) {
    float bt[64 * kPanel];  // B rows of one panel of u, transposed in N slices of 64
    for (int u0 = 0; u0 < L; u0 += kPanel) {
      const int nu = std::min(kPanel, L - u0);
      for (int t = 0; t < L; ++t)
        for (int u = u0; u < u0 + nu; ++u) cb[t * ld + u] = 0.f;
      for (int n0 = 0; n0 < p.N; n0 += 64) {
        const int nn = std::min(64, p.N - n0);
        pack_rows(p.B + int64_t(c0 + u0) * p.ldbc + g * p.N + n0, p.ldbc, nu, nn, nullptr, bt);
        V::gemm_panel(bt, nn, p.C + int64_t(c0) * p.ldbc + g * p.N + n0, p.ldbc, cb + u0, ld, L, nu,
                      true);
      }
    }
  }

  // rows (n_rows x n, row stride ld) -> k-major panels of kPanel rows: out[j][k][r] =
  // rows[16j + r][k] * (scale ? scale[16j + r] : 1), zero past n_rows.
  static void pack_rows(const float *rows, int64_t ld, int n_rows, int n, const float *scale,
                        float *out) {
    for (size_t j = 0; j < panels(n_rows); ++j)
      for (int k = 0; k < n; ++k)
        for (int r = 0; r < kPanel; ++r) {
          const int row = int(j) * kPanel + r;
          out[(j * size_t(n) + size_t(k)) * kPanel + r] =
              row < n_rows ? rows[row * ld + k] * (scale ? scale[row] : 1.f) : 0.f;
        }
  }
  // cols [c0, c0 + n_cols) of n rows (row stride ld) -> panels out[j][k][r] = rows[k][c0 + 16j +
  // r].
  static void pack_cols(const float *rows, int64_t ld, int n, int n_cols, float *out) {
    for (size_t j = 0; j < panels(n_cols); ++j)
      for (int k = 0; k < n; ++k)
        for (int r = 0; r < kPanel; ++r) {
          const int col = int(j) * kPanel + r;
          out[(j * size_t(n) + size_t(k)) * kPanel + r] = col < n_cols ? rows[k * ld + col] : 0.f;
        }
  }
  // y[t, 0:n_out] (= or +=) sum_k x[t, k] * w[k, 0:n_out] for t < T, w given as panels.
  static void panel_product(const float *wp, int kc, int n_out, const float *x, int64_t ldx,
                            float *y, int64_t ldy, int T, bool acc) {
    for (size_t j = 0; j < panels(n_out); ++j)
      V::gemm_panel(wp + j * size_t(kc) * kPanel, kc, x, ldx, y + j * kPanel, ldy, T,
                    std::min<int>(kPanel, n_out - int(j) * kPanel), acc);
  }

  // One head over all chunks, as four small matrix products per chunk. cb_all holds chunk_cb for
  // every (chunk, group): chunk c of group g at ((c * G) + g) * chunk * chunk. With s the
  // cumulative log-decay inside a chunk:
  //   y[t] = exp(s_t) S C_t + sum_{u<=t} exp(s_t - s_u) dt_u (C_t.B_u) x_u + D x_t
  //   S'   = exp(s_end) S + sum_u exp(s_end - s_u) dt_u outer(x_u, B_u)
  static void scan_head_chunked(const ScanParams &p, int h, int chunk, const float *cb_all,
                                float *scratch) {
    const int g = h / (p.H / p.G), P = p.P, N = p.N, Lc = chunk;
    float *S = p.state + int64_t(h) * P * N;
    float *e = scratch, *coef = e + Lc, *seg = coef + Lc, *W = seg + Lc;  // W (L, L)
    float *Sp = W + size_t(Lc) * Lc;                    // S as panels over P: (N, 16) each
    float *Xp = Sp + panels(P) * kPanel * size_t(N);    // x as panels over P: (L, 16) each
    float *XcT = Xp + size_t(Lc) * panels(P) * kPanel;  // (P, L): coef[u] x[u, p]
    float *Bp = XcT + size_t(P) * Lc;                   // B as panels over N: (L, 16) each
    double cs[1024];                                    // chunk <= 1024 (checked by the driver)
    for (int c0 = 0, ci = 0; c0 < p.T; c0 += chunk, ++ci) {
      const int L = std::min(chunk, p.T - c0);
      const float *cb = cb_all + (int64_t(ci) * p.G + g) * chunk * chunk;
      const float *x = p.x + int64_t(c0) * p.ldx + h * P, *dt = p.dt + int64_t(c0) * p.lddt + h;
      const float *B = p.B + int64_t(c0) * p.ldbc + g * N, *C = p.C + int64_t(c0) * p.ldbc + g * N;
      float *y = p.y + int64_t(c0) * p.ldy + h * P;
      double acc = 0;
      for (int t = 0; t < L; ++t) cs[t] = acc += double(dt[t * p.lddt]) * p.A[h];
      // 1. carried state: y = exp(s_t) (C S^T), plus the skip D x
      pack_rows(S, N, P, N, nullptr, Sp);
      panel_product(Sp, N, P, C, p.ldbc, y, p.ldy, L, false);
      for (int t = 0; t < L; ++t) e[t] = float(cs[t]);
      V::exp_inplace(e, L);
      for (int t = 0; t < L; ++t)
        for (int i = 0; i < P; ++i)
          y[t * p.ldy + i] = e[t] * y[t * p.ldy + i] + p.D[h] * x[t * p.ldx + i];
      // 2. within the chunk: y += W x, W[t, u] = exp(s_t - s_u) dt_u (C_t.B_u) for u <= t
      for (int t = 0; t < L; ++t) {
        for (int u = 0; u <= t; ++u) seg[u] = float(cs[t] - cs[u]);
        V::exp_inplace(seg, t + 1);
        float *wt = W + size_t(t) * L;
        for (int u = 0; u <= t; ++u) wt[u] = seg[u] * cb[t * chunk + u] * dt[u * p.lddt];
        std::fill(wt + t + 1, wt + L, 0.f);
      }
      pack_cols(x, p.ldx, L, P, Xp);
      panel_product(Xp, L, P, W, L, y, p.ldy, L, true);
      // 3. next state: S = exp(s_end) S + (coef x)^T B, coef[u] = exp(s_end - s_u) dt_u
      for (int u = 0; u < L; ++u) coef[u] = float(cs[L - 1] - cs[u]);
      V::exp_inplace(coef, L);
      for (int u = 0; u < L; ++u) coef[u] *= dt[u * p.lddt];
      for (int i = 0; i < P; ++i)
        for (int u = 0; u < L; ++u) XcT[i * L + u] = coef[u] * x[u * p.ldx + i];
      const float e_end = float(std::exp(cs[L - 1]));
      for (int64_t i = 0; i < int64_t(P) * N; ++i) S[i] *= e_end;
      pack_cols(B, p.ldbc, L, N, Bp);
      panel_product(Bp, L, N, XcT, L, S, N, P, true);
    }
  }

  static void kv_to_f32(const uint8_t *row, int type, int64_t off, int64_t n, float *out) {
    if (type == T_F32) {
      std::memcpy(out, reinterpret_cast<const float *>(row) + off, size_t(n) * sizeof(float));
    } else if (type == T_F16) {
      V::f16_to_f32(reinterpret_cast<const uint16_t *>(row) + off, out, n);
    } else {  // Q8_0: off and n are multiples of 32
      V::q8_0_to_f32(reinterpret_cast<const BlockQ8_0 *>(row) + off / QK, out, n / QK);
    }
  }

  // Queries of tokens [t0, t1) on the query heads of KV head kvh, as panel products over blocks
  // of kAttnKeys keys (each K/V row converted to f32 once per item): scores = Q K^T, a causal
  // softmax per row, out = P V.
  static void attn_block(const AttnParams &p, int kvh, int t0, int t1, float *scratch) {
    const int rep = p.n_head / p.n_head_kv, d = p.head_dim, nq = (t1 - t0) * rep;
    const int S = p.n_past + t1;                   // keys visible to the last token of the block
    float *qs = scratch;                           // (nq, d) scaled queries
    float *scores = qs + size_t(nq) * d;           // (nq, S)
    float *acc = scores + size_t(nq) * S;          // (nq, d)
    float *rows = acc + size_t(nq) * d;            // (kAttnKeys, d) K or V rows in f32
    float *packed = rows + size_t(kAttnKeys) * d;  // the same as panels
    for (int qi = 0; qi < nq; ++qi) {
      const int t = t0 + qi / rep, h = kvh * rep + qi % rep;
      const float *q = p.q + int64_t(t) * p.ldq + int64_t(h) * d;
      for (int i = 0; i < d; ++i) qs[qi * d + i] = q[i] * p.scale;
    }
    const bool panel = nq >= kAttnPanelRows;  // few queries (decode): plain dots, no packing
    // Keys per block: the dots pass over a block's rows once per query, so there it holds only
    // kAttnDotKeys rows, which stay in L1 for every query (256 rows of 128 floats, 128 KB, were
    // read from L2 by each of them: 3 cycles an FMA). Each key's score and each output element's
    // order of summation are the same for any block size.
    const int kb = panel ? kAttnKeys : kAttnDotKeys;
    for (int s0 = 0; s0 < S; s0 += kb) {
      const int ns = std::min(kb, S - s0);
      for (int s = 0; s < ns; ++s)
        kv_to_f32(p.k + size_t(s0 + s) * p.kv_row_bytes, p.kv_type, int64_t(kvh) * d, d,
                  rows + s * d);
      if (panel) {
        pack_rows(rows, d, ns, d, nullptr, packed);
        panel_product(packed, d, ns, qs, d, scores + s0, S, nq, false);
      } else {
        for (int qi = 0; qi < nq; ++qi)
          V::dot_rows(qs + qi * d, rows, ns, d, d, scores + size_t(qi) * S + s0);
      }
    }
    for (int qi = 0; qi < nq; ++qi) {
      const int n = p.n_past + t0 + qi / rep + 1;  // causal: keys [0, n)
      float *sc = scores + size_t(qi) * S;
      const float inv = 1.f / V::exp_sub_sum(sc, n, V::max_of(sc, n));
      for (int s = 0; s < n; ++s) sc[s] *= inv;
      std::fill(sc + n, sc + S, 0.f);
    }
    if (!panel) std::fill(acc, acc + size_t(nq) * d, 0.f);
    for (int s0 = 0; s0 < S; s0 += kb) {
      const int ns = std::min(kb, S - s0);
      for (int s = 0; s < ns; ++s)
        kv_to_f32(p.v + size_t(s0 + s) * p.kv_row_bytes, p.kv_type, int64_t(kvh) * d, d,
                  rows + s * d);
      if (panel) {
        pack_cols(rows, d, ns, d, packed);
        panel_product(packed, ns, d, scores + s0, S, acc, d, nq, s0 > 0);
      } else {
        for (int qi = 0; qi < nq; ++qi)  // out row in registers across the block's keys
          V::axpy_rows(acc + size_t(qi) * d, scores + size_t(qi) * S + s0, rows, ns, d, d);
      }
    }
    for (int qi = 0; qi < nq; ++qi) {
      const int t = t0 + qi / rep, h = kvh * rep + qi % rep;
      std::memcpy(p.out + int64_t(t) * p.ldo + int64_t(h) * d, acc + size_t(qi) * d, size_t(d) * 4);
    }
  }

  static void kv_row(const float *x, int64_t n, int type, uint8_t *dst) {
    if (type == T_F32) {
      std::memcpy(dst, x, size_t(n) * sizeof(float));
      return;
    }
    if (type == T_F16) {
      V::f32_to_f16(x, reinterpret_cast<uint16_t *>(dst), n);
      return;
    }
    auto *b = reinterpret_cast<BlockQ8_0 *>(dst);  // ggml Q8_0: d = amax/127, q = round(x/d)
    for (int64_t i = 0; i < n / QK; ++i, x += QK) {
      float amax = 0.f;
      for (int j = 0; j < QK; ++j) amax = std::max(amax, std::fabs(x[j]));
      const float d = amax / 127.f, id = d != 0.f ? 1.f / d : 0.f;
      b[i].d = f32_to_f16(d);
      for (int j = 0; j < QK; ++j)
        b[i].qs[j] = int8_t(std::round(x[j] * id));  // half away from zero, as ggml
    }
  }

  static void relu2_rows(float *x, int64_t ldx, int t0, int t1, int64_t n) {
    for (int t = t0; t < t1; ++t) V::relu2_inplace(x + t * ldx, n);
  }

  static NnTable table() {
    return {rmsnorm_rows,      gated_rows, conv_channels, scan_head_recurrent, chunk_cb,
            scan_head_chunked, attn_block, kv_row,        relu2_rows};
  }
};

}  // namespace edgenano::kern
