// Causal GQA attention over an f16, q8_0 or f32 KV cache, no RoPE. Decode (one query): split-K
// flash decoding: a block per (query head, key split) runs an online softmax per warp over every
// 4th key of its split (a lane holds head_dim/32 of q, of the output and of each K/V row; scores
// reduced by shuffles), merges its 4 warps through shared memory and writes (max, sum,
// unnormalized output); a second kernel merges the splits. Prefill (T >= 2, head_dim <= 128):
// tiled flash attention (attn_tiled_kernel). Query heads of one KV head read the same rows (GQA).
// Twin: kern::attention (kernels/cpu/nn_impl.h attn_block).
#include <algorithm>
#include <stdexcept>

#include "kernels/cuda/common.cuh"
#include "kernels/cuda/ops.h"

namespace edgenano::cuk {
inline namespace SIMT_IMPL {

namespace {

constexpr int kMaxD = 256, kJ = kMaxD / 32, kWarps = 4;
constexpr int kKeysPerSplit = 256;

// Element i of head kvh's part of a cache row, as f32.
SIMT_DEVICE float kv_value(const uint8_t *row, int type, int64_t i) {
  if (type == T_F16) return simt::f16_to_f32(reinterpret_cast<const uint16_t *>(row)[i]);
  if (type == T_F32) return reinterpret_cast<const float *>(row)[i];
  const uint8_t *b = row + (i / QK) * sizeof(BlockQ8_0);  // Q8_0
  return load_f16(b) * float(int8_t(b[2 + i % QK]));
}

__global__ void __launch_bounds__(128)
    attn_split_kernel(kern::AttnParams p, int n_split, int per_split, float *part) {
  SIMT_SHARED(float, sm, kWarps *(kMaxD + 2));
  const int h = int(blockIdx.x), t = int(blockIdx.y), sp = int(blockIdx.z);
  const int warp = int(threadIdx.x >> 5), lane = int(threadIdx.x & 31);
  const int d = p.head_dim, kvh = h / (p.n_head / p.n_head_kv);
  const int n_keys = p.n_past + t + 1;  // causal
  const int s0 = sp * per_split, s1 = min(n_keys, s0 + per_split);
  float q[kJ], acc[kJ];
  const float *qrow = p.q + int64_t(t) * p.ldq + int64_t(h) * d;
  for (int j = 0; j < kJ; ++j) {
    const int i = lane + 32 * j;
    q[j] = i < d ? qrow[i] * p.scale : 0.f;
    acc[j] = 0.f;
  }
  float m = -INFINITY, l = 0.f;
  const int64_t off = int64_t(kvh) * d;
  for (int s = s0 + warp; s < s1; s += kWarps) {
    const uint8_t *krow = p.k + size_t(s) * p.kv_row_bytes;
    const uint8_t *vrow = p.v + size_t(s) * p.kv_row_bytes;
    float dot = 0.f;
    for (int j = 0; j < kJ; ++j) {
      const int i = lane + 32 * j;
      if (i < d) dot += q[j] * kv_value(krow, p.kv_type, off + i);
    }
    const float score = warp_sum(dot);
    const float m_new = fmaxf(m, score);
    const float corr = expf(m - m_new), e = expf(score - m_new);  // exp(-inf) = 0 at the start
    l = l * corr + e;
    for (int j = 0; j < kJ; ++j) {
      const int i = lane + 32 * j;
      if (i < d) acc[j] = acc[j] * corr + e * kv_value(vrow, p.kv_type, off + i);
    }
    m = m_new;
  }
  // merge the warps: (m, l, acc) of each to shared memory, then thread i sums element i
  for (int j = 0; j < kJ; ++j) {
    const int i = lane + 32 * j;
    if (i < d) sm[warp * (kMaxD + 2) + 2 + i] = acc[j];
  }
  if (lane == 0) sm[warp * (kMaxD + 2)] = m, sm[warp * (kMaxD + 2) + 1] = l;
  __syncthreads();
  float M = -INFINITY;
  for (int w = 0; w < kWarps; ++w) M = fmaxf(M, float(sm[w * (kMaxD + 2)]));
  float scale[kWarps], L = 0.f;
  for (int w = 0; w < kWarps; ++w) {
    const float mw = sm[w * (kMaxD + 2)];
    scale[w] = mw == -INFINITY ? 0.f : expf(mw - M);
    L += float(sm[w * (kMaxD + 2) + 1]) * scale[w];
  }
  float *out = part + ((int64_t(t) * p.n_head + h) * n_split + sp) * (d + 2);
  for (int i = int(threadIdx.x); i < d; i += int(blockDim.x)) {
    float a = 0.f;
    for (int w = 0; w < kWarps; ++w)
      if (scale[w] != 0.f) a += float(sm[w * (kMaxD + 2) + 2 + i]) * scale[w];
    out[2 + i] = a;
  }
  if (threadIdx.x == 0) out[0] = M, out[1] = L;
}

// ---- prefill: tiles of 16 queries of one head against tiles of 32 keys in shared memory ----
// A block per (head, 16 query tokens); each warp owns 4 of the queries. Per key tile, lane k
// scores key k (its K row from shared memory against the query row), the row's max and sum are
// warp reductions, and each lane accumulates its head_dim/32 output elements over the 32 keys
// (probabilities broadcast by shuffles). K and V are read once per 16 queries instead of once per
// query, and converted to f32 once per tile.
constexpr int kTq = 16, kTk = 32, kTiledMaxD = 128;
constexpr int kTiledMinT = 2;  // prefill; one query (decode) splits the keys instead

__global__ void __launch_bounds__(128) attn_tiled_kernel(kern::AttnParams p) {
  SIMT_SHARED(float, qs, kTq *kTiledMaxD);
  SIMT_SHARED(float, ks, kTk *(kTiledMaxD + 1));  // padded: lanes read different banks
  SIMT_SHARED(float, vs, kTk *kTiledMaxD);
  const int h = int(blockIdx.x), t0 = int(blockIdx.y) * kTq, tid = int(threadIdx.x);
  const int warp = tid >> 5, lane = tid & 31, d = p.head_dim, kvh = h / (p.n_head / p.n_head_kv);
  const int nq = min(kTq, p.T - t0);
  const int64_t off = int64_t(kvh) * d;
  for (int e = tid; e < kTq * d; e += 128) {
    const int r = e / d, i = e % d;
    qs[r * kTiledMaxD + i] =
        r < nq ? p.q[int64_t(t0 + r) * p.ldq + int64_t(h) * d + i] * p.scale : 0.f;
  }
  float m[4], l[4], acc[4][kTiledMaxD / 32];
  for (int r = 0; r < 4; ++r) {
    m[r] = -INFINITY, l[r] = 0.f;
    for (int j = 0; j < kTiledMaxD / 32; ++j) acc[r][j] = 0.f;
  }
  const int n_keys = p.n_past + t0 + nq;  // keys the block's last query sees
  for (int s0 = 0; s0 < n_keys; s0 += kTk) {
    __syncthreads();  // the previous tile is consumed (and qs written, the first time)
    for (int e = tid; e < kTk * d; e += 128) {
      const int k = e / d, i = e % d, s = s0 + k;
      const bool in = s < n_keys;
      ks[k * (kTiledMaxD + 1) + i] =
          in ? kv_value(p.k + size_t(s) * p.kv_row_bytes, p.kv_type, off + i) : 0.f;
      vs[k * kTiledMaxD + i] =
          in ? kv_value(p.v + size_t(s) * p.kv_row_bytes, p.kv_type, off + i) : 0.f;
    }
    __syncthreads();
    for (int r = 0; r < 4; ++r) {
      const int row = warp * 4 + r;
      if (row >= nq) break;                  // warp-uniform
      const int last = p.n_past + t0 + row;  // causal: keys [0, last]
      if (s0 > last) continue;
      const int s = s0 + lane;
      float score = -INFINITY;
      if (s <= last) {
        float dot = 0.f;
        for (int i = 0; i < d; ++i)
          dot += qs[row * kTiledMaxD + i] * ks[lane * (kTiledMaxD + 1) + i];
        score = dot;
      }
      const float m_new = fmaxf(m[r], warp_max(score));
      const float corr = expf(m[r] - m_new), e = s <= last ? expf(score - m_new) : 0.f;
      l[r] = l[r] * corr + warp_sum(e);
      m[r] = m_new;
      for (int j = 0; j < kTiledMaxD / 32; ++j) acc[r][j] *= corr;
      for (int k = 0; k < kTk; ++k) {
        const float pk = __shfl_sync(kFull, e, k);
        for (int j = 0; j < kTiledMaxD / 32; ++j) {
          const int i = lane + 32 * j;
          if (i < d) acc[r][j] += pk * vs[k * kTiledMaxD + i];
        }
      }
    }
  }
  for (int r = 0; r < 4; ++r) {
    const int row = warp * 4 + r;
    if (row >= nq) break;
    const float inv = 1.f / l[r];
    float *o = p.out + int64_t(t0 + row) * p.ldo + int64_t(h) * d;
    for (int j = 0; j < kTiledMaxD / 32; ++j) {
      const int i = lane + 32 * j;
      if (i < d) o[i] = acc[r][j] * inv;
    }
  }
}

// A block per (query token, head): the splits' partial softmaxes merged, divided by the sum.
__global__ void attn_combine_kernel(kern::AttnParams p, int n_split, const float *part) {
  const int h = int(blockIdx.x), t = int(blockIdx.y), d = p.head_dim;
  const float *pt = part + (int64_t(t) * p.n_head + h) * n_split * (d + 2);
  float M = -INFINITY;
  for (int s = 0; s < n_split; ++s) M = fmaxf(M, pt[s * (d + 2)]);
  float L = 0.f;
  for (int s = 0; s < n_split; ++s) {
    const float ms = pt[s * (d + 2)];
    if (ms != -INFINITY) L += pt[s * (d + 2) + 1] * expf(ms - M);
  }
  const float inv = 1.f / L;
  for (int i = int(threadIdx.x); i < d; i += int(blockDim.x)) {
    float a = 0.f;
    for (int s = 0; s < n_split; ++s) {
      const float ms = pt[s * (d + 2)];
      if (ms != -INFINITY) a += pt[s * (d + 2) + 2 + i] * expf(ms - M);
    }
    p.out[int64_t(t) * p.ldo + int64_t(h) * d + i] = a * inv;
  }
}

int splits(const kern::AttnParams &p) {
  const int S = p.n_past + p.T;
  return std::max(1, (S + kKeysPerSplit - 1) / kKeysPerSplit);
}

}  // namespace

size_t attention_scratch_bytes(const kern::AttnParams &p) {
  return size_t(p.T) * size_t(p.n_head) * size_t(splits(p)) * size_t(p.head_dim + 2) *
         sizeof(float);
}

void attention(const kern::AttnParams &p, void *scratch, Stream s) {
  if (p.n_head_kv <= 0 || p.n_head % p.n_head_kv)
    throw std::invalid_argument("attention: n_head must be a multiple of n_head_kv");
  if (p.kv_type == T_Q8_0 && p.head_dim % QK)
    throw std::invalid_argument("attention: a q8_0 cache needs head_dim % 32 == 0");
  if (p.head_dim > kMaxD) throw std::invalid_argument("cuda attention: head_dim must be <= 256");
  if (p.T <= 0) return;
  if (p.T >= kTiledMinT && p.head_dim <= kTiledMaxD) {
    simt::launch<attn_tiled_kernel>(dim3(unsigned(p.n_head), unsigned((p.T + kTq - 1) / kTq)),
                                    dim3(128), s, p);
    return;
  }
  const int ns = splits(p);
  auto *part = static_cast<float *>(scratch);
  simt::launch<attn_split_kernel>(dim3(unsigned(p.n_head), unsigned(p.T), unsigned(ns)),
                                  dim3(32 * kWarps), s, p, ns, kKeysPerSplit, part);
  const int threads = std::min(256, (p.head_dim + 31) / 32 * 32);
  simt::launch<attn_combine_kernel>(dim3(unsigned(p.n_head), unsigned(p.T)), dim3(threads), s, p,
                                    ns, static_cast<const float *>(part));
}

}  // namespace SIMT_IMPL
}  // namespace edgenano::cuk
