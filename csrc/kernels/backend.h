// The dispatch point between the model and its kernels. The model's forward calls only these
// operations; CpuBackend runs them with the CPU kernels of this directory, and a CUDA backend
// would implement the same interface (with these CPU kernels as its reference).
#pragma once
#include <memory>
#include <string>
#include <vector>

#include "kernels/matmul.h"
#include "kernels/nn.h"
#include "kernels/threadpool.h"

namespace edgenano::kern {

class Backend {
 public:
  virtual ~Backend() = default;
  virtual const char *name() const = 0;
  virtual int n_threads() const = 0;
  // y (=, or += when accumulate) x W^T; see kern::matmul.
  virtual void matmul(const Weight &w, const float *x, int64_t ldx, float *y, int64_t ldy, int T,
                      bool accumulate) = 0;
  virtual void embed(const Weight &table, const int32_t *ids, int T, float *x, int64_t ldx) = 0;
  virtual void rmsnorm(const float *x, int64_t ldx, const float *w, float *y, int64_t ldy, int T,
                       int64_t n, float eps) = 0;
  virtual void gated_rmsnorm(const float *y, int64_t ldy, const float *z, int64_t ldz,
                             const float *w, float *out, int64_t ldo, int T, int64_t D, int G,
                             float eps) = 0;
  virtual void relu2(float *x, int64_t ldx, int T, int64_t n) = 0;
  virtual void softplus_bias(const float *x, int64_t ldx, const float *bias, float *out,
                             int64_t ldo, int T, int H) = 0;
  virtual void causal_conv(const ConvParams &p) = 0;
  virtual void ssm_scan(const ScanParams &p, int chunk) = 0;
  virtual void kv_store(const float *src, int64_t lds, int T, int64_t width, int kv_type,
                        uint8_t *dst) = 0;
  virtual void attention(const AttnParams &p) = 0;
};

// Time spent per operation, from a profiling backend. Matmuls are keyed by weight type and by
// decode (one token) or batch, with the weight bytes they read.
struct ProfileEntry {
  std::string op;
  int64_t calls = 0;
  double seconds = 0;
  double bytes = 0;  // weight bytes read (matmuls)
  double flops = 0;  // multiply-adds x 2 (matmuls)
};

std::unique_ptr<Backend> make_cpu_backend(int n_threads);

// A Backend that forwards to `inner` and, while enabled, times every call (wall clock; each
// operation already waits for its threads). Disabled, it costs one branch per operation.
class ProfilingBackend : public Backend {
 public:
  virtual void set_enabled(bool on) = 0;
  virtual bool enabled() const = 0;
  virtual std::vector<ProfileEntry> profile() const = 0;
  virtual void reset_profile() = 0;
};
std::unique_ptr<ProfilingBackend> make_profiling_backend(std::unique_ptr<Backend> inner);

}  // namespace edgenano::kern
