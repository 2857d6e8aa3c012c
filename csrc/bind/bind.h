// The Python glue (nanobind): each bind/*.cpp registers its part of edgenano._C, checks arguments
// and converts NumPy arrays, then calls the model, the backend registry or the kernels.
#pragma once
#include <nanobind/nanobind.h>
#include <nanobind/ndarray.h>

#include <cstddef>
#include <initializer_list>
#include <mutex>

#include "kernels/cpu/matmul.h"
#include "kernels/cpu/threadpool.h"

namespace edgenano {

void bind_quants(nanobind::module_ &m);   // bind/quants.cpp: quantize / dequantize rows
void bind_kernels(nanobind::module_ &m);  // bind/kernels.cpp: _C.kernels, for tests and benches
void bind_model(nanobind::module_ &m);    // bind/model.cpp: Model, State, backend_registry
void bind_cuda_emu(nanobind::module_ &m);  // bind/cuda_emu.cpp: _C.cuda_emu (emulated kernels)

// A thread pool (and workspace) of n_threads for the entry points, held by one caller at a time.
// Lease it after releasing the GIL, or hold the GIL throughout: the lease must never wait for
// the GIL, so declare it after any gil_scoped_release (it is dropped first).
struct PoolLease {
  std::unique_lock<std::mutex> lock;
  kern::ThreadPool &pool;
  kern::Workspace &ws;
};
PoolLease lease_pool(int n_threads);  // bind/kernels.cpp; n_threads >= 1

// A new C-contiguous NumPy array owning its memory (zero-filled).
template <class T>
nanobind::ndarray<nanobind::numpy, T> new_array(std::initializer_list<size_t> shape) {
  size_t n = 1;
  for (size_t s : shape) n *= s;
  T *data = new T[n ? n : 1]();
  nanobind::capsule owner(data, [](void *p) noexcept { delete[] static_cast<T *>(p); });
  return nanobind::ndarray<nanobind::numpy, T>(data, shape.size(), shape.begin(), owner);
}

}  // namespace edgenano
