// edgenano._C: the module definition only. Each bind/*.cpp registers its own functions.
#include <nanobind/nanobind.h>

#include "bind/bind.h"

NB_MODULE(_C, m) {
  m.doc() = "edgenano native engine: the nemotron_h model, its backends, ggml formats, kernels";
  edgenano::bind_quants(m);
  edgenano::bind_kernels(m);
  edgenano::bind_model(m);
  edgenano::bind_cuda_emu(m);
}
