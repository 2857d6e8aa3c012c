// CpuBackend: host memory (the weights used in place from the file mapping) and the kernels of
// kernels/cpu on one thread pool.
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <new>

#include "backend/backend.h"
#include "kernels/cpu/matmul.h"
#include "kernels/cpu/nn.h"
#include "kernels/cpu/threadpool.h"

namespace edgenano::backend {

namespace {

// 64-byte aligned host memory, zero-filled; or, for weights, 2 MiB aligned, on huge pages where
// the kernel gives them (decode reads every weight once a token: a TLB miss every 4 KiB
// otherwise), and not filled.
class HostBuffer final : public Buffer {
 public:
  explicit HostBuffer(size_t nbytes, bool weights = false) : Buffer(nullptr, nbytes) {
    if (!nbytes) return;
    const size_t align = weights ? size_t(2) << 20 : 64;
    const size_t size = (nbytes + align - 1) / align * align;
    data_ = std::aligned_alloc(align, size);
    if (!data_) throw std::bad_alloc();
    if (weights)
      madvise(data_, size, MADV_HUGEPAGE);
    else
      std::memset(data_, 0, nbytes);
  }
  ~HostBuffer() override { std::free(data_); }
};

// Host memory someone else owns (the model's file mapping).
class HostView final : public Buffer {
 public:
  HostView(const void *data, size_t nbytes) : Buffer(const_cast<void *>(data), nbytes) {}
};

// MemAvailable from /proc/meminfo in bytes (0 where it cannot be read).
size_t available_memory() {
  std::FILE *f = std::fopen("/proc/meminfo", "r");
  if (!f) return 0;
  char line[256];
  size_t kb = 0;
  while (std::fgets(line, sizeof line, f))
    if (std::sscanf(line, "MemAvailable: %zu kB", &kb) == 1) break;
  std::fclose(f);
  return kb << 10;
}

class CpuBackend final : public Backend {
 public:
  explicit CpuBackend(int n_threads) : pool_(n_threads) {}
  const char *name() const override { return "cpu"; }
  int n_threads() const override { return pool_.size(); }

  BufferPtr alloc(size_t nbytes) override { return std::make_unique<HostBuffer>(nbytes); }
  BufferPtr map_weights(const void *host, size_t nbytes) override {
    return std::make_unique<HostView>(host, nbytes);
  }
  // Q4_0 / Q5_0 / Q8_0 / Q4_K in the row-lane dots' 16-row layout (kern::pack_rows16), where
  // this CPU's kernels read it: all of them in one buffer (on huge pages: one per matrix would
  // round each up to 2 MiB, 130 MB more for the ~130 small matrices of a widths/4 9B-v2), each
  // packed over the pool in slices of whole groups.
  BufferPtr pack_weights(const std::vector<PackItem> &items,
                         const std::function<void(const uint8_t *, size_t)> &done) override {
    const auto bytes = [](const PackItem &p) {
      return (size_t(p.w->n_out) * p.w->row_bytes * size_t(p.n_mats) + 63) / 64 * 64;
    };
    const auto wanted = [](const PackItem &p) {
      return p.w && p.w->data && !p.w->packed && p.w->n_out > 0 && p.n_mats > 0 &&
             kern::packable(p.w->type);
    };
    size_t total = 0;
    for (const PackItem &p : items) total += wanted(p) ? bytes(p) : 0;
    if (!total) return nullptr;
    // The copy is anonymous memory: where it would not fit beside what is in use, the weights
    // stay mapped from the file (which the page cache can always give back), rather than the
    // process being killed for memory.
    const size_t avail = available_memory();
    if (avail && total + (size_t(256) << 20) > avail) {
      std::fprintf(stderr,
                   "edgenano: %zu MiB of weights stay mapped from the file, not packed for the CPU "
                   "kernels: %zu MiB of memory is available (batches and prefill run slower)\n",
                   total >> 20, avail >> 20);
      return nullptr;
    }
    auto buf = std::make_unique<HostBuffer>(total, true);
    uint8_t *at = buf->as<uint8_t>();
    // A progress line on a terminal for big models (a 9B takes seconds).
    const bool show = total >= (size_t(1) << 30) && isatty(STDERR_FILENO);
    size_t shown = 0;
    for (const PackItem &p : items) {
      const size_t done_bytes = size_t(at - buf->as<uint8_t>());
      if (show && done_bytes >= shown) {  // every 256 MiB
        std::fprintf(stderr, "\redgenano: packing weights %zu / %zu MiB", done_bytes >> 20,
                     total >> 20);
        shown = done_bytes + (size_t(256) << 20);
      }
      if (!wanted(p)) continue;
      Weight &w = *p.w;
      const size_t mat = size_t(w.n_out) * w.row_bytes;
      constexpr int64_t kSlice = 16 * 64;  // rows a task
      const int64_t per_mat = (w.n_out + kSlice - 1) / kSlice;
      pool_.parallel_for(per_mat * p.n_mats, [&](int64_t it, int) {
        const size_t off = size_t(it / per_mat) * mat + size_t(it % per_mat * kSlice) * w.row_bytes;
        const int64_t rows = std::min(kSlice, w.n_out - it % per_mat * kSlice);
        kern::pack_rows16(w.type, w.n_in, w.data + off, at + off, rows);
        done(w.data + off, size_t(rows) * w.row_bytes);
      });
      w.data = at;
      w.packed = true;
      at += bytes(p);
    }
    if (show) std::fprintf(stderr, "\redgenano: packing weights %zu / %zu MiB\n", total >> 20,
                           total >> 20);
    return buf;
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
  void causal_conv_many(const ConvParams *p, int n) override { kern::causal_conv_many(p, n, pool_); }
  void ssm_scan_many(const ScanParams *p, int n) override { kern::ssm_scan_many(p, n, pool_); }
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
