// Python entry points for the ggml block formats: check shapes and type ids, then hand raw
// pointers to kernels/quants (threaded, GIL released).
#include <nanobind/ndarray.h>
#include <nanobind/stl/string.h>
#include <nanobind/stl/vector.h>

#include <string>
#include <vector>

#include "kernels/quants.h"
#include "ops/ops.h"

namespace nb = nanobind;

namespace edgenano {
namespace {

using F32Matrix = nb::ndarray<const float, nb::ndim<2>, nb::c_contig, nb::device::cpu>;
using U8Array = nb::ndarray<const uint8_t, nb::c_contig, nb::device::cpu>;

const std::vector<int> &native_types() {
  static const std::vector<int> types = {QT_F32,  QT_F16,  QT_BF16, QT_Q8_0, QT_Q4_0, QT_Q4_1,
                                         QT_Q5_0, QT_Q5_1, QT_Q4_K, QT_Q5_K, QT_Q6_K};
  return types;
}

int64_t checked_block_size(int type) {
  const int64_t bs = qtype_block_size(type);
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

nb::ndarray<nb::numpy, uint8_t, nb::ndim<2>> py_quantize(F32Matrix x, int type, int n_threads) {
  const int64_t rows = static_cast<int64_t>(x.shape(0)), cols = static_cast<int64_t>(x.shape(1));
  check_cols(type, cols);
  const int64_t row_bytes = cols / qtype_block_size(type) * qtype_type_size(type);
  uint8_t *out;
  auto result = new_matrix<uint8_t>(rows, row_bytes, &out);
  {
    nb::gil_scoped_release release;
    quantize(type, x.data(), out, rows * cols, n_threads);
  }
  return result;
}

nb::ndarray<nb::numpy, float, nb::ndim<2>> py_dequantize(U8Array data, int type, int64_t rows,
                                                         int64_t cols, int n_threads) {
  if (rows < 0 || cols < 0) throw nb::value_error("rows and cols must be non-negative");
  check_cols(type, cols);
  const int64_t want = rows * (cols / qtype_block_size(type)) * qtype_type_size(type);
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
    dequantize(type, data.data(), out, rows * cols, n_threads);
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
  m.def("quant_simd", &set_quant_simd, nb::arg("enabled"),
        "Use the AVX2 quantizers where the CPU has them (default True); returns the previous "
        "setting. Both paths write identical bytes.");
  m.def("block_size", &checked_block_size, nb::arg("type_id"), "Elements per block.");
  m.def(
      "type_size",
      [](int type) {
        checked_block_size(type);
        return qtype_type_size(type);
      },
      nb::arg("type_id"), "Bytes per block.");
}

}  // namespace edgenano
