// The CUDA kernels built by the host compiler over the SIMT emulator (simt/simt.h): the same
// sources as the *.cu files, in namespace edgenano::cuk::host. Always built, GPU or not, so CI
// runs every kernel on the CPU (tests/test_cuda_emu.py).
#include "kernels/cuda/attention.cuh"
#include "kernels/cuda/gemm.cuh"
#include "kernels/cuda/matvec.cuh"
#include "kernels/cuda/nn.cuh"

#define EDGENANO_CUK_MAKE_TABLE 1
#include "kernels/cuda/ops_table.h"

namespace edgenano::cuk {
const OpsTable &emu_ops() {
  static const OpsTable t = make_ops_table("cuda_emu");
  return t;
}
}  // namespace edgenano::cuk
