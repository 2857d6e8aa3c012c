// The non-matmul kernels of nemotron_h: RMSNorm, grouped gated RMSNorm, causal depthwise conv,
// the Mamba-2 selective scan (one-step recurrence and chunked SSD), GQA attention over an f16 or
// q8_0 KV cache (or f32, for exact comparisons), relu^2 and softplus. Each splits its work over the
// pool itself.
#pragma once
#include <cstdint>

#include "kernels/cpu/matmul.h"
#include "kernels/params.h"
#include "kernels/cpu/threadpool.h"

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

// Depthwise causal conv of T tokens over the K-1 carried inputs (params.h: ConvParams).
void causal_conv(const ConvParams &p, ThreadPool &pool);

// chunk <= 0 or T == 1: the one-step recurrence per token; otherwise the chunked SSD form with
// chunks of `chunk` tokens (same result up to rounding).
void ssm_scan(const ScanParams &p, int chunk, ThreadPool &pool, Workspace &ws);

// n problems in one dispatch (items over problems x channel ranges / heads); the scan as the
// recurrence. Each gives what causal_conv / ssm_scan(p, 0) give it alone.
void causal_conv_many(const ConvParams *p, int n, ThreadPool &pool);
void ssm_scan_many(const ScanParams *p, int n, ThreadPool &pool);

// Causal GQA attention of T new queries over the cache (params.h: AttnParams).
void attention(const AttnParams &p, ThreadPool &pool, Workspace &ws);

// Append T rows of width values (row stride lds) to a KV cache in kv_type at dst.
void kv_store(const float *src, int64_t lds, int T, int64_t width, int kv_type, uint8_t *dst);

}  // namespace edgenano::kern
