// ProfilingBackend: a decorator over any Backend that attributes wall time to each operation
// (EDGENANO_PROFILE=1, or Model.profiling = True from Python). It answers "where does the time
// go" per op and per weight type without a sampling profiler, on CPU and, later, on CUDA alike.
#include <chrono>
#include <map>

#include "backend/backend.h"

namespace edgenano::backend {

namespace {

class Profiler final : public ProfilingBackend {
 public:
  explicit Profiler(std::unique_ptr<Backend> inner) : in_(std::move(inner)) {}

  const char *name() const override { return in_->name(); }
  int n_threads() const override { return in_->n_threads(); }
  void set_enabled(bool on) override { on_ = on; }
  bool enabled() const override { return on_; }
  void reset_profile() override { table_.clear(); }

  BufferPtr alloc(size_t nbytes) override { return in_->alloc(nbytes); }
  BufferPtr map_weights(const void *host, size_t nbytes) override {
    return in_->map_weights(host, nbytes);
  }
  BufferPtr pack_weights(const std::vector<PackItem> &items,
                         const std::function<void(const uint8_t *, size_t)> &done) override {
    return in_->pack_weights(items, done);
  }
  void upload(Buffer &dst, size_t offset, const void *src, size_t nbytes) override {
    in_->upload(dst, offset, src, nbytes);
  }
  void download(const Buffer &src, size_t offset, void *dst, size_t nbytes) override {
    in_->download(src, offset, dst, nbytes);
  }
  void copy(const Buffer &src, size_t src_offset, Buffer &dst, size_t dst_offset,
            size_t nbytes) override {
    in_->copy(src, src_offset, dst, dst_offset, nbytes);
  }
  // Graphs only while not timing: the profiler times each operation as it runs.
  bool graph_begin() override { return !on_ && in_->graph_begin(); }
  void graph_launch() override { in_->graph_launch(); }
  void graph_abort() override { in_->graph_abort(); }
  GraphStats graph_stats() const override { return in_->graph_stats(); }
  void set_graph_mode(int mode) override { in_->set_graph_mode(mode); }
  std::vector<ProfileEntry> profile() const override {
    std::vector<ProfileEntry> out;
    for (const auto &[op, e] : table_) out.push_back(e);
    return out;
  }

  void matmul(const Weight &w, const float *x, int64_t ldx, float *y, int64_t ldy, int T,
              bool accumulate) override {
    if (!on_) return in_->matmul(w, x, ldx, y, ldy, T, accumulate);
    const std::string op =
        std::string("matmul ") + ggml::type_name(w.type) + (T == 1 ? " decode" : " batch");
    timed(op, double(w.n_out) * double(w.row_bytes), 2.0 * double(w.n_out) * double(w.n_in) * T,
          [&] { in_->matmul(w, x, ldx, y, ldy, T, accumulate); });
  }
  void embed(const Weight &table, const int32_t *ids, int T, float *x, int64_t ldx) override {
    run("embed", [&] { in_->embed(table, ids, T, x, ldx); });
  }
  void rmsnorm(const float *x, int64_t ldx, const float *w, float *y, int64_t ldy, int T, int64_t n,
               float eps) override {
    run("rmsnorm", [&] { in_->rmsnorm(x, ldx, w, y, ldy, T, n, eps); });
  }
  void gated_rmsnorm(const float *y, int64_t ldy, const float *z, int64_t ldz, const float *w,
                     float *out, int64_t ldo, int T, int64_t D, int G, float eps) override {
    run("gated_rmsnorm", [&] { in_->gated_rmsnorm(y, ldy, z, ldz, w, out, ldo, T, D, G, eps); });
  }
  void relu2(float *x, int64_t ldx, int T, int64_t n) override {
    run("relu2", [&] { in_->relu2(x, ldx, T, n); });
  }
  void softplus_bias(const float *x, int64_t ldx, const float *bias, float *out, int64_t ldo, int T,
                     int H) override {
    run("softplus_bias", [&] { in_->softplus_bias(x, ldx, bias, out, ldo, T, H); });
  }
  void causal_conv(const ConvParams &p) override {
    run("causal_conv", [&] { in_->causal_conv(p); });
  }
  void causal_conv_many(const ConvParams *p, int n) override {
    run("causal_conv", [&] { in_->causal_conv_many(p, n); });
  }
  void ssm_scan_many(const ScanParams *p, int n) override {
    run("ssm_scan recurrent", [&] { in_->ssm_scan_many(p, n); });
  }
  void ssm_scan(const ScanParams &p, int chunk) override {
    run(chunk ? "ssm_scan chunked" : "ssm_scan recurrent", [&] { in_->ssm_scan(p, chunk); });
  }
  void kv_store(const float *src, int64_t lds, int T, int64_t width, int kv_type,
                uint8_t *dst) override {
    run("kv_store", [&] { in_->kv_store(src, lds, T, width, kv_type, dst); });
  }
  void attention(const AttnParams &p) override {
    run("attention", [&] { in_->attention(p); });
  }
  void gather_rows(const float *src, int64_t lds, const int32_t *rows, int n_rows, int64_t n,
                   float *dst, int64_t ldd) override {
    run("gather_rows", [&] { in_->gather_rows(src, lds, rows, n_rows, n, dst, ldd); });
  }
  void scatter_add_rows(const float *src, int64_t lds, const int32_t *rows, const float *scale,
                        int n_rows, int64_t n, float *dst, int64_t ldd) override {
    run("scatter_add_rows",
        [&] { in_->scatter_add_rows(src, lds, rows, scale, n_rows, n, dst, ldd); });
  }

 private:
  template <class F>
  void run(const char *op, F &&f) {
    if (!on_) return f();
    timed(op, 0, 0, f);
  }
  template <class F>
  void timed(const std::string &op, double bytes, double flops, F &&f) {
    const auto t0 = std::chrono::steady_clock::now();
    f();
    const std::chrono::duration<double> dt = std::chrono::steady_clock::now() - t0;
    ProfileEntry &e = table_[op];
    e.op = op;
    e.calls += 1;
    e.seconds += dt.count();
    e.bytes += bytes;
    e.flops += flops;
  }

  std::unique_ptr<Backend> in_;
  bool on_ = false;
  std::map<std::string, ProfileEntry> table_;  // the model runs one forward at a time
};

}  // namespace

std::unique_ptr<ProfilingBackend> make_profiling_backend(std::unique_ptr<Backend> inner) {
  return std::make_unique<Profiler>(std::move(inner));
}

}  // namespace edgenano::backend
