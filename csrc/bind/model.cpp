// Python surface of the nemotron_h model: _C.Model and _C.State (edgenano/engine.py wraps them),
// and _C.backend_registry(): argument checks and NumPy conversion, then models/nemotron_h.
#include <nanobind/stl/string.h>
#include <nanobind/stl/tuple.h>
#include <nanobind/stl/unique_ptr.h>
#include <nanobind/stl/vector.h>

#include <stdexcept>
#include <unordered_map>

#include "backend/registry.h"
#include "bind/bind.h"
#include "models/nemotron_h.h"

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
    if (k == "mamba")
      c.kind.push_back(LayerKind::Mamba);
    else if (k == "attention")
      c.kind.push_back(LayerKind::Attention);
    else if (k == "mlp")
      c.kind.push_back(LayerKind::Mlp);
    else if (k == "moe")
      c.kind.push_back(LayerKind::Moe);
    else
      throw std::invalid_argument("config: unknown layer kind " + k);
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
  if (d.contains("n_expert")) {  // mixture of experts (absent or 0 for nemotron_h)
    c.n_expert = nb::cast<int>(d["n_expert"]);
    c.n_expert_used = nb::cast<int>(get("n_expert_used"));
    c.n_ff_shexp = nb::cast<int>(get("n_ff_shexp"));
    c.moe_latent = nb::cast<int>(get("moe_latent"));
    c.expert_weights_norm = nb::cast<bool>(get("expert_weights_norm"));
    c.expert_scale = nb::cast<float>(get("expert_scale"));
  }
  return c;
}

std::unique_ptr<Model> make_model(const std::string &path, const nb::dict &config,
                                  const std::vector<TensorTuple> &tensors, int n_ctx, int n_threads,
                                  int n_batch, int kv_type, const std::string &backend,
                                  bool use_mmap) {
  std::vector<TensorInfo> infos;
  infos.reserve(tensors.size());
  for (const auto &[name, type, ne, offset, nbytes] : tensors)
    infos.push_back({name, type, ne, offset, nbytes});
  Config c = parse_config(config);
  nb::gil_scoped_release nogil;
  return std::make_unique<Model>(path, std::move(c), infos, n_ctx, n_threads, n_batch, kv_type,
                                 backend, use_mmap);
}

using Ids = nb::ndarray<const int32_t, nb::ndim<1>, nb::c_contig, nb::device::cpu>;

nb::ndarray<nb::numpy, float> eval(Model &m, State &s, Ids ids, bool all_logits) {
  const size_t n = ids.shape(0), V = size_t(m.config().n_vocab);
  auto out = all_logits ? new_array<float>({n, V}) : new_array<float>({V});
  nb::gil_scoped_release nogil;
  m.eval(s, ids.data(), int(n), out.data(), all_logits);
  return out;
}

// One decode step for B sequences: ids[b] into states[b]; logits (B, n_vocab).
nb::ndarray<nb::numpy, float> eval_batch(Model &m, const std::vector<State *> &states, Ids ids) {
  const size_t B = states.size(), V = size_t(m.config().n_vocab);
  if (ids.shape(0) != B)
    throw std::invalid_argument("eval_batch: " + std::to_string(ids.shape(0)) + " ids for " +
                                std::to_string(B) + " states");
  auto out = new_array<float>({B, V});
  nb::gil_scoped_release nogil;
  m.eval_batch(states, ids.data(), out.data());
  return out;
}

// The state as named arrays (copies): conv.i (K-1, C) and ssm.i (H, P, N) float32 per Mamba layer,
// k.i / v.i (n_past, row bytes) int8 holding the KV rows in the model's KV type, and kv_type.
nb::dict export_state(const Model &m, const State &s) {
  nb::dict out;
  m.export_state(s, [&](const std::string &name, bool f32, const std::vector<size_t> &shape) {
    auto put = [&](auto a) {
      void *p = a.data();
      out[name.c_str()] = a;
      return p;
    };
    if (shape.size() == 3) return put(new_array<float>({shape[0], shape[1], shape[2]}));
    return f32 ? put(new_array<float>({shape[0], shape[1]}))
               : put(new_array<int8_t>({shape[0], shape[1]}));
  });
  auto kv = new_array<int32_t>({1});
  *kv.data() = m.kv_type();
  out["kv_type"] = kv;
  return out;
}

using Bytes = nb::ndarray<nb::c_contig, nb::device::cpu>;

