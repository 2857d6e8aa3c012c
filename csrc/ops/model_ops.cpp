// Python surface of the nemotron_h model: _C.Model and _C.State (edgenano/engine.py wraps them).
#include <nanobind/stl/string.h>
#include <nanobind/stl/tuple.h>
#include <nanobind/stl/unique_ptr.h>
#include <nanobind/stl/vector.h>

#include <stdexcept>

#include "ops/engine.h"
#include "ops/nemotron_h.h"

namespace nb = nanobind;

namespace edgenano {

namespace {

using TensorTuple = std::tuple<std::string, int, std::vector<int64_t>, uint64_t, uint64_t>;

Config parse_config(const nb::dict &d) {
  auto get = [&](const char *k) -> nb::handle {
    if (!d.contains(k)) throw std::invalid_argument(std::string("config: missing key ") + k);
    return d[k];
  };
  Config c;
  c.n_vocab = nb::cast<int>(get("n_vocab"));
  c.n_embd = nb::cast<int>(get("n_embd"));
  c.n_layer = nb::cast<int>(get("n_layer"));
  for (const auto &k : nb::cast<std::vector<std::string>>(get("layer_kinds"))) {
    if (k == "mamba") c.kind.push_back(LayerKind::Mamba);
    else if (k == "attention") c.kind.push_back(LayerKind::Attention);
    else if (k == "mlp") c.kind.push_back(LayerKind::Mlp);
    else throw std::invalid_argument("config: unknown layer kind " + k);
  }
  c.n_ff = nb::cast<std::vector<int>>(get("n_ff"));
  c.n_head_kv = nb::cast<std::vector<int>>(get("n_head_kv"));
  c.n_head = nb::cast<int>(get("n_head"));
  c.head_dim = nb::cast<int>(get("head_dim"));
  c.ssm_d_conv = nb::cast<int>(get("ssm_d_conv"));
  c.ssm_d_state = nb::cast<int>(get("ssm_d_state"));
  c.ssm_n_group = nb::cast<int>(get("ssm_n_group"));
  c.ssm_d_inner = nb::cast<int>(get("ssm_d_inner"));
  c.ssm_n_head = nb::cast<int>(get("ssm_n_head"));
  c.eps = nb::cast<float>(get("eps"));
  return c;
}

std::unique_ptr<Model> make_model(const std::string &path, const nb::dict &config,
                                  const std::vector<TensorTuple> &tensors, int n_ctx,
                                  int n_threads, int n_batch, int kv_type) {
  std::vector<TensorInfo> infos;
  infos.reserve(tensors.size());
  for (const auto &[name, type, ne, offset, nbytes] : tensors)
    infos.push_back({name, type, ne, offset, nbytes});
  Config c = parse_config(config);
  nb::gil_scoped_release nogil;
  return std::make_unique<Model>(path, std::move(c), infos, n_ctx, n_threads, n_batch, kv_type);
}

using Ids = nb::ndarray<const int32_t, nb::ndim<1>, nb::c_contig, nb::device::cpu>;

nb::ndarray<nb::numpy, float> eval(Model &m, State &s, Ids ids, bool all_logits) {
  const size_t n = ids.shape(0), V = size_t(m.config().n_vocab);
  auto out = all_logits ? new_array<float>({n, V}) : new_array<float>({V});
  nb::gil_scoped_release nogil;
  m.eval(s, ids.data(), int(n), out.data(), all_logits);
  return out;
}

size_t state_bytes(const State &s) {
  size_t b = 0;
  for (const auto &v : s.conv) b += v.size() * sizeof(float);
  for (const auto &v : s.ssm) b += v.size() * sizeof(float);
  for (const auto &v : s.k) b += v.size();
  for (const auto &v : s.v) b += v.size();
  return b;
}

}  // namespace

void bind_model(nb::module_ &m) {
  nb::class_<State>(m, "State", "Per-sequence state of the native engine (make it with Model).")
      .def_ro("n_past", &State::n_past, "Tokens fed so far.")
      .def_prop_ro("nbytes", &state_bytes, "Bytes held (conv, SSM, KV buffers).")
      .def_prop_ro("tokens", [](const State &s) { return s.tokens; }, "Every token fed.");

  nb::class_<Model>(m, "Model", "nemotron_h on the native CPU engine, weights mmapped.")
      .def(nb::new_(&make_model), nb::arg("path"), nb::arg("config"), nb::arg("tensors"),
           nb::arg("n_ctx"), nb::arg("n_threads"), nb::arg("n_batch"), nb::arg("kv_type"),
           "tensors: (name, ggml type, ne, file offset, nbytes) for every tensor.")
      .def("new_state", &Model::new_state)
      .def("copy_state", &Model::copy_state, nb::arg("state"))
      .def("eval", &eval, nb::arg("state"), nb::arg("ids"), nb::arg("all_logits") = false,
           "Feed int32 ids; last logits (n_vocab) or all logits (n, n_vocab).")
      .def_prop_ro("n_ctx", &Model::n_ctx)
      .def_prop_ro("n_batch", &Model::n_batch)
      .def_prop_ro("n_threads", &Model::n_threads)
      .def_prop_ro("kv_type", &Model::kv_type)
      .def_prop_ro("n_vocab", [](const Model &x) { return x.config().n_vocab; });
}

}  // namespace edgenano
