// One kernel source, two builds: under nvcc (__CUDACC__) this is a thin layer over the CUDA
// runtime; under a host C++ compiler it is edgenano's SIMT emulator (simt_host.cpp), which runs a
// block's threads as fibers with checks a GPU would not give: divergent barriers, shared-memory
// races between barriers, reads of never-written shared memory, and out-of-bounds global accesses
// (device buffers sit against guard pages).
//
// Kernels use CUDA spellings (__global__, threadIdx, __syncthreads, __shfl_xor_sync, __dp4a, ...)
// plus: SIMT_SHARED(T, name, N) for block-shared arrays, simt::launch<kernel>(grid, block,
// stream, args...) for launches, simt::f16_to_f32 / f32_to_f16 / bf16_to_f32 for 16-bit floats, and
// simt/mma.h for the tensor cores. Everything lives in an inline namespace named after the build
// (simt::cuda or simt::host), so both builds link into one library without clashing.
#pragma once
#include <cstddef>
#include <cstdint>
#include <cstring>

#if defined(__CUDACC__)
#define SIMT_CUDA 1
#define SIMT_IMPL cuda
#include <cuda_runtime.h>
#include <cuda_fp16.h>

#include <stdexcept>
#include <string>

#define SIMT_SHARED(T, name, N) __shared__ __align__(32) T name[N]
#define SIMT_DEVICE __device__ __forceinline__

