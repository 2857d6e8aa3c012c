// Placeholder until the model lands.
#include "ops/engine.h"

namespace edgenano {
void bind_model(nanobind::module_ &) {}
}  // namespace edgenano
