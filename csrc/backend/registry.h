// The backends this build knows, by name: "cpu" always; "cuda" always listed, available only when
// built with CUDA and implemented. A model asks the registry for its backend by name.
#pragma once
#include <memory>
#include <string>
#include <vector>

#include "backend/backend.h"

namespace edgenano::backend {

struct Options {
  int n_threads = 1;  // host threads (the CPU backend's pool)
};

struct Entry {
  std::string name;
  bool available = false;
  std::string reason;  // why it cannot run here; empty when available
};

// Every known backend in a fixed order (cpu first).
std::vector<Entry> registry();

// A new backend; std::runtime_error with the entry's reason when it is not available here, and
// std::invalid_argument for a name the registry does not know.
std::unique_ptr<Backend> make(const std::string &name, const Options &opt);

// The CUDA entry's reason, defined by cuda_entry.cpp (which sees EDGENANO_HAS_CUDA).
const char *cuda_unavailable_reason();

}  // namespace edgenano::backend
