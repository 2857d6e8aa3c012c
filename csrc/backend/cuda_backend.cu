// The "cuda" backend: cuda_backend_impl.h built by nvcc over the kernels of kernels/cuda. The CUDA
// runtime is linked statically and reaches the driver only when asked, so the extension imports
// on machines without one; cuda_probe says why a device cannot be used.
#include <algorithm>
#include <string>
#include <utility>

#include "backend/cuda_backend_impl.h"
#include "backend/registry.h"

namespace edgenano::backend {

const char *cuda_probe() {
  static const std::string reason = [] {
    int n = 0;
    const cudaError_t e = cudaGetDeviceCount(&n);
    if (e != cudaSuccess)
      return std::string("no usable CUDA driver or device (") + cudaGetErrorName(e) + ": " +
             cudaGetErrorString(e) + ")";
    if (n == 0) return std::string("no CUDA device found");
    cudaDeviceProp prop{};
    if (cudaGetDeviceProperties(&prop, 0) == cudaSuccess && prop.major * 10 + prop.minor < 75)
      return std::string("GPU ") + prop.name + " has compute capability " +
             std::to_string(prop.major) + "." + std::to_string(prop.minor) +
             "; edgenano's CUDA backend needs 7.5 or newer";
    return std::string();
  }();
  return reason.empty() ? nullptr : reason.c_str();
}

namespace {

struct Fits {
  void operator()(size_t nbytes) const {
    size_t free = 0, total = 0;
    simt::check(cudaMemGetInfo(&free, &total), "cudaMemGetInfo");
    if (nbytes > free)
      throw std::runtime_error(
          "the model's weights need " + std::to_string(double(nbytes) / (1 << 30)).substr(0, 5) +
          " GiB of device memory; " + std::to_string(double(free) / (1 << 30)).substr(0, 5) +
          " GiB of " + std::to_string(double(total) / (1 << 30)).substr(0, 5) + " GiB are free");
  }
};

}  // namespace

// For bench/gpu_check.sh: free and total device memory, and device-to-device copy bandwidth
// (bytes read + written per second, best of reps copies of nbytes).
std::pair<size_t, size_t> cuda_mem_info() {
  size_t free = 0, total = 0;
  simt::check(cudaMemGetInfo(&free, &total), "cudaMemGetInfo");
  return {free, total};
}

double cuda_copy_bandwidth(size_t nbytes, int reps) {
  void *a = simt::dev_alloc(nbytes), *b = simt::dev_alloc(nbytes);
  cudaEvent_t e0, e1;
  cudaEventCreate(&e0);
  cudaEventCreate(&e1);
  cudaMemset(a, 1, nbytes);
  float best = 1e30f;
  for (int r = 0; r < reps; ++r) {
    cudaEventRecord(e0);
    cudaMemcpy(b, a, nbytes, cudaMemcpyDeviceToDevice);
    cudaEventRecord(e1);
    cudaEventSynchronize(e1);
    float ms = 0.f;
    cudaEventElapsedTime(&ms, e0, e1);
    best = std::min(best, ms);
  }
  cudaEventDestroy(e0);
  cudaEventDestroy(e1);
  simt::dev_free(a);
  simt::dev_free(b);
  return 2.0 * double(nbytes) / (double(best) * 1e-3);
}

std::unique_ptr<Backend> make_cuda_backend(const Options &) {
  if (const char *why = cuda_probe())
    throw std::runtime_error(std::string("backend 'cuda': ") + why);
  cudaStream_t s = nullptr;
  simt::check(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking), "cudaStreamCreate");
  return std::make_unique<SimtBackend<Fits>>("cuda", s, Fits{});
}

}  // namespace edgenano::backend
