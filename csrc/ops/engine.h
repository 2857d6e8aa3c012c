// The engine's binding pieces (ops/engine.cpp registers them) and small ndarray helpers.
#pragma once
#include <nanobind/nanobind.h>
#include <nanobind/ndarray.h>

#include <cstddef>
#include <initializer_list>
#include <mutex>

#include "kernels/matmul.h"
#include "kernels/threadpool.h"

namespace edgenano {

void bind_kernel_ops(nanobind::module_ &m);  // ops/kernel_ops.cpp: kernels, for tests and benches
void bind_model(nanobind::module_ &m);       // ops/model_ops.cpp: the nemotron_h model and state

// A thread pool (and workspace) of n_threads for the entry points, held by one caller at a time.
// Lease it after releasing the GIL, or hold the GIL throughout: the lease must never wait for
// the GIL, so declare it after any gil_scoped_release (it is dropped first).
struct PoolLease {
  std::unique_lock<std::mutex> lock;
  kern::ThreadPool &pool;
  kern::Workspace &ws;
};
PoolLease lease_pool(int n_threads);  // ops/kernel_ops.cpp; n_threads >= 1

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
