// The kernels' entry points as a table of plain function pointers on the default stream, one per
// build: emu_ops() (the SIMT emulator, always) and cuda_ops() (nvcc builds only). The test
// bindings (bind/cuda_emu.cpp) are written once over it and bound as _C.cuda_emu and _C.cuda_dev.
#pragma once
#include <cstddef>
#include <cstdint>

#include "kernels/params.h"

namespace edgenano::cuk {

struct OpsTable {
  const char *name;
  void *(*alloc)(size_t n);
  void (*free)(void *p);
  void (*htod)(void *d, const void *h, size_t n);
  void (*dtoh)(void *h, const void *d, size_t n);
  size_t (*matmul_scratch_bytes)(int type, int64_t n_in, int T);
  void (*matvec)(const kern::Weight &w, const float *x, int64_t ldx, float *y, int64_t ldy, int T,
                 bool acc, void *scratch);
  void (*gemm)(const kern::Weight &w, const float *x, int64_t ldx, float *y, int64_t ldy, int T,
               bool acc);
  void (*embed)(const kern::Weight &table, const int32_t *ids, int T, float *x, int64_t ldx);
  void (*rmsnorm)(const float *x, int64_t ldx, const float *w, float *y, int64_t ldy, int T,
                  int64_t n, float eps);
  void (*gated_rmsnorm)(const float *y, int64_t ldy, const float *z, int64_t ldz, const float *w,
                        float *out, int64_t ldo, int T, int64_t D, int G, float eps);
  void (*relu2)(float *x, int64_t ldx, int T, int64_t n);
  void (*softplus_bias)(const float *x, int64_t ldx, const float *bias, float *out, int64_t ldo,
                        int T, int H);
  void (*causal_conv)(const kern::ConvParams &p);
  size_t (*ssm_scan_scratch_bytes)(const kern::ScanParams &p, int chunk);
  void (*ssm_scan)(const kern::ScanParams &p, int chunk, void *scratch);
  void (*kv_store)(const float *src, int64_t lds, int T, int64_t width, int kv_type, uint8_t *dst);
  void (*gather_rows)(const float *src, int64_t lds, const int32_t *rows, int n_rows, int64_t n,
                      float *dst, int64_t ldd);
  void (*scatter_add_rows)(const float *src, int64_t lds, const int32_t *rows, const float *scale,
                           int n_rows, int64_t n, float *dst, int64_t ldd);
  size_t (*attention_scratch_bytes)(const kern::AttnParams &p);
  void (*attention)(const kern::AttnParams &p, void *scratch);
};

const OpsTable &emu_ops();   // kernels/cuda/emu.cpp
const OpsTable &cuda_ops();  // kernels/cuda/ops_table.cu (EDGENANO_HAS_CUDA builds)

}  // namespace edgenano::cuk

// The table of the including build (simt::host or simt::cuda), for emu.cpp and ops_table.cu.
#if defined(EDGENANO_CUK_MAKE_TABLE)
#include "kernels/cuda/ops.h"

namespace edgenano::cuk {
inline namespace SIMT_IMPL {
inline OpsTable make_ops_table(const char *name) {
  OpsTable t{};
  t.name = name;
  t.alloc = [](size_t n) { return simt::dev_alloc(n); };
  t.free = [](void *p) { simt::dev_free(p); };
  t.htod = [](void *d, const void *h, size_t n) { simt::copy_htod(d, h, n, Stream{}); };
  t.dtoh = [](void *h, const void *d, size_t n) { simt::copy_dtoh(h, d, n, Stream{}); };
  t.matmul_scratch_bytes = &matmul_scratch_bytes;
  t.matvec = [](const kern::Weight &w, const float *x, int64_t ldx, float *y, int64_t ldy, int T,
                bool acc, void *scratch) { matvec(w, x, ldx, y, ldy, T, acc, scratch, Stream{}); };
  t.gemm = [](const kern::Weight &w, const float *x, int64_t ldx, float *y, int64_t ldy, int T,
              bool acc) { gemm(w, x, ldx, y, ldy, T, acc, Stream{}); };
  t.embed = [](const kern::Weight &tb, const int32_t *ids, int T, float *x, int64_t ldx) {
    embed(tb, ids, T, x, ldx, Stream{});
  };
  t.rmsnorm = [](const float *x, int64_t ldx, const float *w, float *y, int64_t ldy, int T,
                 int64_t n, float eps) { rmsnorm(x, ldx, w, y, ldy, T, n, eps, Stream{}); };
  t.gated_rmsnorm = [](const float *y, int64_t ldy, const float *z, int64_t ldz, const float *w,
                       float *out, int64_t ldo, int T, int64_t D, int G, float eps) {
    gated_rmsnorm(y, ldy, z, ldz, w, out, ldo, T, D, G, eps, Stream{});
  };
  t.relu2 = [](float *x, int64_t ldx, int T, int64_t n) { relu2(x, ldx, T, n, Stream{}); };
  t.softplus_bias = [](const float *x, int64_t ldx, const float *bias, float *out, int64_t ldo,
                       int T, int H) { softplus_bias(x, ldx, bias, out, ldo, T, H, Stream{}); };
  t.causal_conv = [](const kern::ConvParams &p) { causal_conv(p, Stream{}); };
  t.ssm_scan_scratch_bytes = &ssm_scan_scratch_bytes;
  t.ssm_scan = [](const kern::ScanParams &p, int chunk, void *scratch) {
    ssm_scan(p, chunk, scratch, Stream{});
  };
  t.kv_store = [](const float *src, int64_t lds, int T, int64_t width, int kv_type, uint8_t *dst) {
    kv_store(src, lds, T, width, kv_type, dst, Stream{});
  };
  t.gather_rows = [](const float *src, int64_t lds, const int32_t *rows, int n_rows, int64_t n,
                     float *dst, int64_t ldd) {
    gather_rows(src, lds, rows, n_rows, n, dst, ldd, Stream{});
  };
  t.scatter_add_rows = [](const float *src, int64_t lds, const int32_t *rows, const float *scale,
                          int n_rows, int64_t n, float *dst, int64_t ldd) {
    scatter_add_rows(src, lds, rows, scale, n_rows, n, dst, ldd, Stream{});
  };
  t.attention_scratch_bytes = &attention_scratch_bytes;
  t.attention = [](const kern::AttnParams &p, void *scratch) { attention(p, scratch, Stream{}); };
  return t;
}
}  // namespace SIMT_IMPL
}  // namespace edgenano::cuk
#endif
