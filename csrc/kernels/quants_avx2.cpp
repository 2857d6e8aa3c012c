// K-quant quantizers built with AVX2/FMA (the candidate loops of quants_k_impl.h vectorize 8 wide).
// FMA contraction stays off so the bytes equal the portable build's. Entered only after
// cpu_has_avx2() (kernels/quants.cpp).
#if defined(__clang__)
#pragma STDC FP_CONTRACT OFF
#elif defined(__GNUC__)
#pragma GCC optimize("fp-contract=off")
#endif

#include <cmath>

#include "kernels/quants.h"

namespace edgenano {
namespace avx2 {
#include "kernels/quants_k_impl.h"
}  // namespace avx2
}  // namespace edgenano
