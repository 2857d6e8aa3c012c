// The "cuda_emu" backend: the CUDA backend's code (cuda_backend_impl.h) and kernels on the SIMT
// emulator, in every build. Slow (a block's threads are fibers on one core) and exact about the
// rules a GPU would not check; CI runs a whole model through it against "cpu".
#include "backend/cuda_backend_impl.h"
#include "backend/registry.h"

namespace edgenano::backend {

std::unique_ptr<Backend> make_cuda_emu_backend(const Options &) {
  auto fits = [](size_t) {};  // host memory: mmap reports what does not fit
  return std::make_unique<SimtBackend<decltype(fits)>>("cuda_emu", 0, fits);
}

}  // namespace edgenano::backend