std::unique_ptr<State> import_state(const Model &m, const nb::dict &tensors,
                                    const std::vector<int32_t> &tokens) {
  std::unordered_map<std::string, Bytes> arrays;
  for (auto [k, v] : tensors) arrays.emplace(nb::cast<std::string>(k), nb::cast<Bytes>(v));
  auto kv = arrays.find("kv_type");
  if (kv == arrays.end() || kv->second.nbytes() != 4)
    throw std::invalid_argument("state has no kv_type: not a native-engine state");
  const int32_t saved_kv = *static_cast<const int32_t *>(kv->second.data());
  if (saved_kv != m.kv_type())
    throw std::invalid_argument("state was saved with KV cache type " + std::to_string(saved_kv) +
                                " (ggml type id), this model runs " + std::to_string(m.kv_type()) +
                                ": open it with the same kv_type");
  auto buffer = [&](const std::string &name, size_t nbytes) -> const void * {
    auto it = arrays.find(name);
    if (it == arrays.end()) throw std::invalid_argument("state is missing " + name);
    if (it->second.nbytes() != nbytes)
      throw std::invalid_argument(name + " holds " + std::to_string(it->second.nbytes()) +
                                  " bytes, this model expects " + std::to_string(nbytes));
    return it->second.data();
  };
  return m.restore_state(tokens, buffer);
}

}  // namespace

void bind_model(nb::module_ &m) {
  nb::class_<State>(m, "State", "Per-sequence state of the native engine (make it with Model).")
      .def_ro("n_past", &State::n_past, "Tokens fed so far.")
      .def_prop_ro("nbytes", &State::nbytes, "Bytes held (conv, SSM, KV buffers).")
      .def_prop_ro("tokens", [](const State &s) { return s.tokens; }, "Every token fed.");

  nb::class_<Model>(m, "Model", "nemotron_h on a native backend (cpu: weights mmapped).")
      .def(nb::new_(&make_model), nb::arg("path"), nb::arg("config"), nb::arg("tensors"),
           nb::arg("n_ctx"), nb::arg("n_threads"), nb::arg("n_batch"), nb::arg("kv_type"),
           nb::arg("backend") = "cpu", nb::arg("use_mmap") = true,
           "tensors: (name, ggml type, ne, file offset, nbytes) for every tensor; backend: a "
           "name from backend_registry() (RuntimeError with its reason when it cannot run); "
           "use_mmap false: the file is read into memory instead of mapped.")
      .def("new_state", &Model::new_state)
      .def("copy_state", &Model::copy_state, nb::arg("state"))
      .def("export_state", &export_state, nb::arg("state"),
           "The state as named arrays (conv.i, ssm.i, k.i, v.i, kv_type), copied.")
      .def("import_state", &import_state, nb::arg("tensors"), nb::arg("tokens"),
           "A new state from export_state's arrays and the tokens they hold.")
      .def("eval", &eval, nb::arg("state"), nb::arg("ids"), nb::arg("all_logits") = false,
           "Feed int32 ids; last logits (n_vocab) or all logits (n, n_vocab).")
      .def("eval_batch", &eval_batch, nb::arg("states"), nb::arg("ids"),
           "One decode step for several sequences: ids[b] fed into states[b] (distinct states); "
           "logits (B, n_vocab). Matmuls over the batch, conv/scan/attention per sequence.")
      .def_prop_rw("profiling", &Model::profiling, &Model::set_profiling,
                   "Time every operation (also EDGENANO_PROFILE=1).")
      .def(
          "profile",
          [](Model &m, bool reset) {
            std::vector<std::tuple<std::string, int64_t, double, double, double>> out;
            for (const auto &e : m.profile(reset))
              out.emplace_back(e.op, e.calls, e.seconds, e.bytes, e.flops);
            return out;
          },
          nb::arg("reset") = false,
          "(op, calls, seconds, weight bytes read, flops) since the last reset.")
      .def("set_graph_mode", &Model::set_graph_mode, nb::arg("mode"),
           "Decode-step graphs (CUDA): 1 on, 0 off, 2 tests' planted bug (stale replays).")
      .def(
          "graph_stats",
          [](const Model &m) {
            const backend::GraphStats g = m.graph_stats();
            nb::dict d;
            d["captured"] = g.captured, d["instantiated"] = g.instantiated;
            d["updated"] = g.updated, d["aborted"] = g.aborted;
            return d;
          },
          "Decode steps launched as graphs, instantiations, in-place updates, aborted captures.")
      .def_prop_ro("n_ctx", &Model::n_ctx)
      .def_prop_ro("n_batch", &Model::n_batch)
      .def_prop_ro("n_threads", &Model::n_threads)
      .def_prop_ro("kv_type", &Model::kv_type)
      .def_prop_ro("n_vocab", [](const Model &x) { return x.config().n_vocab; })
      .def_prop_ro("backend", &Model::backend_name, "The backend it runs on.")
      .def_prop_ro("packed_bytes", &Model::packed_bytes,
                   "Bytes of matmul weights held in the backend's own layout (the CPU row-lane "
                   "dots' 16-row interleave; 0 with EDGENANO_REPACK=0 or where it has none).");

  m.def(
      "backend_registry",
      [] {
        nb::dict out;
        for (const auto &e : backend::registry())
          out[e.name.c_str()] = nb::make_tuple(e.available, e.reason);
        return out;
      },
      "Every backend this build knows: name -> (available, reason it cannot run; '' if it can).");
}

}  // namespace edgenano
