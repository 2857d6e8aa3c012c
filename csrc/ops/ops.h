// Registration hooks: each ops/*.cpp defines one and checks arguments before calling kernels/.
#pragma once
#include <nanobind/nanobind.h>

namespace edgenano {
void bind_quants(nanobind::module_ &m);  // ops/quants.cpp: quantize / dequantize rows
void bind_engine(nanobind::module_ &m);  // ops/engine.cpp: matmuls, scan, attention, model
}  // namespace edgenano
