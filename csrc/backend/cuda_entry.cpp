// The CUDA entry of the registry. Built as C++ either way: EDGENANO_HAS_CUDA (set by CMake when
// EDGENANO_CUDA resolves to ON) only changes what the entry says until a CUDA backend lands.
#include "backend/registry.h"

namespace edgenano::backend {

const char *cuda_unavailable_reason() {
#if defined(EDGENANO_HAS_CUDA)
  return "the CUDA backend is not implemented yet (this edgenano was built with CUDA)";
#else
  return "CUDA was not built into this edgenano (rebuild with a CUDA toolkit; EDGENANO_CUDA=off "
         "disables it)";
#endif
}

}  // namespace edgenano::backend
