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

// AVX-512 F/BW/VL/DQ with VNNI; GCC's and Clang's checks include the OS's saving of the zmm and
// mask state (XCR0), so a kernel or VM that does not enable it reads as "no".
bool detect_avx512() {
#if defined(EDGENANO_X86) && defined(EDGENANO_AVX512) && (defined(__GNUC__) || defined(__clang__))
  __builtin_cpu_init();
  return detect_avx2() && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
         __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq") &&
         __builtin_cpu_supports("avx512vnni");
#else
  return false;
#endif
}

bool env_on(const char *name) {
  const char *v = std::getenv(name);
  return v && *v && *v != '0';
}

std::atomic<bool> g_force_scalar{env_on("EDGENANO_FORCE_SCALAR")};
std::atomic<bool> g_allow_avx512{!env_on("EDGENANO_NO_AVX512")};
const bool g_has_avx2 = detect_avx2();
const bool g_has_avx512 = detect_avx512();
}  // namespace

bool cpu_has_avx2() { return g_has_avx2; }
bool use_avx2() { return g_has_avx2 && !g_force_scalar.load(std::memory_order_relaxed); }
void set_force_scalar(bool on) { g_force_scalar.store(on); }
bool force_scalar() { return g_force_scalar.load(); }

bool cpu_has_avx512() { return g_has_avx512; }
bool use_avx512() {
  return g_has_avx512 && use_avx2() && g_allow_avx512.load(std::memory_order_relaxed);
}
void set_allow_avx512(bool on) { g_allow_avx512.store(on); }
const char *isa_name() { return use_avx512() ? "avx512-vnni" : use_avx2() ? "avx2" : "scalar"; }

}  // namespace edgenano::kern