namespace simt {
inline namespace cuda {

using Stream = cudaStream_t;

inline void check(cudaError_t e, const char *what) {
  if (e != cudaSuccess) throw std::runtime_error(std::string(what) + ": " + cudaGetErrorString(e));
}

template <class... P, class... A>
void launch_kernel(void (*kernel)(P...), dim3 grid, dim3 block, Stream s, A &&...args) {
  if (grid.x == 0 || grid.y == 0 || grid.z == 0) return;
  kernel<<<grid, block, 0, s>>>(static_cast<P>(args)...);
  check(cudaGetLastError(), "kernel launch");
}
// The launch both builds use: simt::launch<kernel>(grid, block, stream, args...).
template <auto K, class... A>
void launch(dim3 grid, dim3 block, Stream s, A &&...args) {
  launch_kernel(K, grid, block, s, std::forward<A>(args)...);
}

inline void *dev_alloc(size_t n) {
  void *p = nullptr;
  if (!n) return p;
  const cudaError_t e = cudaMalloc(&p, n);
  if (e == cudaErrorMemoryAllocation) {  // say how much was asked for and how much is left
    cudaGetLastError();
    size_t free = 0, total = 0;
    cudaMemGetInfo(&free, &total);
    throw std::runtime_error("out of device memory: " + std::to_string(n >> 20) + " MiB needed, " +
                             std::to_string(free >> 20) + " MiB free of " +
                             std::to_string(total >> 20) + " MiB");
  }
  check(e, "cudaMalloc");
  return p;
}
inline void dev_free(void *p) {
  if (p) cudaFree(p);
}
inline void memset_zero(void *p, size_t n, Stream s) {
  if (n) check(cudaMemsetAsync(p, 0, n, s), "cudaMemsetAsync");
}
inline void copy_htod(void *d, const void *h, size_t n, Stream s) {
  if (n) check(cudaMemcpyAsync(d, h, n, cudaMemcpyHostToDevice, s), "cudaMemcpy H2D");
  check(cudaStreamSynchronize(s), "cudaStreamSynchronize");  // h may be freed by the caller
}
inline void copy_dtoh(void *h, const void *d, size_t n, Stream s) {
  if (n) check(cudaMemcpyAsync(h, d, n, cudaMemcpyDeviceToHost, s), "cudaMemcpy D2H");
  check(cudaStreamSynchronize(s), "cudaStreamSynchronize");
}
inline void copy_dtod(void *d, const void *src, size_t n, Stream s) {
  if (n) check(cudaMemcpyAsync(d, src, n, cudaMemcpyDeviceToDevice, s), "cudaMemcpy D2D");
}
inline void synchronize(Stream s) { check(cudaStreamSynchronize(s), "cudaStreamSynchronize"); }

// Graphs through stream capture: launches and device-side copies on a capturing stream are
// recorded, not run; a recorded graph is instantiated once and updated in place with a later
// capture's parameters when its nodes are the same (cudaGraphExecUpdate), else re-instantiated.
using Graph = cudaGraph_t;
using GraphExec = cudaGraphExec_t;
inline void capture_begin(Stream s) {
  check(cudaStreamBeginCapture(s, cudaStreamCaptureModeThreadLocal), "cudaStreamBeginCapture");
}
inline Graph capture_end(Stream s) {
  Graph g = nullptr;
  const cudaError_t e = cudaStreamEndCapture(s, &g);
  if (e != cudaSuccess) {
    cudaGetLastError();
    if (g) cudaGraphDestroy(g);
    check(e, "cudaStreamEndCapture");
  }
  return g;
}
inline GraphExec graph_instantiate(Graph g) {
  GraphExec x = nullptr;
  check(cudaGraphInstantiate(&x, g, 0), "cudaGraphInstantiate");
  return x;
}
// false: the graph's nodes differ from the instantiated one's (re-instantiate).
inline bool graph_exec_update(GraphExec x, Graph g) {
  cudaGraphExecUpdateResultInfo info{};
  if (cudaGraphExecUpdate(x, g, &info) == cudaSuccess) return true;
  cudaGetLastError();
  return false;
}
inline void graph_launch(GraphExec x, Stream s) { check(cudaGraphLaunch(x, s), "cudaGraphLaunch"); }
inline void graph_destroy(Graph g) {
  if (g) cudaGraphDestroy(g);
}
inline void graph_exec_destroy(GraphExec x) {
  if (x) cudaGraphExecDestroy(x);
}

// Whether p is device memory (the model hands host pointers for token ids and logits).
inline bool is_device_ptr(const void *p) {
  cudaPointerAttributes a{};
  if (cudaPointerGetAttributes(&a, p) != cudaSuccess) {
    cudaGetLastError();
    return false;
  }
  return a.type == cudaMemoryTypeDevice || a.type == cudaMemoryTypeManaged;
}

SIMT_DEVICE float f16_to_f32(uint16_t h) { return __half2float(__ushort_as_half(h)); }
SIMT_DEVICE uint16_t f32_to_f16(float f) { return __half_as_ushort(__float2half_rn(f)); }
SIMT_DEVICE float bf16_to_f32(uint16_t h) { return __uint_as_float(uint32_t(h) << 16); }

}  // namespace cuda
}  // namespace simt

#else  // ---------------------------------------------------------------- the host emulator
#define SIMT_HOST 1
#define SIMT_IMPL host
#include <cmath>
#include <cstdlib>
#include <functional>
#include <memory>
#include <stdexcept>
#include <string>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

#include "ggml/format.h"

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __restrict__ __restrict
#define __launch_bounds__(...)
#define SIMT_DEVICE inline

struct dim3 {
  unsigned x, y, z;
  constexpr dim3(unsigned x_ = 1, unsigned y_ = 1, unsigned z_ = 1) : x(x_), y(y_), z(z_) {}
};
struct uint3 {
  unsigned x, y, z;
};

