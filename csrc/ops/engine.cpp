// The native engine's Python surface: kernel entry points (tests, benches) and the model.
#include "ops/engine.h"
#include "ops/ops.h"

namespace edgenano {
void bind_engine(nanobind::module_ &m) {
  bind_kernel_ops(m);
  bind_model(m);
}
}  // namespace edgenano
