// CpuBackend: the Backend interface on this directory's CPU kernels and one thread pool.
#include "kernels/backend.h"

namespace edgenano::kern {

namespace {

class CpuBackend final : public Backend {
 public:
  explicit CpuBackend(int n_threads) : pool_(n_threads) {}
  const char *name() const override { return "cpu"; }
  int n_threads() const override { return pool_.size(); }

  void matmul(const Weight &w, const float *x, int64_t ldx, float *y, int64_t ldy, int T,
              bool accumulate) override {
    kern::matmul(w, x, ldx, y, ldy, T, accumulate, pool_, ws_);
  }
  void embed(const Weight &table, const int32_t *ids, int T, float *x, int64_t ldx) override {
    for (int t = 0; t < T; ++t)
      dequantize_row(table.type, table.data + size_t(ids[t]) * table.row_bytes, x + t * ldx,
                     table.n_in);
  }
  void rmsnorm(const float *x, int64_t ldx, const float *w, float *y, int64_t ldy, int T, int64_t n,
               float eps) override {
    kern::rmsnorm(x, ldx, w, y, ldy, T, n, eps, pool_);
  }
  void gated_rmsnorm(const float *y, int64_t ldy, const float *z, int64_t ldz, const float *w,
                     float *out, int64_t ldo, int T, int64_t D, int G, float eps) override {
    kern::gated_rmsnorm(y, ldy, z, ldz, w, out, ldo, T, D, G, eps, pool_);
  }
  void relu2(float *x, int64_t ldx, int T, int64_t n) override { kern::relu2(x, ldx, T, n, pool_); }
  void softplus_bias(const float *x, int64_t ldx, const float *bias, float *out, int64_t ldo, int T,
                     int H) override {
    kern::softplus_bias(x, ldx, bias, out, ldo, T, H);
  }
  void causal_conv(const ConvParams &p) override { kern::causal_conv(p, pool_); }
  void ssm_scan(const ScanParams &p, int chunk) override { kern::ssm_scan(p, chunk, pool_, ws_); }
  void kv_store(const float *src, int64_t lds, int T, int64_t width, int kv_type,
                uint8_t *dst) override {
    kern::kv_store(src, lds, T, width, kv_type, dst);
  }
  void attention(const AttnParams &p) override { kern::attention(p, pool_, ws_); }

 private:
  ThreadPool pool_;
  Workspace ws_;
};

}  // namespace

std::unique_ptr<Backend> make_cpu_backend(int n_threads) {
  return std::make_unique<CpuBackend>(n_threads);
}

}  // namespace edgenano::kern
