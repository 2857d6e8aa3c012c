// Python entry points for the ggml block formats: check shapes and type ids against the format
// layer's table, then hand raw pointers to kernels/quantize (on the thread pool, GIL released).
#include <nanobind/ndarray.h>
#include <nanobind/stl/string.h>
#include <nanobind/stl/vector.h>

#include <algorithm>
#include <string>
#include <thread>
#include <vector>

#include "ggml/format.h"
#include "kernels/cpu/quantize.h"
#include "bind/bind.h"

namespace nb = nanobind;

namespace edgenano {
namespace {

using F32Matrix = nb::ndarray<const float, nb::ndim<2>, nb::c_contig, nb::device::cpu>;
using U8Array = nb::ndarray<const uint8_t, nb::c_contig, nb::device::cpu>;

std::vector<int> native_types() {
  size_t n = 0;
  const ggml::TypeTraits *t = ggml::all_types(&n);
  std::vector<int> types;
  for (size_t i = 0; i < n; ++i) types.push_back(t[i].type);
  return types;
}

int64_t checked_block_size(int type) {
  const int64_t bs = ggml::type_block_size(type);
  if (bs == 0) throw nb::value_error(("unsupported ggml type id " + std::to_string(type)).c_str());
  return bs;
}

void check_cols(int type, int64_t cols) {
  const int64_t bs = checked_block_size(type);
  if (cols % bs != 0)
    throw nb::value_error(("row length " + std::to_string(cols) + " is not a multiple of the " +
                           std::to_string(bs) + "-element block of ggml type " +
                           std::to_string(type))
                              .c_str());
}

template <typename T>
nb::ndarray<nb::numpy, T, nb::ndim<2>> new_matrix(int64_t rows, int64_t cols, T **data) {
  T *buf = new T[static_cast<size_t>(rows * cols)];
  nb::capsule owner(buf, [](void *p) noexcept { delete[] static_cast<T *>(p); });
  *data = buf;
  return nb::ndarray<nb::numpy, T, nb::ndim<2>>(
      buf, {static_cast<size_t>(rows), static_cast<size_t>(cols)}, owner);
}

// 0 threads: every core.
int threads(int n_threads) {
  return n_threads > 0 ? n_threads : std::max(1, int(std::thread::hardware_concurrency()));
}

nb::ndarray<nb::numpy, uint8_t, nb::ndim<2>> py_quantize(F32Matrix x, int type, int n_threads) {
  const int64_t rows = static_cast<int64_t>(x.shape(0)), cols = static_cast<int64_t>(x.shape(1));
  check_cols(type, cols);
  const int64_t row_bytes = int64_t(ggml::row_bytes(type, cols));
  uint8_t *out;
  auto result = new_matrix<uint8_t>(rows, row_bytes, &out);
  {
    nb::gil_scoped_release release;
    kern::quantize(type, x.data(), out, rows * cols, lease_pool(threads(n_threads)).pool);
  }
  return result;
}

nb::ndarray<nb::numpy, float, nb::ndim<2>> py_dequantize(U8Array data, int type, int64_t rows,
                                                         int64_t cols, int n_threads) {
  if (rows < 0 || cols < 0) throw nb::value_error("rows and cols must be non-negative");
  check_cols(type, cols);
  const int64_t want =
      rows * (cols / ggml::type_block_size(type)) * int64_t(ggml::type_block_bytes(type));
  if (static_cast<int64_t>(data.size()) != want)
    throw nb::value_error(("expected " + std::to_string(want) + " bytes for " +
                           std::to_string(rows) + " rows of " + std::to_string(cols) +
                           " elements of ggml type " + std::to_string(type) + ", got " +
                           std::to_string(data.size()))
                              .c_str());
  float *out;
  auto result = new_matrix<float>(rows, cols, &out);
  {
    nb::gil_scoped_release release;
    kern::dequantize(type, data.data(), out, rows * cols, lease_pool(threads(n_threads)).pool);
  }
  return result;
}

}  // namespace

void bind_quants(nb::module_ &m) {
  m.def("quantize", &py_quantize, nb::arg("x"), nb::arg("type_id"), nb::arg("n_threads") = 0,
        "Quantize a C-contiguous float32 (rows, cols) array to ggml blocks: uint8 "
        "(rows, bytes_per_row). cols must be a multiple of the type's block size.");
  m.def("dequantize", &py_dequantize, nb::arg("data"), nb::arg("type_id"), nb::arg("rows"),
        nb::arg("cols"), nb::arg("n_threads") = 0,
        "Dequantize contiguous ggml blocks to float32 (rows, cols).");
  m.def("quant_types", &native_types, "ggml type ids the native quantizer handles.");
  m.def(
      "quant_simd",
      [](bool enabled) {
        const bool previous = !kern::force_scalar();
        kern::set_force_scalar(!enabled);
        return previous;
      },
      nb::arg("enabled"),
      "Use the AVX2 kernels where the CPU has them (default True; the same switch as "
      "kernels.set_force_scalar); returns the previous setting. Both paths of a quantizer write "
      "identical bytes.");
  m.def("block_size", &checked_block_size, nb::arg("type_id"), "Elements per block.");
  m.def(
      "type_size",
      [](int type) {
        checked_block_size(type);
        return int64_t(ggml::type_block_bytes(type));
      },
      nb::arg("type_id"), "Bytes per block.");
}

}  // namespace edgenano
