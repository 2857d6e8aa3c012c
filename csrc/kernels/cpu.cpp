// Type table and the run-time CPU feature switch.
#include <atomic>
#include <cstdlib>

#include "kernels/common.h"

namespace edgenano::kern {

namespace {
struct TypeInfo {
  int type;
  int block;
  size_t bytes;
  const char *name;
};
constexpr TypeInfo kTypes[] = {
    {T_F32, 1, 4, "F32"},       {T_F16, 1, 2, "F16"},       {T_BF16, 1, 2, "BF16"},
    {T_Q8_0, QK, 34, "Q8_0"},   {T_Q4_0, QK, 18, "Q4_0"},   {T_Q5_0, QK, 22, "Q5_0"},
    {T_Q4_1, QK, 20, "Q4_1"},   {T_Q5_1, QK, 24, "Q5_1"},   {T_Q4_K, QKK, 144, "Q4_K"},
    {T_Q5_K, QKK, 176, "Q5_K"}, {T_Q6_K, QKK, 210, "Q6_K"},
};
const TypeInfo *find(int type) {
  for (const auto &t : kTypes)
    if (t.type == type) return &t;
  return nullptr;
}

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

int type_block_size(int type) {
  auto *t = find(type);
  return t ? t->block : 0;
}
size_t type_block_bytes(int type) {
  auto *t = find(type);
  return t ? t->bytes : 0;
}
bool type_supported(int type) { return find(type) != nullptr; }
const char *type_name(int type) {
  auto *t = find(type);
  return t ? t->name : "unsupported";
}

size_t row_bytes(int type, int64_t n) {
  const TypeInfo *t = find(type);
  if (!t || n <= 0 || n % t->block) return 0;
  return size_t(n / t->block) * t->bytes;
}

bool cpu_has_avx2() { return g_has_avx2; }
bool use_avx2() { return g_has_avx2 && !g_force_scalar.load(std::memory_order_relaxed); }
void set_force_scalar(bool on) { g_force_scalar.store(on); }
bool force_scalar() { return g_force_scalar.load(); }

}  // namespace edgenano::kern
