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

// Device scratch that grows on demand (the old one is freed after the stream drains).
class Scratch {
 public:
  void *get(size_t nbytes, simt::Stream s) {
    if (nbytes > size_) {
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
  SimtBackend(const char *name, simt::Stream s, FitsFn fits) : name_(name), s_(s), fits_(fits) {}
  ~SimtBackend() override {
    try {
      simt::synchronize(s_);
    } catch (...) {
    }
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
    void *act = act_.get(cuk::matmul_scratch_bytes(w.type, w.n_in, T), s_);
    if (simt::is_device_ptr(y)) {
      cuk::matmul(w, x, ldx, y, ldy, T, accumulate, act, s_);
      return;
    }
    // host y (the logits): rows of n_out through device scratch
    const size_t row = size_t(w.n_out) * sizeof(float);
    auto *dy = static_cast<float *>(out_.get(row * size_t(T), s_));
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
      auto *p = static_cast<int32_t *>(ids_.get(size_t(T) * sizeof(int32_t), s_));
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
    cuk::ssm_scan(p, chunk, scan_.get(cuk::ssm_scan_scratch_bytes(p, chunk), s_), s_);
  }
  void kv_store(const float *src, int64_t lds, int T, int64_t width, int kv_type,
                uint8_t *dst) override {
    cuk::kv_store(src, lds, T, width, kv_type, dst, s_);
  }
  void attention(const AttnParams &p) override {
    cuk::attention(p, attn_.get(cuk::attention_scratch_bytes(p), s_), s_);
  }

 private:
  const char *name_;
  simt::Stream s_;
  FitsFn fits_;
  Scratch act_, out_, ids_, attn_, scan_;
};

}  // namespace SIMT_IMPL
}  // namespace edgenano::backend
