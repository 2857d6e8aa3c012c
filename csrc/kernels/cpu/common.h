// Shared kernel definitions: the ggml format layer's names (types, blocks, f16/bf16), the
// activation blocks the matmul kernels quantize on the fly, and the run-time CPU dispatch switch.
// Plain C++: no Python headers.
#pragma once
#include <cstddef>
#include <cstdint>

#include "ggml/format.h"

namespace edgenano::kern {

// Kernels speak the format layer's names (T_*, Block*, QK, QK_K, row_bytes, f16_to_f32, ...).
using namespace edgenano::ggml;

// Activations quantized on the fly (our own layouts, never stored in files).
// A8: one per 32 values of a *_0 / *_1 weight row; s = d * sum(qs) serves the zero-point (*_0)
// and minimum (*_1) terms.
struct BlockA8 {
  float d;
  float s;
  int8_t qs[QK];
};
// A8K: one per 256 values of a K-type row; bsums are the sums of each 16 qs.
struct BlockA8K {
  float d;
  int16_t bsums[QK_K / 16];
  int8_t qs[QK_K];
};

// Run-time dispatch: AVX2/FMA/F16C kernels (matmuls, norms, the K-type quantizers) are used only
// when the CPU has them and the scalar path is not forced (set_force_scalar or
// EDGENANO_FORCE_SCALAR=1 in the environment). Both paths of a quantizer write identical bytes.
bool cpu_has_avx2();
bool use_avx2();
void set_force_scalar(bool on);
bool force_scalar();
// On top of AVX2: the AVX-512 VNNI decode dots, where the CPU and OS have them and they are
// allowed (set_allow_avx512, or EDGENANO_NO_AVX512=1 in the environment to turn them off).
bool cpu_has_avx512();
bool use_avx512();
void set_allow_avx512(bool on);
const char *isa_name();  // the kernels in use: "avx512-vnni", "avx2" or "scalar"

}  // namespace edgenano::kern
