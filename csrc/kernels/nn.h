// The non-matmul kernels of nemotron_h: RMSNorm, grouped gated RMSNorm, causal depthwise conv,
// the Mamba-2 selective scan (one-step recurrence and chunked SSD), GQA attention over an f16 or
// q8_0 KV cache (or f32, for exact comparisons), relu^2 and softplus. Each splits its work over the
// pool itself.
#pragma once
#include <cstdint>

#include "kernels/matmul.h"
#include "kernels/threadpool.h"

namespace edgenano::kern {

// y[t] = x[t] / sqrt(mean(x[t]^2) + eps) * w for T rows of n.
void rmsnorm(const float *x, int64_t ldx, const float *w, float *y, int64_t ldy, int T, int64_t n,
             float eps, ThreadPool &pool);

// out[t] = per-group RMSNorm(y[t] * silu(z[t])) * w; D channels in G contiguous groups.
void gated_rmsnorm(const float *y, int64_t ldy, const float *z, int64_t ldz, const float *w,
                   float *out, int64_t ldo, int T, int64_t D, int G, float eps, ThreadPool &pool);

// x[t, :n] = relu(x[t, :n])^2 in place.
void relu2(float *x, int64_t ldx, int T, int64_t n, ThreadPool &pool);

// out[t, h] = softplus(x[t, h] + bias[h]) (= the argument itself above 20).
void softplus_bias(const float *x, int64_t ldx, const float *bias, float *out, int64_t ldo, int T,
                   int H);

struct ConvParams {
  int T = 0;                 // tokens
  int64_t C = 0;             // channels
  int K = 0;                 // kernel width
  const float *x = nullptr;  // (T, C), row stride ldx: pre-conv inputs
  int64_t ldx = 0;
  const float *w = nullptr;  // (C, K), w[c, K-1] multiplies the current token
  const float *b = nullptr;  // (C)
  float *state = nullptr;    // (K-1, C): the last K-1 pre-conv inputs, updated in place
  float *y = nullptr;        // (T, C), row stride ldy (may not alias x)
  int64_t ldy = 0;
  bool silu = true;  // apply silu after the bias
};
void causal_conv(const ConvParams &p, ThreadPool &pool);

struct ScanParams {
  int T = 0, H = 0, P = 0, N = 0, G = 0;  // tokens, heads, head width, state size, groups
  const float *x = nullptr;               // x[t*ldx + h*P + p]
  int64_t ldx = 0;
  const float *B = nullptr;  // B[t*ldbc + g*N + n]
  const float *C = nullptr;  // C[t*ldbc + g*N + n]
  int64_t ldbc = 0;
  const float *dt = nullptr;  // dt[t*lddt + h], after softplus
  int64_t lddt = 0;
  const float *A = nullptr;  // (H), negative
  const float *D = nullptr;  // (H)
  float *state = nullptr;    // (H, P, N), updated in place
  float *y = nullptr;        // y[t*ldy + h*P + p]
  int64_t ldy = 0;
};
// chunk <= 0 or T == 1: the one-step recurrence per token; otherwise the chunked SSD form with
// chunks of `chunk` tokens (same result up to rounding).
void ssm_scan(const ScanParams &p, int chunk, ThreadPool &pool, Workspace &ws);

struct AttnParams {
  int T = 0;       // new query tokens, at positions n_past .. n_past+T-1
  int n_past = 0;  // tokens before them; the cache holds n_past + T rows
  int n_head = 0, n_head_kv = 0, head_dim = 0;
  const float *q = nullptr;  // q[t*ldq + h*head_dim + i]
  int64_t ldq = 0;
  const uint8_t *k = nullptr, *v = nullptr;  // cache rows of n_head_kv*head_dim values
  size_t kv_row_bytes = 0;
  int kv_type = T_F16;  // T_F16, T_Q8_0 or T_F32
  float scale = 1.f;
  float *out = nullptr;  // out[t*ldo + h*head_dim + i]
  int64_t ldo = 0;
};
void attention(const AttnParams &p, ThreadPool &pool, Workspace &ws);

// Append T rows of width values (row stride lds) to a KV cache in kv_type at dst.
void kv_store(const float *src, int64_t lds, int T, int64_t width, int kv_type, uint8_t *dst);

}  // namespace edgenano::kern
