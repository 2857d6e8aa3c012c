// edgenano._C: module definition only; ops/ checks arguments, kernels/ compute.
#include <nanobind/nanobind.h>

namespace nb = nanobind;

NB_MODULE(_C, m) {
  m.doc() = "edgenano native kernels";
}
