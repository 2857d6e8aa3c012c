// The backends this build knows, by name: "cpu" always; "cuda" always listed, available only when
// built with CUDA and a device can run it; "cuda_emu" (the CUDA backend on the SIMT emulator, slow;
// for tests) always. A model asks the registry for its backend by name.
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

// The CUDA entry's reason (nullptr when it can run) and factory, defined by cuda_entry.cpp (which
// sees EDGENANO_HAS_CUDA); the emulated CUDA backend, in every build (cuda_emu_backend.cpp).
const char *cuda_unavailable_reason();
std::unique_ptr<Backend> make_cuda(const Options &o);
std::unique_ptr<Backend> make_cuda_emu_backend(const Options &o);

}  // namespace edgenano::backend
