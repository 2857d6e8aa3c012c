// The device kernels' table (kernels/cuda/ops_table.h) for the GPU kernel tests (_C.cuda_dev).
#define EDGENANO_CUK_MAKE_TABLE 1
#include "kernels/cuda/ops_table.h"

namespace edgenano::cuk {
const OpsTable &cuda_ops() {
  static const OpsTable t = make_ops_table("cuda");
  return t;
}
}  // namespace edgenano::cuk
