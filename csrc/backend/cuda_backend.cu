// The "cuda" backend: cuda_backend_impl.h built by nvcc over the kernels of kernels/cuda. The CUDA
// runtime is linked statically and reaches the driver only when asked, so the extension imports
// on machines without one; cuda_probe says why a device cannot be used.
#include <string>

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

std::unique_ptr<Backend> make_cuda_backend(const Options &) {
  if (const char *why = cuda_probe())
    throw std::runtime_error(std::string("backend 'cuda': ") + why);
  cudaStream_t s = nullptr;
  simt::check(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking), "cudaStreamCreate");
  return std::make_unique<SimtBackend<Fits>>("cuda", s, Fits{});
}

}  // namespace edgenano::backend
