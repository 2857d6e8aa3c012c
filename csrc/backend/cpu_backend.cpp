// CpuBackend: host memory (the weights used in place from the file mapping) and the kernels of
// kernels/cpu on one thread pool.
#include <cstdlib>
#include <cstring>
#include <new>

#include "backend/backend.h"
#include "kernels/cpu/matmul.h"
#include "kernels/cpu/nn.h"
#include "kernels/cpu/threadpool.h"

namespace edgenano::backend {

namespace {

// 64-byte aligned, zero-filled host memory.
class HostBuffer final : public Buffer {
 public:
  explicit HostBuffer(size_t nbytes) : Buffer(nullptr, nbytes) {
    if (!nbytes) return;
    data_ = std::aligned_alloc(64, (nbytes + 63) / 64 * 64);
    if (!data_) throw std::bad_alloc();
    std::memset(data_, 0, nbytes);
  }
  ~HostBuffer() override { std::free(data_); }
};

// Host memory someone else owns (the model's file mapping).
class HostView final : public Buffer {
 public:
  HostView(const void *data, size_t nbytes) : Buffer(const_cast<void *>(data), nbytes) {}
};

class CpuBackend final : public Backend {
 public:
  explicit CpuBackend(int n_threads) : pool_(n_threads) {}
  const char *name() const override { return "cpu"; }
  int n_threads() const override { return pool_.size(); }

  BufferPtr alloc(size_t nbytes) override { return std::make_unique<HostBuffer>(nbytes); }
  BufferPtr map_weights(const void *host, size_t nbytes) override {
    return std::make_unique<HostView>(host, nbytes);
  }
  void upload(Buffer &dst, size_t offset, const void *src, size_t nbytes) override {
    if (nbytes) std::memcpy(dst.as<uint8_t>() + offset, src, nbytes);
  }
  void download(const Buffer &src, size_t offset, void *dst, size_t nbytes) override {
    if (nbytes) std::memcpy(dst, src.as<const uint8_t>() + offset, nbytes);
  }
  void copy(const Buffer &src, size_t src_offset, Buffer &dst, size_t dst_offset,
            size_t nbytes) override {
    if (nbytes)
      std::memcpy(dst.as<uint8_t>() + dst_offset, src.as<const uint8_t>() + src_offset, nbytes);
  }

  void matmul(const Weight &w, const float *x, int64_t ldx, float *y, int64_t ldy, int T,
              bool accumulate) override {
    kern::matmul(w, x, ldx, y, ldy, T, accumulate, pool_, ws_);
  }
  void embed(const Weight &table, const int32_t *ids, int T, float *x, int64_t ldx) override {
    for (int t = 0; t < T; ++t)
      kern::dequantize_row(table.type, table.data + size_t(ids[t]) * table.row_bytes, x + t * ldx,
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
  kern::ThreadPool pool_;
  kern::Workspace ws_;  // the kernels' own scratch (quantized activations, packed panels)
};

}  // namespace

std::unique_ptr<Backend> make_cpu_backend(int n_threads) {
  return std::make_unique<CpuBackend>(n_threads);
}

}  // namespace edgenano::backend
