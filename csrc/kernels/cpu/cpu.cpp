// The run-time CPU feature switch (see common.h).
#include <atomic>
#include <cstdlib>

#include "kernels/cpu/common.h"

namespace edgenano::kern {

namespace {
bool detect_avx2() {
#if defined(EDGENANO_X86) && (defined(__GNUC__) || defined(__clang__))
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
         __builtin_cpu_supports("f16c");
#else
  return false;
#endif
}

bool env_force_scalar() {
  const char *v = std::getenv("EDGENANO_FORCE_SCALAR");
  return v && *v && *v != '0';
}

std::atomic<bool> g_force_scalar{env_force_scalar()};
const bool g_has_avx2 = detect_avx2();
}  // namespace

bool cpu_has_avx2() { return g_has_avx2; }
bool use_avx2() { return g_has_avx2 && !g_force_scalar.load(std::memory_order_relaxed); }
void set_force_scalar(bool on) { g_force_scalar.store(on); }
bool force_scalar() { return g_force_scalar.load(); }

}  // namespace edgenano::kern
