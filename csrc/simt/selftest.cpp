// Kernels with planted bugs (and correct ones beside them) that the SIMT emulator must judge:
// each buggy one has to end in simt::Error, each correct one has to give the right answer.
// _C.cuda_emu.selftest(name) runs one; tests/test_simt.py holds the verdicts.
#include <stdexcept>
#include <string>
#include <vector>

#include "kernels/cuda/common.cuh"
#include "simt/mma.h"
#include "simt/simt.h"

namespace edgenano::simt_selftest {

namespace {

constexpr unsigned kFull = 0xffffffffu;

// Correct: a block sum through shuffles and shared memory, with ballot / all / any checks.
__global__ void block_sum_ok(const float *x, int n, float *out, int *votes) {
  SIMT_SHARED(float, part, 8);
  const int tid = int(threadIdx.x), lane = tid & 31, w = tid >> 5;
  float v = tid < n ? x[tid] : 0.f;
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(kFull, v, o);
  const float b = __shfl_sync(kFull, v, 0);                    // broadcast
  const float down = __shfl_down_sync(kFull, float(lane), 1);  // lane + 1, lane 31 keeps its own
  if (lane == 0) part[w] = v;
  __syncthreads();
  if (tid == 0) {
    float s = 0.f;
    for (int i = 0; i < int(blockDim.x) / 32; ++i) s += part[i];
    *out = s;
  }
  const unsigned ballot = __ballot_sync(kFull, lane % 3 == 0);
  const int all = __all_sync(kFull, b == v), any = __any_sync(kFull, lane == 7);
  if (tid == 0) votes[0] = int(ballot & 0xffff), votes[1] = all, votes[2] = any;
  if (tid == 1) votes[5] = int(ballot >> 16);
  if (tid == 5) votes[3] = int(down);
  if (tid == 31) votes[4] = int(down);
}

// Race: every thread writes its slot, then reads its neighbour's with no barrier between.
__global__ void race_missing_barrier(float *out) {
  SIMT_SHARED(float, buf, 64);
  const int tid = int(threadIdx.x);
  buf[tid] = float(tid);
  out[tid] = buf[(tid + 1) % 64];  // needs __syncthreads() above
}

// Race: thread 0 overwrites what the others read in the same barrier interval.
__global__ void race_write_after_read(float *out) {
  SIMT_SHARED(float, buf, 1);
  const int tid = int(threadIdx.x);
  if (tid == 0) buf[0] = 1.f;
  __syncthreads();
  out[tid] = buf[0];
  if (tid == 0) buf[0] = 2.f;  // others may still be reading: needs a barrier
}

// Correct: the same two phases with the barriers.
__global__ void shared_ok(float *out) {
  SIMT_SHARED(float, buf, 64);
  const int tid = int(threadIdx.x);
  buf[tid] = float(tid);
  __syncthreads();
  out[tid] = buf[(tid + 1) % 64];
  __syncthreads();
  buf[tid] = 0.f;
}

// For the graph tests: out[i] += v for i < n (a by-value parameter the recording must keep).
__global__ void add_value(float *out, int n, float v) {
  const int i = int(blockIdx.x * blockDim.x + threadIdx.x);
  if (i < n) out[i] += v;
}

__global__ void uninitialized_shared(float *out) {
  SIMT_SHARED(float, buf, 64);
  const int tid = int(threadIdx.x);
  if (tid < 32) buf[tid] = 1.f;
  __syncthreads();
  out[tid] = buf[63 - tid];  // the upper half was never written
}

__global__ void shared_out_of_bounds(float *out) {
  SIMT_SHARED(float, buf, 64);
  const int tid = int(threadIdx.x);
  buf[tid + 1] = 1.f;  // thread 63 writes buf[64]
  __syncthreads();
  out[tid] = buf[tid];
}

// Global out-of-bounds read: one element past the end of x.
__global__ void global_read_oob(const float *x, int n, float *out) {
  const int i = int(blockIdx.x * blockDim.x + threadIdx.x);
  out[i] = x[i + 1];  // the last thread reads x[n]
  (void)n;
}

// Global out-of-bounds write: the 32 floats after the end of out (n floats). The guard page
// catches accesses within a page of either end; farther ones may land in other memory.
__global__ void global_write_oob(float *out, int n) {
  const int i = int(blockIdx.x * blockDim.x + threadIdx.x);
  out[i + n] = 1.f;
}

// Divergent barrier: half the block syncs at one barrier, the other half at another.
__global__ void divergent_barrier(float *out) {
  const int tid = int(threadIdx.x);
  if (tid < 32) {
    __syncthreads();
    out[tid] = 1.f;
  } else {
    __syncthreads();
    out[tid] = 2.f;
  }
}

// Divergent barrier: some threads exit before the barrier the others wait at.
__global__ void barrier_after_exit(float *out) {
  const int tid = int(threadIdx.x);
  if (tid >= 40) return;
  __syncthreads();
  out[tid] = 1.f;
}

// A shuffle whose mask names lanes that have exited.
__global__ void shuffle_exited_lane(float *out) {
  const int tid = int(threadIdx.x);
  if (tid >= 16) return;
  out[tid] = __shfl_xor_sync(kFull, float(tid), 1);
}

// Deadlock: lanes wait in a warp operation while the rest of the warp waits at a barrier.
__global__ void warp_op_vs_barrier(float *out) {
  const int tid = int(threadIdx.x);
  if (tid % 32 < 16) out[tid] = __shfl_xor_sync(kFull, float(tid), 1);
  __syncthreads();
  out[tid] += 1.f;
}

// Tensor-core tiles: C (16x16) = A (16x8) B (8x16), correct use.
__global__ void mma_ok(const float *a, const float *b, float *c) {
  SIMT_SHARED(float, as, 16 * 8);
  SIMT_SHARED(float, bs, 16 * 8);
  SIMT_SHARED(float, cs, 16 * 16);
  const int lane = int(threadIdx.x);
  for (int i = lane; i < 128; i += 32) as[i] = a[i], bs[i] = b[i];  // a row-major, b col-major
  __syncthreads();
  simt::mma::FragA fa;
  simt::mma::FragB fb;
  simt::mma::FragC fc;
  simt::mma::fill_zero(fc);
  simt::mma::load_a(fa, as, 0, 8);
  simt::mma::load_b(fb, bs, 0, 8);
  simt::mma::mma(fc, fa, fb, fc);
  simt::mma::store_c(cs, 0, fc, 16);
  __syncthreads();
  for (int i = lane; i < 256; i += 32) c[i] = cs[i];
}

// Tensor-core tile read before a barrier: warp 1 writes half of A, warp 0 multiplies at once.
__global__ void mma_missing_barrier(const float *a, float *c) {
  SIMT_SHARED(float, as, 16 * 8);
  SIMT_SHARED(float, cs, 16 * 16);
  const int tid = int(threadIdx.x);
  for (int i = tid; i < 128; i += 64) as[i] = a[i];
  if (tid < 32) {  // needs a __syncthreads() before: rows 4.. of A come from warp 1
    simt::mma::FragA fa;
    simt::mma::FragB fb;
    simt::mma::FragC fc;
    simt::mma::fill_zero(fc);
    simt::mma::load_a(fa, as, 0, 8);
    simt::mma::load_b(fb, as, 0, 8);
    simt::mma::mma(fc, fa, fb, fc);
    simt::mma::store_c(cs, 0, fc, 16);
  }
  __syncthreads();
  for (int i = tid; i < 256; i += 64) c[i] = cs[i];
}

// A 4-byte load from a 2-aligned address, as a Q4_0 block's fields would be read by a kernel
// that assumed 4-byte alignment.
__global__ void misaligned_load(const float *x, float *out) {
  const auto *b = reinterpret_cast<const uint8_t *>(x) + 2;
  out[threadIdx.x] = float(edgenano::cuk::load_u32_a4(b + 4 * threadIdx.x) & 0xff);
}

struct Dev {
  void *p;
  explicit Dev(size_t n) : p(simt::dev_alloc(n)) {}
  ~Dev() { simt::dev_free(p); }
  float *f() const { return static_cast<float *>(p); }
  int *i() const { return static_cast<int *>(p); }
};

}  // namespace

// Runs the named kernel; returns its output as floats, or throws simt::Error (what the kernel
// broke). Names: see the list in names().
std::vector<float> run(const std::string &name) {
  Dev out(256 * sizeof(float)), x(64 * sizeof(float)), votes(6 * sizeof(int));
  for (int i = 0; i < 64; ++i) x.f()[i] = float(i);
  auto grab = [&](int n) { return std::vector<float>(out.f(), out.f() + n); };
  if (name == "block_sum_ok") {
    simt::launch<block_sum_ok>(dim3(1), dim3(64), 0, x.f(), 64, out.f(), votes.i());
    std::vector<float> r = {out.f()[0]};
    for (int i = 0; i < 6; ++i) r.push_back(float(votes.i()[i]));
    return r;
  }
  if (name == "race_missing_barrier")
    return simt::launch<race_missing_barrier>(dim3(1), dim3(64), 0, out.f()), grab(64);
  if (name == "race_write_after_read")
    return simt::launch<race_write_after_read>(dim3(1), dim3(64), 0, out.f()), grab(64);
  if (name == "shared_ok") return simt::launch<shared_ok>(dim3(1), dim3(64), 0, out.f()), grab(64);
  if (name == "uninitialized_shared")
    return simt::launch<uninitialized_shared>(dim3(1), dim3(64), 0, out.f()), grab(64);
  if (name == "shared_out_of_bounds")
    return simt::launch<shared_out_of_bounds>(dim3(1), dim3(64), 0, out.f()), grab(64);
  if (name == "global_read_oob")
    return simt::launch<global_read_oob>(dim3(2), dim3(32), 0, x.f(), 64, out.f()), grab(64);
  if (name == "global_write_oob")
    return simt::launch<global_write_oob>(dim3(1), dim3(32), 0, out.f(), 256), grab(64);
  if (name == "divergent_barrier")
    return simt::launch<divergent_barrier>(dim3(1), dim3(64), 0, out.f()), grab(64);
  if (name == "barrier_after_exit")
    return simt::launch<barrier_after_exit>(dim3(1), dim3(64), 0, out.f()), grab(64);
  if (name == "shuffle_exited_lane")
    return simt::launch<shuffle_exited_lane>(dim3(1), dim3(32), 0, out.f()), grab(32);
  if (name == "warp_op_vs_barrier")
    return simt::launch<warp_op_vs_barrier>(dim3(1), dim3(64), 0, out.f()), grab(64);
  if (name == "misaligned_load")
    return simt::launch<misaligned_load>(dim3(1), dim3(8), 0, x.f(), out.f()), grab(8);
  if (name == "mma_ok" || name == "mma_missing_barrier") {
    Dev a(128 * sizeof(float)), b(128 * sizeof(float));
    for (int i = 0; i < 128; ++i) a.f()[i] = float(i % 7) - 3.f, b.f()[i] = float(i % 5) - 2.f;
    if (name == "mma_ok")
      simt::launch<mma_ok>(dim3(1), dim3(32), 0, a.f(), b.f(), out.f());
    else
      simt::launch<mma_missing_barrier>(dim3(1), dim3(64), 0, a.f(), out.f());
    return grab(256);
  }
  // Graphs: a recording runs nothing; a replay runs the recorded launches with the values they
  // were given; an update takes a new recording's values; a host copy or a synchronize while
  // recording is refused.
  if (name == "graph_replay_ok") {
    std::vector<float> r;
    auto record = [&](float v, int launches) {
      simt::capture_begin(0);
      for (int k = 0; k < launches; ++k)
        simt::launch<add_value>(dim3(2), dim3(32), 0, out.f(), 40, v);
      return simt::capture_end(0);
    };
    simt::memset_zero(out.p, 256 * sizeof(float), 0);
    simt::Graph g1 = record(1.f, 2);
    r.push_back(out.f()[0]);  // 0: nothing ran while recording
    simt::GraphExec x = simt::graph_instantiate(g1);
    simt::graph_launch(x, 0);
    r.push_back(out.f()[39]);  // 2
    simt::Graph g2 = record(5.f, 2), g3 = record(1.f, 3);
    r.push_back(float(simt::graph_exec_update(x, g2)));  // 1: same nodes, new value
    simt::graph_launch(x, 0);
    r.push_back(out.f()[39]);  // 12
    r.push_back(out.f()[40]);  // 0: past n
    r.push_back(float(simt::graph_exec_update(x, g3)));  // 0: three launches, not two
    for (simt::Graph g : {g1, g2, g3}) simt::graph_destroy(g);
    simt::graph_exec_destroy(x);
    return r;
  }
  if (name == "graph_htod_in_capture" || name == "graph_sync_in_capture") {
    simt::capture_begin(0);
    try {
      if (name == "graph_htod_in_capture")
        simt::copy_htod(out.p, x.p, 4, 0);
      else
        simt::synchronize(0);
    } catch (...) {
      simt::graph_destroy(simt::capture_end(0));
      throw;
    }
    simt::graph_destroy(simt::capture_end(0));
    return grab(1);
  }
  throw std::invalid_argument("unknown selftest '" + name + "'");
}

std::vector<std::string> names() {
  return {"block_sum_ok",
          "race_missing_barrier",
          "race_write_after_read",
          "shared_ok",
          "uninitialized_shared",
          "shared_out_of_bounds",
          "global_read_oob",
          "global_write_oob",
          "divergent_barrier",
          "barrier_after_exit",
          "shuffle_exited_lane",
          "warp_op_vs_barrier",
          "mma_ok",
          "mma_missing_barrier",
          "misaligned_load",
          "graph_replay_ok",
          "graph_htod_in_capture",
          "graph_sync_in_capture"};
}

}  // namespace edgenano::simt_selftest
