// K-quant quantizers, portable build of kernels/quants_k_impl.h (see there for the method).
#if defined(__clang__)
#pragma STDC FP_CONTRACT OFF
#elif defined(__GNUC__)
#pragma GCC optimize("fp-contract=off")
#endif

#include <cmath>

#include "kernels/quants.h"

namespace edgenano {
#include "kernels/quants_k_impl.h"
}  // namespace edgenano
