// The CUDA backend, written once over simt/simt.h and kernels/cuda/ops.h: included by
// cuda_backend.cu (nvcc: the "cuda" backend on a GPU) and by cuda_emu_backend.cpp (host compiler:
// the "cuda_emu" backend, the same code on the SIMT emulator, which CI runs against "cpu").
// Device memory for weights (uploaded once), state and scratch; one stream; copies stay on the
// device; export and import go through the host (backend.h's download / upload).
// The model hands two host pointers to operations: the token ids of embed and the logits that
// matmul writes; both are staged through device scratch here.
#pragma once
#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "backend/backend.h"
#include "kernels/cuda/ops.h"
#include "simt/simt.h"

namespace edgenano::backend {
inline namespace SIMT_IMPL {

class DevBuffer final : public Buffer {
 public:
  DevBuffer(size_t nbytes, simt::Stream s) : Buffer(simt::dev_alloc(nbytes), nbytes) {
    simt::memset_zero(data_, nbytes, s);
  }
  ~DevBuffer() override { simt::dev_free(data_); }
};

// Device scratch that grows on demand (the old one is freed after the stream drains); while a
// graph is being recorded it cannot (GraphUnrecordable: the step runs eagerly and grows it).
class Scratch {
 public:
  void *get(size_t nbytes, simt::Stream s, bool recording = false) {
    if (nbytes > size_) {
      if (recording) throw GraphUnrecordable("device scratch must grow");
      simt::synchronize(s);
      simt::dev_free(p_);
      p_ = simt::dev_alloc(nbytes);
      size_ = nbytes;
    }
    return p_;
  }
  ~Scratch() { simt::dev_free(p_); }

 private:
  void *p_ = nullptr;
  size_t size_ = 0;
};

// FitsFn: throws when nbytes of weights cannot fit on the device (message with both figures).
template <class FitsFn>
class SimtBackend final : public Backend {
 public:
  SimtBackend(const char *name, simt::Stream s, FitsFn fits) : name_(name), s_(s), fits_(fits) {
    const char *g = std::getenv("EDGENANO_CUDA_GRAPHS");  // "0": every step eagerly
    if (g && std::string(g) == "0") mode_ = 0;
  }
  ~SimtBackend() override {
    try {
      if (recording_) graph_abort();
      simt::synchronize(s_);
    } catch (...) {
    }
    simt::graph_exec_destroy(exec_);
  }
  const char *name() const override { return name_; }
  int n_threads() const override { return 1; }

  BufferPtr alloc(size_t nbytes) override { return std::make_unique<DevBuffer>(nbytes, s_); }
  BufferPtr map_weights(const void *host, size_t nbytes) override {
    fits_(nbytes);
    auto b = std::make_unique<DevBuffer>(nbytes, s_);
    // In 256 MiB pieces, with a progress line for big files (a 9B model is ~5 GiB).
    constexpr size_t kPiece = size_t(256) << 20;
    const bool show = nbytes >= (size_t(1) << 30);
    for (size_t off = 0; off < nbytes; off += kPiece) {
      const size_t n = std::min(kPiece, nbytes - off);
      simt::copy_htod(b->as<uint8_t>() + off, static_cast<const uint8_t *>(host) + off, n, s_);
      if (show)
        std::fprintf(stderr, "\redgenano: uploading weights %zu / %zu MiB", (off + n) >> 20,
                     nbytes >> 20);
    }
    if (show) std::fprintf(stderr, "\n");
    return b;
  }
  void upload(Buffer &dst, size_t offset, const void *src, size_t nbytes) override {
    simt::copy_htod(dst.as<uint8_t>() + offset, src, nbytes, s_);
  }
  void download(const Buffer &src, size_t offset, void *dst, size_t nbytes) override {
    simt::copy_dtoh(dst, src.as<const uint8_t>() + offset, nbytes, s_);
  }
  void copy(const Buffer &src, size_t src_offset, Buffer &dst, size_t dst_offset,
            size_t nbytes) override {
    simt::copy_dtod(dst.as<uint8_t>() + dst_offset, src.as<const uint8_t>() + src_offset, nbytes,
                    s_);
  }

  void matmul(const Weight &w, const float *x, int64_t ldx, float *y, int64_t ldy, int T,
              bool accumulate) override {
    void *act = act_.get(cuk::matmul_scratch_bytes(w.type, w.n_in, T), s_, recording_);
    if (simt::is_device_ptr(y)) {
      cuk::matmul(w, x, ldx, y, ldy, T, accumulate, act, s_);
      return;
    }
    // host y (the logits): rows of n_out through device scratch
    const size_t row = size_t(w.n_out) * sizeof(float);
    auto *dy = static_cast<float *>(out_.get(row * size_t(T), s_, recording_));
    if (accumulate)
      for (int t = 0; t < T; ++t)
        simt::copy_htod(dy + int64_t(t) * w.n_out, y + int64_t(t) * ldy, row, s_);
    cuk::matmul(w, x, ldx, dy, w.n_out, T, accumulate, act, s_);
    for (int t = 0; t < T; ++t)
      simt::copy_dtoh(y + int64_t(t) * ldy, dy + int64_t(t) * w.n_out, row, s_);
  }
  void embed(const Weight &table, const int32_t *ids, int T, float *x, int64_t ldx) override {
    const int32_t *d_ids = ids;
    if (!simt::is_device_ptr(ids)) {
      auto *p = static_cast<int32_t *>(ids_.get(size_t(T) * sizeof(int32_t), s_, recording_));
      simt::copy_htod(p, ids, size_t(T) * sizeof(int32_t), s_);
      d_ids = p;
    }
    cuk::embed(table, d_ids, T, x, ldx, s_);
  }
  void rmsnorm(const float *x, int64_t ldx, const float *w, float *y, int64_t ldy, int T, int64_t n,
               float eps) override {
    cuk::rmsnorm(x, ldx, w, y, ldy, T, n, eps, s_);
  }
  void gated_rmsnorm(const float *y, int64_t ldy, const float *z, int64_t ldz, const float *w,
                     float *out, int64_t ldo, int T, int64_t D, int G, float eps) override {
    cuk::gated_rmsnorm(y, ldy, z, ldz, w, out, ldo, T, D, G, eps, s_);
  }
  void relu2(float *x, int64_t ldx, int T, int64_t n) override { cuk::relu2(x, ldx, T, n, s_); }
  void softplus_bias(const float *x, int64_t ldx, const float *bias, float *out, int64_t ldo, int T,
                     int H) override {
    cuk::softplus_bias(x, ldx, bias, out, ldo, T, H, s_);
  }
  void causal_conv(const ConvParams &p) override { cuk::causal_conv(p, s_); }
  // The recurrence for decode, the chunked SSD form for prefill (chunk > 0), as kern::ssm_scan.
  void ssm_scan(const ScanParams &p, int chunk) override {
    cuk::ssm_scan(p, chunk, scan_.get(cuk::ssm_scan_scratch_bytes(p, chunk), s_, recording_), s_);
  }
  void kv_store(const float *src, int64_t lds, int T, int64_t width, int kv_type,
                uint8_t *dst) override {
    cuk::kv_store(src, lds, T, width, kv_type, dst, s_);
  }
  void attention(const AttnParams &p) override {
    cuk::attention(p, attn_.get(cuk::attention_scratch_bytes(p), s_, recording_), s_);
  }

  // Decode-step graphs: every step is recorded anew (its KV length and cache rows are baked into
  // the recorded kernels' parameters) and the instantiated graph updated in place, so a step
  // costs one graph launch instead of a launch per kernel (llama.cpp's CUDA backend does the
  // same); a new instantiation only when the recorded operations differ.
  bool graph_begin() override {
    if (mode_ == 0 || recording_) return false;
    simt::capture_begin(s_);
    recording_ = true;
    return true;
  }
  void graph_launch() override {
    if (!recording_) throw std::logic_error("graph_launch without graph_begin");
    recording_ = false;
    simt::Graph g = simt::capture_end(s_);
    try {
      const bool stale = mode_ == 2 && exec_;  // the planted bug of the tests: no update
      if (!stale) {
        if (exec_ && simt::graph_exec_update(exec_, g)) {
          ++stats_.updated;
        } else {
          simt::graph_exec_destroy(exec_);
          exec_ = nullptr;
          exec_ = simt::graph_instantiate(g);
          ++stats_.instantiated;
        }
      }
      simt::graph_destroy(g);
    } catch (...) {
      simt::graph_destroy(g);
      throw;
    }
    simt::graph_launch(exec_, s_);
    ++stats_.captured;
  }
  void graph_abort() override {
    if (!recording_) return;
    recording_ = false;
    simt::graph_destroy(simt::capture_end(s_));
    ++stats_.aborted;
  }
  GraphStats graph_stats() const override { return stats_; }
  void set_graph_mode(int mode) override {
    if (mode < 0 || mode > 2) throw std::invalid_argument("graph mode must be 0, 1 or 2");
    mode_ = mode;
  }

  // Routed experts: the host's row indices and scales staged through device scratch.
  void gather_rows(const float *src, int64_t lds, const int32_t *rows, int n_rows, int64_t n,
                   float *dst, int64_t ldd) override {
    const auto *d_rows = stage(rows, n_rows);
    cuk::gather_rows(src, lds, d_rows, n_rows, n, dst, ldd, s_);
  }
  void scatter_add_rows(const float *src, int64_t lds, const int32_t *rows, const float *scale,
                        int n_rows, int64_t n, float *dst, int64_t ldd) override {
    const auto *d_rows = stage(rows, n_rows, scale);
    cuk::scatter_add_rows(src, lds, d_rows, reinterpret_cast<const float *>(d_rows + n_rows),
                          n_rows, n, dst, ldd, s_);
  }

 private:
  // rows (then scale, when given) in device scratch; the copy completes before this returns.
  const int32_t *stage(const int32_t *rows, int n_rows, const float *scale = nullptr) {
    const size_t nb = size_t(n_rows) * sizeof(int32_t);
    auto *d = static_cast<int32_t *>(rows_.get(2 * nb, s_, recording_));
    simt::copy_htod(d, rows, nb, s_);
    if (scale) simt::copy_htod(d + n_rows, scale, nb, s_);
    return d;
  }

  const char *name_;
  simt::Stream s_;
  FitsFn fits_;
  Scratch act_, out_, ids_, attn_, scan_, rows_;
  bool recording_ = false;
  int mode_ = 1;
  simt::GraphExec exec_ = nullptr;
  GraphStats stats_;
};

}  // namespace SIMT_IMPL
}  // namespace edgenano::backend
