// The kernels' parameter structs: raw pointers (into a backend's buffers), sizes and strides.
// Shared by every kernel set (kernels/cpu now, kernels/cuda next) and the backend interface.
#pragma once
#include <cstddef>
#include <cstdint>

#include "ggml/format.h"

namespace edgenano::kern {

// A weight matrix as stored in GGUF: n_out rows of n_in values, each row row_bytes long.
struct Weight {
  int type = ggml::T_F32;
  const uint8_t *data = nullptr;  // n_out * row_bytes bytes
  int64_t n_in = 0;               // ne0: the reduced dimension
  int64_t n_out = 0;              // ne1: output features
  size_t row_bytes = 0;
  // The rows in the CPU row-lane dots' 16-row interleave (kern::pack_rows16), not ggml's layout:
  // only the CPU backend's matmul reads such a weight.
  bool packed = false;
};

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

struct AttnParams {
  int T = 0;       // new query tokens, at positions n_past .. n_past+T-1
  int n_past = 0;  // tokens before them; the cache holds n_past + T rows
  int n_head = 0, n_head_kv = 0, head_dim = 0;
  const float *q = nullptr;  // q[t*ldq + h*head_dim + i]
  int64_t ldq = 0;
  const uint8_t *k = nullptr, *v = nullptr;  // cache rows of n_head_kv*head_dim values
  size_t kv_row_bytes = 0;
  int kv_type = ggml::T_F16;  // T_F16, T_Q8_0 or T_F32
  float scale = 1.f;
  float *out = nullptr;  // out[t*ldo + h*head_dim + i]
  int64_t ldo = 0;
};

}  // namespace edgenano::kern
