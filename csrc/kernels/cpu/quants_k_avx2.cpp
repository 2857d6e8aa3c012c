// K-type quantizers built with AVX2/FMA (the candidate loops of ggml/quants_k_impl.h vectorize 8
// wide). FMA contraction stays off so the bytes equal the portable build's (ggml/quants_k.cpp).
// Entered only after use_avx2() (kernels/quantize.cpp).
#if defined(__clang__)
#pragma STDC FP_CONTRACT OFF
#elif defined(__GNUC__)
#pragma GCC optimize("fp-contract=off")
#endif

#include <cmath>

#include "kernels/cpu/quantize.h"

namespace edgenano::kern::quants_avx2 {
#include "ggml/quants_k_impl.h"
}  // namespace edgenano::kern::quants_avx2
