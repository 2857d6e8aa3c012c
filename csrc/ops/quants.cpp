// Quantize / dequantize ggml block formats (filled in by the quantizer work).
#include "ops/ops.h"

namespace edgenano {
void bind_quants(nanobind::module_ &) {}
}  // namespace edgenano
