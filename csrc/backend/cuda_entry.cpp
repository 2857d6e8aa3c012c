// The CUDA entries of the registry, built as C++ either way: EDGENANO_HAS_CUDA (set by CMake when
// EDGENANO_CUDA resolves to ON) says whether cuda_backend.cu is in this build.
#include <stdexcept>

#include "backend/registry.h"

namespace edgenano::backend {

#if defined(EDGENANO_HAS_CUDA)
const char *cuda_probe();  // cuda_backend.cu: nullptr when a device can run, else why not
std::unique_ptr<Backend> make_cuda_backend(const Options &o);
#endif

const char *cuda_unavailable_reason() {
#if defined(EDGENANO_HAS_CUDA)
  return cuda_probe();
#else
  return "CUDA was not built into this edgenano (rebuild with a CUDA toolkit; EDGENANO_CUDA=off "
         "disables it)";
#endif
}

std::unique_ptr<Backend> make_cuda(const Options &o) {
#if defined(EDGENANO_HAS_CUDA)
  return make_cuda_backend(o);
#else
  (void)o;
  throw std::runtime_error(cuda_unavailable_reason());
#endif
}

}  // namespace edgenano::backend
