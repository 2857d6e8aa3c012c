// The backend: what a model runs on. It allocates and owns the memory (weights, scratch,
// per-sequence state), moves bytes between it and the host, and runs the operations of a forward.
// The model holds only Buffers it got from its backend and pointers into them, which it passes
// back to the operations and never dereferences: on a GPU backend they are device addresses.
// CpuBackend (cpu_backend.cpp) runs the kernels of kernels/cpu; a CUDA backend implements the same
// interface over kernels/cuda, with the CPU backend as its reference.
#pragma once
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "kernels/params.h"

namespace edgenano::backend {

// Memory a backend owns: host memory on the CPU backend, device memory on a GPU one. Freed with
// the Buffer; a Buffer may outlive the Backend that made it.
class Buffer {
 public:
  virtual ~Buffer() = default;
  Buffer(const Buffer &) = delete;
  Buffer &operator=(const Buffer &) = delete;

  void *data() const { return data_; }  // for the backend's operations only
  size_t nbytes() const { return nbytes_; }
  template <class T>
  T *as() const {
    return static_cast<T *>(data_);
  }

 protected:
  Buffer(void *data, size_t nbytes) : data_(data), nbytes_(nbytes) {}
  void *data_;
  size_t nbytes_;
};
using BufferPtr = std::unique_ptr<Buffer>;

// The op parameter structs (kern::Weight, ConvParams, ScanParams, AttnParams) are the kernels'
// own: plain pointers, here always into this backend's Buffers.
using kern::AttnParams;
using kern::ConvParams;
using kern::ScanParams;
using kern::Weight;

// Decode-step graphs (a GPU backend's): what happened to the steps offered for capture.
struct GraphStats {
  int64_t captured = 0;      // steps recorded and launched as a graph
  int64_t instantiated = 0;  // graphs built from scratch (the first, or the nodes changed)
  int64_t updated = 0;       // instantiated graphs updated in place with a step's parameters
  int64_t aborted = 0;       // captures dropped (GraphUnrecordable): those steps ran eagerly
};
// Thrown by an operation while recording when it cannot be recorded now (device scratch must
// grow first, which needs the host); the caller drops the capture and runs the step eagerly.
struct GraphUnrecordable : std::runtime_error {
  using std::runtime_error::runtime_error;
};

class Backend {
 public:
  virtual ~Backend() = default;
  virtual const char *name() const = 0;
  virtual int n_threads() const = 0;

  // ---- memory ----
  // nbytes of zeros (a Buffer with no data for 0 bytes).
  virtual BufferPtr alloc(size_t nbytes) = 0;
  // The weights: nbytes of host memory (a read-only file mapping) that stays valid and unchanged
  // while the Buffer lives. The CPU backend uses them in place, a GPU backend uploads them once.
  virtual BufferPtr map_weights(const void *host, size_t nbytes) = 0;
  // Matmul weights (each n_mats matrices of w->n_out rows one after another: a stack of
  // experts) rearranged once, at load, into a layout this backend's kernels read faster: the new
  // bytes in a Buffer of their own, each w packed pointed into it; done(p, n) is told of each
  // range of the old bytes once it is no longer needed (from any thread). nullptr: nothing was
  // packed (the default).
  struct PackItem {
    Weight *w;
    int64_t n_mats;
  };
  virtual BufferPtr pack_weights(const std::vector<PackItem> &items,
                                 const std::function<void(const uint8_t *, size_t)> &done) {
    (void)items, (void)done;
    return nullptr;
  }
  virtual void upload(Buffer &dst, size_t offset, const void *src, size_t nbytes) = 0;
  virtual void download(const Buffer &src, size_t offset, void *dst, size_t nbytes) = 0;
  virtual void copy(const Buffer &src, size_t src_offset, Buffer &dst, size_t dst_offset,
                    size_t nbytes) = 0;
  // A new buffer of nbytes holding the first `used` bytes of src (a snapshot, or src grown).
  BufferPtr clone(const Buffer &src, size_t used, size_t nbytes) {
    BufferPtr b = alloc(nbytes);
    if (used) copy(src, 0, *b, 0, used);
    return b;
  }

