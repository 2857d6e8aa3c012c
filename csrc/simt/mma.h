// Tensor-core tiles through one interface both builds implement: D(16x16) = A(16x8) B(8x16) + C,
// inputs rounded to TF32, f32 accumulation, warp-collective (every lane of a full warp calls it).
// CUDA sm_80+: nvcuda::wmma (m16n16k8 tf32). Older GPUs (sm_75): plain FMAs from shared memory,
// each lane owning 8 elements of C (row lane/2, columns 8*(lane%2)..+8). Emulator: the same
// ownership; each lane reads (checked against the shared-memory shadow) the row of A and the
// columns of B its elements need.
// A is read row-major (element (r, k) at off + r*ld + k), B column-major ((k, n) at off + n*ld +
// k), C written row-major ((r, n) at off + r*ld + n); all three from __shared__ arrays.
#pragma once
#include "simt/simt.h"

#if defined(SIMT_CUDA)
#include <mma.h>
#endif

namespace simt {
inline namespace SIMT_IMPL {
namespace mma {

#if defined(SIMT_CUDA) && (!defined(__CUDA_ARCH__) || __CUDA_ARCH__ >= 800)
namespace w = nvcuda::wmma;
struct FragA {
  w::fragment<w::matrix_a, 16, 16, 8, w::precision::tf32, w::row_major> f;
};
struct FragB {
  w::fragment<w::matrix_b, 16, 16, 8, w::precision::tf32, w::col_major> f;
};
struct FragC {
  w::fragment<w::accumulator, 16, 16, 8, float> f;
};
SIMT_DEVICE void fill_zero(FragC &c) { w::fill_fragment(c.f, 0.f); }
template <class Arr>
SIMT_DEVICE void load_a(FragA &a, const Arr &s, int off, int ld) {
  w::load_matrix_sync(a.f, &s[off], unsigned(ld));
  for (int i = 0; i < a.f.num_elements; ++i) a.f.x[i] = w::__float_to_tf32(a.f.x[i]);
}
template <class Arr>
SIMT_DEVICE void load_b(FragB &b, const Arr &s, int off, int ld) {
  w::load_matrix_sync(b.f, &s[off], unsigned(ld));
  for (int i = 0; i < b.f.num_elements; ++i) b.f.x[i] = w::__float_to_tf32(b.f.x[i]);
}
SIMT_DEVICE void mma(FragC &d, const FragA &a, const FragB &b, const FragC &c) {
  w::mma_sync(d.f, a.f, b.f, c.f);
}
template <class Arr>
SIMT_DEVICE void store_c(Arr &s, int off, const FragC &c, int ld) {
  w::store_matrix_sync(&s[off], c.f, unsigned(ld), w::mem_row_major);
}

#elif defined(SIMT_CUDA)  // sm_75: no TF32 tensor cores
struct FragA {
  const float *p;
  int ld;
};
struct FragB {
  const float *p;
  int ld;
};
struct FragC {
  float v[8];
};
SIMT_DEVICE void fill_zero(FragC &c) {
  for (int i = 0; i < 8; ++i) c.v[i] = 0.f;
}
template <class Arr>
SIMT_DEVICE void load_a(FragA &a, const Arr &s, int off, int ld) {
  a.p = &s[off], a.ld = ld;
}
template <class Arr>
SIMT_DEVICE void load_b(FragB &b, const Arr &s, int off, int ld) {
  b.p = &s[off], b.ld = ld;
}
SIMT_DEVICE void mma(FragC &d, const FragA &a, const FragB &b, const FragC &c) {
  const int lane = threadIdx.x & 31, r = lane >> 1, n0 = (lane & 1) * 8;
  for (int j = 0; j < 8; ++j) {
    float acc = c.v[j];
    for (int k = 0; k < 8; ++k) acc += a.p[r * a.ld + k] * b.p[(n0 + j) * b.ld + k];
    d.v[j] = acc;
  }
}
template <class Arr>
SIMT_DEVICE void store_c(Arr &s, int off, const FragC &c, int ld) {
  const int lane = threadIdx.x & 31, r = lane >> 1, n0 = (lane & 1) * 8;
  for (int j = 0; j < 8; ++j) s[off + r * ld + n0 + j] = c.v[j];
}

#else  // the emulator: each lane holds what it needs for its own 8 elements of C
inline float to_tf32(float x) {  // cvt.rna.tf32.f32: nearest, ties away from zero
  uint32_t u;
  std::memcpy(&u, &x, 4);
  if ((u & 0x7f800000u) != 0x7f800000u) u = (u + 0x1000u) & ~0x1fffu;
  std::memcpy(&x, &u, 4);
  return x;
}
struct FragA {
  float v[8];  // row lane/2 of A
};
struct FragB {
  float v[8 * 8];  // columns 8*(lane%2)..+8 of B: (k, j) at k*8 + j
};
struct FragC {
  float v[8];  // row lane/2, columns 8*(lane%2)..+8
};
inline void fill_zero(FragC &c) {
  for (float &x : c.v) x = 0.f;
}
template <class Arr>
void load_a(FragA &a, const Arr &s, int off, int ld) {
  const int lane = simt::detail::lane_id();
  s.read_tile(size_t(off + (lane >> 1) * ld), 1, 8, ld, a.v, false);
  for (float &x : a.v) x = to_tf32(x);
}
template <class Arr>
void load_b(FragB &b, const Arr &s, int off, int ld) {
  const int lane = simt::detail::lane_id();
  s.read_tile(size_t(off + (lane & 1) * 8 * ld), 8, 8, ld, b.v, true);
  for (float &x : b.v) x = to_tf32(x);
}
inline void mma(FragC &d, const FragA &a, const FragB &b, const FragC &c) {
  __syncwarp();
  for (int j = 0; j < 8; ++j) {
    float acc = c.v[j];
    for (int k = 0; k < 8; ++k) acc += a.v[k] * b.v[k * 8 + j];
    d.v[j] = acc;
  }
}
template <class Arr>
void store_c(Arr &s, int off, const FragC &c, int ld) {
  __syncwarp();
  const int lane = simt::detail::lane_id(), r = lane >> 1, n0 = (lane & 1) * 8;
  s.write_tile(size_t(off + r * ld + n0), 1, 8, ld, c.v, false);
}
#endif

}  // namespace mma
}  // namespace SIMT_IMPL
}  // namespace simt