namespace simt {
inline namespace host {

using Stream = int;

// What the emulator reports: a kernel broke a rule (race, divergent barrier, out of bounds).
struct Error : std::runtime_error {
  using std::runtime_error::runtime_error;
};

namespace detail {

struct Block;
struct Shadow {  // per shared element: last writer and readers, by barrier epoch
  int32_t w_tid = -1;
  uint32_t w_epoch = 0;
  int32_t r_tid = -1;  // -2: several
  uint32_t r_epoch = 0;
};
struct SharedAlloc {
  std::vector<unsigned char> bytes;
  std::vector<Shadow> shadow;
  const char *name = "";
  const uint32_t *epoch = nullptr;  // the block's barrier count
};

struct Thread {
  uint3 idx;
  int tid;  // linear index in the block
  Block *blk;
};
extern Thread *g_cur;  // the fiber running now (nullptr outside a launch; one launch at a time)

struct LaunchBody {
  void (*invoke)(void *);
  void *ctx;
};
void run_grid(dim3 grid, dim3 block, const char *name, LaunchBody body);

void sync_threads(const char *file, int line);
void warp_sync(unsigned mask, const char *what);
// Warp exchange: every lane of mask puts 8 bytes, then reads lane src's (after warp_sync).
uint64_t warp_exchange(unsigned mask, uint64_t mine, int src, const char *what);
unsigned warp_ballot(unsigned mask, bool pred, const char *what);
SharedAlloc &block_shared(const void *key, size_t bytes, size_t elems, const char *name);
uint3 block_idx();
uint3 block_dim();
uint3 grid_dim();
uint32_t epoch();
[[noreturn]] void fail(const std::string &msg);
int lane_id();

template <class T>
uint64_t to_bits(T v) {
  static_assert(sizeof(T) <= 8 && std::is_trivially_copyable_v<T>, "shuffle of <= 8 bytes");
  uint64_t u = 0;
  std::memcpy(&u, &v, sizeof(T));
  return u;
}
template <class T>
T from_bits(uint64_t u) {
  T v;
  std::memcpy(&v, &u, sizeof(T));
  return v;
}

}  // namespace detail

// A __shared__ array in the emulator: one per block, every access checked against the shadow
// (out of range, a never-written element read, or another thread's access since the last
// barrier where one of the two writes).
template <class T>
class SharedRef;
template <class T, size_t N>
class SharedArray {
 public:
  SharedArray(const void *key, const char *name)
      : a_(&detail::block_shared(key, sizeof(T) * N, N, name)) {}
  SharedRef<T> operator[](size_t i) const { return SharedRef<T>(a_, check(i)); }
  static constexpr size_t size() { return N; }
  // Reads of a rows x cols tile at element off with row stride ld (tensor-core loads).
  void read_tile(size_t off, int rows, int cols, int ld, T *out, bool col_major) const {
    for (int r = 0; r < rows; ++r)
      for (int c = 0; c < cols; ++c) {
        const size_t i = col_major ? off + size_t(c) * ld + r : off + size_t(r) * ld + c;
        out[r * cols + c] = T(SharedRef<T>(a_, check(i)));
      }
  }
  void write_tile(size_t off, int rows, int cols, int ld, const T *in, bool col_major) const {
    for (int r = 0; r < rows; ++r)
      for (int c = 0; c < cols; ++c) {
        const size_t i = col_major ? off + size_t(c) * ld + r : off + size_t(r) * ld + c;
        SharedRef<T>(a_, check(i)) = in[r * cols + c];
      }
  }

 private:
  size_t check(size_t i) const {
    if (i >= N)
      detail::fail(std::string("shared array '") + a_->name + "' index " + std::to_string(i) +
                   " out of bounds (size " + std::to_string(N) + ")");
    return i;
  }
  detail::SharedAlloc *a_;
};

template <class T>
class SharedRef {
 public:
  SharedRef(detail::SharedAlloc *a, size_t i) : a_(a), i_(i) {}
  operator T() const {
    on_read();
    T v;
    std::memcpy(&v, a_->bytes.data() + i_ * sizeof(T), sizeof(T));
    return v;
  }
  SharedRef &operator=(T v) {
    on_write();
    std::memcpy(a_->bytes.data() + i_ * sizeof(T), &v, sizeof(T));
    return *this;
  }
  SharedRef &operator=(const SharedRef &o) { return *this = T(o); }
  SharedRef &operator+=(T v) { return *this = T(*this) + v; }
  SharedRef &operator-=(T v) { return *this = T(*this) - v; }
  SharedRef &operator*=(T v) { return *this = T(*this) * v; }

 private:
  void on_read() const {
    detail::Shadow &s = a_->shadow[i_];
    const int me = detail::g_cur->tid;
    const uint32_t ep = *a_->epoch;
    if (s.w_tid < 0)
      detail::fail(
          std::string("read of shared '") + a_->name + "[" + std::to_string(i_) +
          "]' that no thread has written yet (never written, or written by another thread " +
          "later with no __syncthreads between)");
    if (s.w_epoch == ep && s.w_tid != me)
      detail::fail(std::string("shared-memory race on '") + a_->name + "[" + std::to_string(i_) +
                   "]': thread " + std::to_string(me) + " reads what thread " +
                   std::to_string(s.w_tid) + " wrote with no __syncthreads between");
    if (s.r_epoch != ep || s.r_tid == -1)
      s.r_tid = me, s.r_epoch = ep;
    else if (s.r_tid != me)
      s.r_tid = -2;
  }
  void on_write() const {
    detail::Shadow &s = a_->shadow[i_];
    const int me = detail::g_cur->tid;
    const uint32_t ep = *a_->epoch;
    if (s.w_tid >= 0 && s.w_epoch == ep && s.w_tid != me)
      detail::fail(std::string("shared-memory race on '") + a_->name + "[" + std::to_string(i_) +
                   "]': threads " + std::to_string(s.w_tid) + " and " + std::to_string(me) +
                   " both write it with no __syncthreads between");
    if (s.r_epoch == ep && s.r_tid != -1 && s.r_tid != me)
      detail::fail(std::string("shared-memory race on '") + a_->name + "[" + std::to_string(i_) +
                   "]': thread " + std::to_string(me) + " overwrites what another thread read " +
                   "with no __syncthreads between");
    s.w_tid = me, s.w_epoch = ep;
  }
  detail::SharedAlloc *a_;
  size_t i_;
};

// Device memory: host memory with a PROT_NONE page right after the (4-byte rounded) end and one
// before the start, so a kernel's out-of-bounds access faults and the launch reports it.
void *dev_alloc(size_t n);
void dev_free(void *p);
bool is_device_ptr(const void *p);

// Graphs: stream capture records each launch (kernel, grid, block and its parameters, copied by
// value as CUDA copies them into the kernel node) and each device-side copy or memset instead of
// running it; replaying a graph runs the recorded nodes in order. What CUDA refuses during a
// capture is an error here too: a host<->device copy, a synchronize, a nested capture.
struct GraphNode {
  const char *key;  // the kernel's name (one per kernel), or "memset" / "memcpy"
  dim3 grid, block;
  std::function<void()> run;
};
struct GraphImpl {
  std::vector<GraphNode> nodes;
};
using Graph = GraphImpl *;
using GraphExec = GraphImpl *;
namespace detail {
// The capture in progress on this thread (the emulator's streams are one; per thread, as CUDA's
// thread-local capture mode, so another thread's launches still run).
inline thread_local GraphImpl *g_capture = nullptr;
inline void no_capture(const char *what) {
  if (g_capture)
    throw Error(std::string(what) + " during stream capture (the host cannot wait on, or copy " +
                "to or from, a stream that is being recorded)");
}
inline bool record(const char *key, dim3 grid, dim3 block, std::function<void()> run) {
  if (!g_capture) return false;
  g_capture->nodes.push_back({key, grid, block, std::move(run)});
  return true;
}
}  // namespace detail
inline void capture_begin(Stream) {
  detail::no_capture("capture_begin");
  detail::g_capture = new GraphImpl;
}
inline Graph capture_end(Stream) {
  if (!detail::g_capture) throw Error("capture_end without capture_begin");
  Graph g = detail::g_capture;
  detail::g_capture = nullptr;
  return g;
}
inline GraphExec graph_instantiate(Graph g) { return new GraphImpl(*g); }
// As cudaGraphExecUpdate: the same nodes (count, kinds, kernels) take the new parameters and
// launch shapes; anything else fails and the caller re-instantiates.
inline bool graph_exec_update(GraphExec x, Graph g) {
  if (x->nodes.size() != g->nodes.size()) return false;
  for (size_t i = 0; i < g->nodes.size(); ++i)
    if (x->nodes[i].key != g->nodes[i].key) return false;
  x->nodes = g->nodes;
  return true;
}
inline void graph_launch(GraphExec x, Stream) {
  detail::no_capture("graph_launch");
  for (const GraphNode &n : x->nodes) n.run();
}
inline void graph_destroy(Graph g) { delete g; }
inline void graph_exec_destroy(GraphExec x) { delete x; }

inline void memset_zero(void *p, size_t n, Stream) {
  if (!n) return;
  if (!detail::record("memset", dim3(), dim3(), [p, n] { std::memset(p, 0, n); }))
    std::memset(p, 0, n);
}
inline void copy_htod(void *d, const void *h, size_t n, Stream) {
  detail::no_capture("a host-to-device copy");
  if (n) std::memcpy(d, h, n);
}
inline void copy_dtoh(void *h, const void *d, size_t n, Stream) {
  detail::no_capture("a device-to-host copy");
  if (n) std::memcpy(h, d, n);
}
inline void copy_dtod(void *d, const void *s, size_t n, Stream) {
  if (!n) return;
  if (!detail::record("memcpy", dim3(), dim3(), [d, s, n] { std::memmove(d, s, n); }))
    std::memmove(d, s, n);
}
inline void synchronize(Stream) { detail::no_capture("a stream synchronize"); }

// Launch statistics (tests): launches, blocks, fiber switches since the last reset.
struct Stats {
  uint64_t launches = 0, blocks = 0, switches = 0;
};
Stats stats();
// Launches per kernel name (the runs of recorded graphs included).
std::vector<std::pair<std::string, uint64_t>> launches_by_kernel();

template <class... P, class... A>
void launch_named(const char *name, void (*kernel)(P...), dim3 grid, dim3 block, Stream,
                  A &&...args) {
  if (grid.x == 0 || grid.y == 0 || grid.z == 0) return;
  std::tuple<std::decay_t<P>...> params(static_cast<P>(args)...);  // by value, as CUDA does
  auto run = [name, kernel, grid, block, params] {
    auto body = [&] { std::apply(kernel, params); };
    using B = decltype(body);
    detail::run_grid(grid, block, name, {[](void *c) { (*static_cast<B *>(c))(); }, &body});
  };
  if (!detail::record(name, grid, block, run)) run();
}
// The kernel's name from the compiler's signature of kernel_name<K> ("... K = ns::name]").
template <auto K>
const char *kernel_name() {
  static const std::string name = [](std::string f) {
    size_t a = f.find("K = ");
    a = a == std::string::npos ? 0 : a + 4;
    size_t b = f.find_first_of(";]", a);
    std::string n = f.substr(a, b == std::string::npos ? std::string::npos : b - a);
    if (!n.empty() && n[0] == '&') n.erase(0, 1);
    const size_t tmpl = n.find('<');
    const size_t colon = n.rfind("::", tmpl == std::string::npos ? std::string::npos : tmpl);
    return colon == std::string::npos ? n : n.substr(colon + 2);
  }(__PRETTY_FUNCTION__);
  return name.c_str();
}
// The launch both builds use: simt::launch<kernel>(grid, block, stream, args...).
template <auto K, class... A>
void launch(dim3 grid, dim3 block, Stream s, A &&...args) {
  launch_named(kernel_name<K>(), K, grid, block, s, std::forward<A>(args)...);
}

SIMT_DEVICE float f16_to_f32(uint16_t h) { return edgenano::ggml::f16_to_f32(h); }
SIMT_DEVICE uint16_t f32_to_f16(float f) { return edgenano::ggml::f32_to_f16(f); }
SIMT_DEVICE float bf16_to_f32(uint16_t h) { return edgenano::ggml::bf16_to_f32(h); }

}  // namespace host
}  // namespace simt