  // ---- operations (pointers into this backend's buffers) ----
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
  // The same for n independent problems at once (the sequences of a batched decode step, each
  // with its own state; the scan as the recurrence), in one dispatch where the backend can: a
  // decode step of 4 sequences made 4 conv and 4 scan calls a Mamba layer. By default one by one.
  virtual void causal_conv_many(const ConvParams *p, int n) {
    for (int i = 0; i < n; ++i) causal_conv(p[i]);
  }
  virtual void ssm_scan_many(const ScanParams *p, int n) {
    for (int i = 0; i < n; ++i) ssm_scan(p[i], 0);
  }
  virtual void kv_store(const float *src, int64_t lds, int T, int64_t width, int kv_type,
                        uint8_t *dst) = 0;
  virtual void attention(const AttnParams &p) = 0;

  // ---- graphs of the decode step (the CUDA backend; elsewhere these are no-ops) ----
  // Start recording the operations that follow instead of running them; false: this backend
  // does not record (or graphs are off), run them as usual. Operands must be device memory
  // while recording: no host pointers (token ids, logits) and no upload / download.
  virtual bool graph_begin() { return false; }
  // Stop recording; update the instantiated graph in place with the recorded parameters (build a
  // new one when the operations differ) and launch it.
  virtual void graph_launch() {}
  // Stop recording and drop what was recorded (nothing of it ran).
  virtual void graph_abort() {}
  virtual GraphStats graph_stats() const { return {}; }
  // 1: graphs on (the default where supported), 0: off. 2, for tests only: a planted bug, the
  // first instantiated graph replayed without updates (stale parameters).
  virtual void set_graph_mode(int) {}

  // ---- routed experts (mixture-of-experts layers) ----
  // rows and scale are host arrays of n_rows entries. The defaults work on host-addressable
  // memory (the CPU backend's); a backend whose buffers the host cannot read overrides both.
  // dst[j] = src[rows[j]] (n values each): the tokens that chose one expert, made contiguous.
  virtual void gather_rows(const float *src, int64_t lds, const int32_t *rows, int n_rows,
                           int64_t n, float *dst, int64_t ldd) {
    for (int j = 0; j < n_rows; ++j)
      for (int64_t i = 0; i < n; ++i) dst[j * ldd + i] = src[rows[j] * lds + i];
  }
  // dst[rows[j]] += scale[j] * src[j] (n values each): one expert's outputs, weighted, added back
  // to the tokens that chose it.
  virtual void scatter_add_rows(const float *src, int64_t lds, const int32_t *rows,
                                const float *scale, int n_rows, int64_t n, float *dst,
                                int64_t ldd) {
    for (int j = 0; j < n_rows; ++j)
      for (int64_t i = 0; i < n; ++i) dst[rows[j] * ldd + i] += scale[j] * src[j * lds + i];
  }
};

std::unique_ptr<Backend> make_cpu_backend(int n_threads);

// Time spent per operation, from a profiling backend. Matmuls are keyed by weight type and by
// decode (one token) or batch, with the weight bytes they read.
struct ProfileEntry {
  std::string op;
  int64_t calls = 0;
  double seconds = 0;
  double bytes = 0;  // weight bytes read (matmuls)
  double flops = 0;  // multiply-adds x 2 (matmuls)
};

// A Backend that forwards to `inner` and, while enabled, times every operation (wall clock; each
// operation already waits for its threads). Disabled, it costs one branch per operation.
class ProfilingBackend : public Backend {
 public:
  virtual void set_enabled(bool on) = 0;
  virtual bool enabled() const = 0;
  virtual std::vector<ProfileEntry> profile() const = 0;
  virtual void reset_profile() = 0;
};
std::unique_ptr<ProfilingBackend> make_profiling_backend(std::unique_ptr<Backend> inner);

}  // namespace edgenano::backend
