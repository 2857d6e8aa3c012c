// K-type quantizers, portable build of ggml/quants_k_impl.h (see there for the method); the
// AVX2 build of the same code is kernels/quants_k_avx2.cpp.
#if defined(__clang__)
#pragma STDC FP_CONTRACT OFF
#elif defined(__GNUC__)
#pragma GCC optimize("fp-contract=off")
#endif

#include <cmath>

#include "ggml/format.h"

namespace edgenano::ggml {
#include "ggml/quants_k_impl.h"
}  // namespace edgenano::ggml
