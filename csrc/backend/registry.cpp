// Backend registry: name -> factory (see registry.h).
#include "backend/registry.h"

#include <stdexcept>

namespace edgenano::backend {

namespace {

struct Factory {
  const char *name;
  const char *(*unavailable)();  // nullptr when it always runs
  std::unique_ptr<Backend> (*make)(const Options &);
};

std::unique_ptr<Backend> make_cpu(const Options &o) { return make_cpu_backend(o.n_threads); }

const Factory kFactories[] = {
    {"cpu", nullptr, make_cpu},
    {"cuda", cuda_unavailable_reason, make_cuda},  // the reason says why not, where it cannot run
    {"cuda_emu", nullptr, make_cuda_emu_backend},
};

}  // namespace

std::vector<Entry> registry() {
  std::vector<Entry> out;
  for (const Factory &f : kFactories) {
    const char *why = f.unavailable ? f.unavailable() : nullptr;
    out.push_back({f.name, f.make && !why, why ? why : ""});
  }
  return out;
}

std::unique_ptr<Backend> make(const std::string &name, const Options &opt) {
  for (const Factory &f : kFactories) {
    if (name != f.name) continue;
    if (const char *why = f.unavailable ? f.unavailable() : nullptr)
      throw std::runtime_error("backend '" + name + "': " + why);
    return f.make(opt);
  }
  std::string known;
  for (const Factory &f : kFactories) known += std::string(known.empty() ? "" : ", ") + f.name;
  throw std::invalid_argument("unknown backend '" + name + "' (known: " + known + ")");
}

}  // namespace edgenano::backend