#define SIMT_SHARED(T, name, N)          \
  static const char name##_simt_key = 0; \
  const ::simt::SharedArray<T, N> name(&name##_simt_key, #name)

#define threadIdx (::simt::detail::g_cur->idx)
#define blockIdx (::simt::detail::block_idx())
#define blockDim (::simt::detail::block_dim())
#define gridDim (::simt::detail::grid_dim())
#define warpSize 32
#define __syncthreads() ::simt::detail::sync_threads(__FILE__, __LINE__)

inline void __syncwarp(unsigned mask = 0xffffffffu) { simt::detail::warp_sync(mask, "__syncwarp"); }
template <class T>
T __shfl_sync(unsigned mask, T v, int src, int width = 32) {
  const int lane = simt::detail::lane_id(), base = lane & ~(width - 1);
  return simt::detail::from_bits<T>(simt::detail::warp_exchange(
      mask, simt::detail::to_bits(v), base + (src & (width - 1)), "__shfl_sync"));
}
template <class T>
T __shfl_xor_sync(unsigned mask, T v, int lane_mask, int width = 32) {
  const int lane = simt::detail::lane_id();
  int src = lane ^ lane_mask;
  if ((src & ~(width - 1)) != (lane & ~(width - 1))) src = lane;
  return simt::detail::from_bits<T>(
      simt::detail::warp_exchange(mask, simt::detail::to_bits(v), src, "__shfl_xor_sync"));
}
template <class T>
T __shfl_down_sync(unsigned mask, T v, unsigned delta, int width = 32) {
  const int lane = simt::detail::lane_id();
  int src = lane + int(delta);
  if ((src & ~(width - 1)) != (lane & ~(width - 1))) src = lane;
  return simt::detail::from_bits<T>(
      simt::detail::warp_exchange(mask, simt::detail::to_bits(v), src, "__shfl_down_sync"));
}
inline unsigned __ballot_sync(unsigned mask, int pred) {
  return simt::detail::warp_ballot(mask, pred != 0, "__ballot_sync");
}
inline int __all_sync(unsigned mask, int pred) {
  return (simt::detail::warp_ballot(mask, pred != 0, "__all_sync") & mask) == mask;
}
inline int __any_sync(unsigned mask, int pred) {
  return (simt::detail::warp_ballot(mask, pred != 0, "__any_sync") & mask) != 0;
}
// Signed 8-bit lanes of a and b: their four products summed onto c.
inline int __dp4a(int a, int b, int c) {
  for (int i = 0; i < 4; ++i) c += int(int8_t(a >> (8 * i))) * int(int8_t(b >> (8 * i)));
  return c;
}
// Blocks of a grid run one after another, threads cooperatively: plain read-modify-writes are
// atomic here.
inline float atomicAdd(float *p, float v) {
  const float old = *p;
  *p = old + v;
  return old;
}
inline int atomicAdd(int *p, int v) {
  const int old = *p;
  *p = old + v;
  return old;
}
inline int atomicMax(int *p, int v) {
  const int old = *p;
  if (v > old) *p = v;
  return old;
}
// CUDA's integer min/max, which device code calls unqualified.
inline int min(int a, int b) { return a < b ? a : b; }
inline int max(int a, int b) { return a > b ? a : b; }
inline float __int_as_float(int i) {
  float f;
  std::memcpy(&f, &i, 4);
  return f;
}
inline int __float_as_int(float f) {
  int i;
  std::memcpy(&i, &f, 4);
  return i;
}
#endif
