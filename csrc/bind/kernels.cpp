// _C.kernels: the CPU kernels' entry points for tests and benchmarks (shapes and types checked
// here, then raw pointers to kernels/cpu), and the entry points' thread pools.
#include <cmath>
#include <cstring>
#include <map>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include <nanobind/stl/pair.h>
#include <nanobind/stl/string.h>

#include "kernels/cpu/bandwidth.h"
#include "kernels/cpu/common.h"
#include "kernels/cpu/matmul.h"
#include "kernels/cpu/nn.h"
#include "kernels/cpu/threadpool.h"
#include "bind/bind.h"

namespace nb = nanobind;

namespace edgenano {

PoolLease lease_pool(int n_threads) {
  struct Entry {
    std::mutex mu;
    kern::ThreadPool pool;
    kern::Workspace ws;
    explicit Entry(int n) : pool(n) {}
  };
  static std::mutex registry_mu;
  static std::map<int, std::unique_ptr<Entry>> pools;  // idle pools park their threads
  if (n_threads < 1) throw std::invalid_argument("n_threads must be >= 1");
  Entry *e;
  {
    std::lock_guard<std::mutex> g(registry_mu);
    auto &slot = pools[n_threads];
    if (!slot) slot = std::make_unique<Entry>(n_threads);
    e = slot.get();
  }
  return {std::unique_lock<std::mutex>(e->mu), e->pool, e->ws};
}

namespace {

template <class T, size_t D>
using In = nb::ndarray<const T, nb::ndim<D>, nb::c_contig, nb::device::cpu>;

kern::Weight make_weight(const In<uint8_t, 2> &w, int type, int64_t n_in) {
  if (!kern::type_supported(type))
    throw std::invalid_argument("unsupported ggml type " + std::to_string(type));
  const size_t rb = kern::row_bytes(type, n_in);
  if (rb == 0 || rb != w.shape(1))
    throw std::invalid_argument(std::string("row of ") + std::to_string(w.shape(1)) +
                                " bytes does not hold " + std::to_string(n_in) + " " +
                                kern::type_name(type) + " values");
  return {type, w.data(), n_in, int64_t(w.shape(0)), rb};
}

kern::MatmulPath parse_path(const std::string &p) {
  if (p == "auto") return kern::MatmulPath::Auto;
  if (p == "vec") return kern::MatmulPath::Vec;
  if (p == "gemm") return kern::MatmulPath::Gemm;
  if (p == "i8gemm") return kern::MatmulPath::I8Gemm;
  throw std::invalid_argument("path must be auto, vec, gemm or i8gemm");
}

nb::ndarray<nb::numpy, float> matmul(In<uint8_t, 2> w, int type, int64_t n_in, In<float, 2> x,
                                     const std::string &path, int n_threads, bool packed) {
  kern::Weight wt = make_weight(w, type, n_in);
  if (packed && !kern::packable(type))
    throw std::invalid_argument(std::string("packed: this CPU's kernels have no packed ") +
                                kern::type_name(type));
  wt.packed = packed;
  if (int64_t(x.shape(1)) != n_in) throw std::invalid_argument("x.shape[1] != n_in");
  auto y = new_array<float>({x.shape(0), size_t(wt.n_out)});
  const auto mode = parse_path(path);
  if (n_threads < 1) throw std::invalid_argument("n_threads must be >= 1");
  nb::gil_scoped_release nogil;
  auto lease = lease_pool(n_threads);
  kern::matmul(wt, x.data(), n_in, y.data(), wt.n_out, int(x.shape(0)), false, lease.pool, lease.ws,
               mode);
  return y;
}

// pack_rows16 (pack) or unpack_rows16 of rows in ggml's layout / packed.
nb::ndarray<nb::numpy, uint8_t> repack(In<uint8_t, 2> w, int type, int64_t n_in, bool pack) {
  const kern::Weight wt = make_weight(w, type, n_in);
  auto y = new_array<uint8_t>({w.shape(0), w.shape(1)});
  (pack ? kern::pack_rows16 : kern::unpack_rows16)(type, n_in, wt.data, y.data(), wt.n_out);
  return y;
}

nb::ndarray<nb::numpy, float> dequantize(In<uint8_t, 2> w, int type, int64_t n_in) {
  const kern::Weight wt = make_weight(w, type, n_in);
  auto y = new_array<float>({size_t(wt.n_out), size_t(n_in)});
  for (int64_t r = 0; r < wt.n_out; ++r)
    kern::dequantize_row(type, wt.data + r * wt.row_bytes, y.data() + r * n_in, n_in);
  return y;
}

using F32 = nb::ndarray<nb::numpy, float>;

void need(bool ok, const char *what) {
  if (!ok) throw std::invalid_argument(what);
}

F32 rmsnorm(In<float, 2> x, In<float, 1> w, float eps) {
  need(w.shape(0) == x.shape(1), "rmsnorm: w must have x.shape[1] values");
  const int64_t n = int64_t(x.shape(1));
  auto y = new_array<float>({x.shape(0), x.shape(1)});
  kern::rmsnorm(x.data(), n, w.data(), y.data(), n, int(x.shape(0)), n, eps, lease_pool(1).pool);
  return y;
}

F32 gated_rmsnorm(In<float, 2> y, In<float, 2> z, In<float, 1> w, int n_group, float eps) {
  need(z.shape(0) == y.shape(0) && z.shape(1) == y.shape(1) && w.shape(0) == y.shape(1),
       "gated_rmsnorm: y, z (T, D) and w (D) required");
  const int64_t D = int64_t(y.shape(1));
  auto out = new_array<float>({y.shape(0), y.shape(1)});
  kern::gated_rmsnorm(y.data(), D, z.data(), D, w.data(), out.data(), D, int(y.shape(0)), D,
                      n_group, eps, lease_pool(2).pool);
  return out;
}

F32 relu2(In<float, 2> x) {
  auto y = new_array<float>({x.shape(0), x.shape(1)});
  std::memcpy(y.data(), x.data(), x.size() * sizeof(float));
  kern::relu2(y.data(), int64_t(x.shape(1)), int(x.shape(0)), int64_t(x.shape(1)),
              lease_pool(1).pool);
  return y;
}

F32 softplus(In<float, 2> x, In<float, 1> bias) {
  need(bias.shape(0) == x.shape(1), "softplus: bias must have x.shape[1] values");
  auto y = new_array<float>({x.shape(0), x.shape(1)});
  const int H = int(x.shape(1));
  kern::softplus_bias(x.data(), H, bias.data(), y.data(), H, int(x.shape(0)), H);
  return y;
}

std::pair<F32, F32> causal_conv(In<float, 2> x, In<float, 2> state, In<float, 2> w, In<float, 1> b,
                                bool silu) {
  const size_t T = x.shape(0), C = x.shape(1), K = w.shape(1);
  need(w.shape(0) == C && b.shape(0) == C && state.shape(1) == C && state.shape(0) + 1 == K,
       "causal_conv: x (T, C), state (K-1, C), w (C, K), b (C) required");
  auto y = new_array<float>({T, C});
  auto st = new_array<float>({K - 1, C});
  std::memcpy(st.data(), state.data(), state.size() * sizeof(float));
  kern::ConvParams p;
  p.T = int(T), p.C = int64_t(C), p.K = int(K), p.x = x.data(), p.ldx = int64_t(C);
  p.w = w.data(), p.b = b.data(), p.state = st.data(), p.y = y.data(), p.ldy = int64_t(C);
  p.silu = silu;
  kern::causal_conv(p, lease_pool(2).pool);
  return {y, st};
}

std::pair<F32, F32> ssm_scan(In<float, 3> state, In<float, 3> x, In<float, 2> dt, In<float, 1> A,
                             In<float, 3> B, In<float, 3> C, In<float, 1> D, int chunk) {
  const size_t T = x.shape(0), H = x.shape(1), P = x.shape(2), G = B.shape(1), N = B.shape(2);
  need(state.shape(0) == H && state.shape(1) == P && state.shape(2) == N && dt.shape(0) == T &&
           dt.shape(1) == H && A.shape(0) == H && D.shape(0) == H && B.shape(0) == T &&
           C.shape(0) == T && C.shape(1) == G && C.shape(2) == N,
       "ssm_scan: state (H,P,N), x (T,H,P), dt (T,H), A (H), B, C (T,G,N), D (H) required");
  auto y = new_array<float>({T, H, P});
  auto st = new_array<float>({H, P, N});
  std::memcpy(st.data(), state.data(), state.size() * sizeof(float));
  kern::ScanParams p;
  p.T = int(T), p.H = int(H), p.P = int(P), p.N = int(N), p.G = int(G);
  p.x = x.data(), p.ldx = int64_t(H * P), p.B = B.data(), p.C = C.data(), p.ldbc = int64_t(G * N);
  p.dt = dt.data(), p.lddt = int64_t(H), p.A = A.data(), p.D = D.data(), p.state = st.data();
  p.y = y.data(), p.ldy = int64_t(H * P);
  auto lease = lease_pool(2);
  kern::ssm_scan(p, chunk, lease.pool, lease.ws);
  return {y, st};
}

nb::ndarray<nb::numpy, uint8_t> kv_store(In<float, 2> x, int kv_type) {
  const size_t rb = kern::row_bytes(kv_type, int64_t(x.shape(1)));
  need(rb != 0 && (kv_type == kern::T_F32 || kv_type == kern::T_F16 || kv_type == kern::T_Q8_0),
       "kv_store: kv_type must be F32, F16 or Q8_0 (whole blocks)");
  auto out = new_array<uint8_t>({x.shape(0), rb});
  kern::kv_store(x.data(), int64_t(x.shape(1)), int(x.shape(0)), int64_t(x.shape(1)), kv_type,
                 out.data());
  return out;
}

F32 attention(In<float, 3> q, In<uint8_t, 2> k, In<uint8_t, 2> v, int n_past, int n_head_kv,
              int kv_type) {
  const size_t T = q.shape(0), Hq = q.shape(1), d = q.shape(2);
  const size_t rb = kern::row_bytes(kv_type, int64_t(n_head_kv) * int64_t(d));
  need(rb != 0 && k.shape(1) == rb && v.shape(1) == rb && k.shape(0) == v.shape(0) &&
           k.shape(0) == size_t(n_past) + T && n_head_kv > 0 && Hq % size_t(n_head_kv) == 0,
       "attention: q (T, Hq, d) and caches (n_past + T, row bytes of Hkv*d values) required");
  auto out = new_array<float>({T, Hq * d});
  kern::AttnParams p;
  p.T = int(T), p.n_past = n_past, p.n_head = int(Hq), p.n_head_kv = n_head_kv;
  p.head_dim = int(d), p.q = q.data(), p.ldq = int64_t(Hq * d), p.k = k.data(), p.v = v.data();
  p.kv_row_bytes = rb, p.kv_type = kv_type, p.scale = 1.f / std::sqrt(float(d));
  p.out = out.data(), p.ldo = int64_t(Hq * d);
  auto lease = lease_pool(2);
  kern::attention(p, lease.pool, lease.ws);
  return out;
}

}  // namespace

void bind_kernels(nb::module_ &parent) {
  nb::module_ m = parent.def_submodule("kernels", "The engine's CPU kernels (tests, benchmarks).");
  m.def("cpu_has_avx2", &kern::cpu_has_avx2, "Whether this CPU has AVX2, FMA and F16C.");
  m.def("set_force_scalar", &kern::set_force_scalar, nb::arg("on"),
        "Force the scalar kernels (also EDGENANO_FORCE_SCALAR=1).");
  m.def("force_scalar", &kern::force_scalar);
  m.def("cpu_has_avx512", &kern::cpu_has_avx512,
        "Whether this CPU and OS have AVX-512 F/BW/VL/DQ with VNNI and the build has its kernels.");
  m.def("set_allow_avx512", &kern::set_allow_avx512, nb::arg("on"),
        "Allow the AVX-512 VNNI decode dots (default; EDGENANO_NO_AVX512=1 turns them off).");
  m.def("isa", &kern::isa_name, "The kernels in use: 'avx512-vnni', 'avx2' or 'scalar'.");
  m.def(
      "matmul_path",
      [](int type, int T, const std::string &path) {
        switch (kern::resolve_path(type, T, parse_path(path))) {
          case kern::MatmulPath::I8Gemm: return "i8gemm";
          case kern::MatmulPath::Gemm: return "gemm";
          default: return "vec";
        }
      },
      nb::arg("type"), nb::arg("T"), nb::arg("path") = "auto",
      "The kernel matmul(path=path) runs for T tokens of this type on this CPU: 'vec' (dot "
      "products; int8 activations for quantized types), 'i8gemm' (int8 panels, Q4_0/Q5_0 on "
      "AVX2) or 'gemm' (f32 panels, f32 activations).");
  m.def("matmul", &matmul, nb::arg("w"), nb::arg("type"), nb::arg("n_in"), nb::arg("x"),
        nb::arg("path") = "auto", nb::arg("n_threads") = 1, nb::arg("packed") = false,
        "y (T, n_out) = x (T, n_in) @ W.T for W given as raw GGUF rows (n_out, row_bytes), or "
        "with packed as pack_rows16 made them (then the row-lane dots run, whatever the path).");
  m.def("packable", &kern::packable, nb::arg("type"),
        "Whether this CPU's kernels read the 16-row packed layout of this type (the engine then "
        "packs such weights at load).");
  m.def(
      "pack_rows16",
      [](In<uint8_t, 2> w, int type, int64_t n_in) { return repack(w, type, n_in, true); },
      nb::arg("w"), nb::arg("type"), nb::arg("n_in"),
      "GGUF rows (n_out, row_bytes) of Q4_0/Q5_0/Q8_0/Q4_K in the row-lane dots' 16-row layout.");
  m.def(
      "unpack_rows16",
      [](In<uint8_t, 2> w, int type, int64_t n_in) { return repack(w, type, n_in, false); },
      nb::arg("w"), nb::arg("type"), nb::arg("n_in"), "pack_rows16 undone.");
  m.def("rmsnorm", &rmsnorm, nb::arg("x"), nb::arg("w"), nb::arg("eps"));
  m.def("gated_rmsnorm", &gated_rmsnorm, nb::arg("y"), nb::arg("z"), nb::arg("w"),
        nb::arg("n_group"), nb::arg("eps"));
  m.def("relu2", &relu2, nb::arg("x"));
  m.def("softplus", &softplus, nb::arg("x"), nb::arg("bias"), "softplus(x + bias)");
  m.def("causal_conv", &causal_conv, nb::arg("x"), nb::arg("state"), nb::arg("w"), nb::arg("b"),
        nb::arg("silu") = false, "-> (y, new_state)");
  m.def("ssm_scan", &ssm_scan, nb::arg("state"), nb::arg("x"), nb::arg("dt"), nb::arg("A"),
        nb::arg("B"), nb::arg("C"), nb::arg("D"), nb::arg("chunk") = 0,
        "-> (y, new_state); chunk 0: recurrence, else chunked SSD");
  m.def("kv_store", &kv_store, nb::arg("x"), nb::arg("kv_type"), "rows -> KV cache rows");
  m.def("attention", &attention, nb::arg("q"), nb::arg("k"), nb::arg("v"), nb::arg("n_past"),
        nb::arg("n_head_kv"), nb::arg("kv_type"));
  m.def(
      "pool_probe",
      [](int64_t items, int64_t work, int n_threads, int reps) {
        if (n_threads < 1) throw std::invalid_argument("n_threads must be >= 1");
        auto counts = new_array<int64_t>({size_t(items)});
        int64_t *c = counts.data();
        {
          nb::gil_scoped_release nogil;
          auto lease = lease_pool(n_threads);
          for (int r = 0; r < reps; ++r)
            lease.pool.parallel_for(items, [&](int64_t i, int) {
              double a = 1.0;
              for (int64_t k = 0; k < work; ++k) a = a * 1.0000001 + 1e-9;
              c[i] += a > 0.0 ? 1 : 0;
            });
        }
        return counts;
      },
      nb::arg("items"), nb::arg("work"), nb::arg("n_threads"), nb::arg("reps"),
      "Thread-pool probe: reps jobs of `items` items (`work` multiply-adds each); how often each "
      "item ran.");
  m.def(
      "read_bandwidth",
      [](size_t bytes, int n_threads, int reps) {
        if (n_threads < 1) throw std::invalid_argument("n_threads must be >= 1");
        nb::gil_scoped_release nogil;
        return kern::read_bandwidth(lease_pool(n_threads).pool, bytes, reps);
      },
      nb::arg("bytes") = size_t(1) << 30, nb::arg("n_threads") = 1, nb::arg("reps") = 3,
      "Measured memory read bandwidth in bytes/s (best of reps passes).");
  m.def("dequantize", &dequantize, nb::arg("w"), nb::arg("type"), nb::arg("n_in"),
        "Raw GGUF rows (n_out, row_bytes) -> float32 (n_out, n_in).");
}

}  // namespace edgenano
