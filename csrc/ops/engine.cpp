// The native engine's ops (filled in by the engine work).
#include "ops/ops.h"

namespace edgenano {
void bind_engine(nanobind::module_ &) {}
}  // namespace edgenano
