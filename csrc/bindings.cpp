// edgenano._C: the module definition only. Each ops/ file registers its own functions.
#include <nanobind/nanobind.h>

#include "ops/ops.h"

NB_MODULE(_C, m) {
  m.doc() = "edgenano native kernels";
  edgenano::bind_quants(m);
  edgenano::bind_engine(m);
}
