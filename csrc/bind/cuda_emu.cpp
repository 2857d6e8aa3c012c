// _C.cuda_emu: the CUDA kernels run on the CPU through the SIMT emulator, with the signatures of
// _C.kernels (their CPU twins), for tests/test_cuda_emu.py; and the emulator's planted-bug
// kernels (tests/test_simt.py). Inputs are copied into emulated device memory sized exactly, so a
// kernel reading past them faults there; emulator errors surface as RuntimeError.
// _C.cuda_dev (CUDA builds): the same functions on the GPU (tests marked gpu).
#include <cmath>
#include <cstring>
#include <stdexcept>
#include <string>
#include <vector>

#include <nanobind/stl/pair.h>
#include <nanobind/stl/string.h>
#include <nanobind/stl/tuple.h>
#include <nanobind/stl/vector.h>

#include "bind/bind.h"
#include "kernels/cuda/ops.h"
#include "kernels/cuda/ops_table.h"
#include "simt/simt.h"

namespace nb = nanobind;

namespace edgenano {

#if defined(EDGENANO_HAS_CUDA)
namespace backend {  // backend/cuda_backend.cu
const char *cuda_probe();
std::pair<size_t, size_t> cuda_mem_info();
double cuda_copy_bandwidth(size_t nbytes, int reps);
}  // namespace backend
#endif

namespace simt_selftest {
std::vector<float> run(const std::string &name);
std::vector<std::string> names();
}  // namespace simt_selftest

namespace {

template <class T, size_t D>
using In = nb::ndarray<const T, nb::ndim<D>, nb::c_contig, nb::device::cpu>;
using F32 = nb::ndarray<nb::numpy, float>;

// The kernels' table each binding instance runs: 0 the emulator, 1 the GPU.
template <int I>
const cuk::OpsTable &ops() {
  if constexpr (I == 0) {
    return cuk::emu_ops();
  } else {
#if defined(EDGENANO_HAS_CUDA)
    return cuk::cuda_ops();
#else
    return cuk::emu_ops();  // never bound
#endif
  }
}

// A device buffer of exactly n bytes (emulated: a guard page right after it).
class Dev {
 public:
  Dev(const cuk::OpsTable &t, size_t n) : t_(&t), n_(n), p_(t.alloc(n)) {}
  template <class A>
  Dev(const cuk::OpsTable &t, const A &a) : Dev(t, a.size() * sizeof(*a.data())) {
    t.htod(p_, a.data(), n_);
  }
  ~Dev() { t_->free(p_); }
  Dev(const Dev &) = delete;
  Dev &operator=(const Dev &) = delete;
  template <class T>
  T *as() const {
    return static_cast<T *>(p_);
  }
  void to(void *dst) const { t_->dtoh(dst, p_, n_); }

 private:
  const cuk::OpsTable *t_;
  size_t n_;
  void *p_;
};

void need(bool ok, const char *what) {
  if (!ok) throw std::invalid_argument(what);
}

// Emulator errors (races, divergence, faults) as RuntimeError with the emulator's message.
template <class F>
auto emu(F &&f) {
  try {
    return f();
  } catch (const simt::Error &e) {
    throw std::runtime_error(std::string("SIMT emulator: ") + e.what());
  }
}

kern::Weight weight(const Dev &d, const In<uint8_t, 2> &w, int type, int64_t n_in) {
  const size_t rb = kern::row_bytes(type, n_in);
  need(rb != 0 && rb == w.shape(1), "row bytes do not match the type and n_in");
  return {type, d.as<const uint8_t>(), n_in, int64_t(w.shape(0)), rb};
}

template <int I>
F32 matmul(In<uint8_t, 2> w, int type, int64_t n_in, In<float, 2> x, const std::string &path) {
  const cuk::OpsTable &t = ops<I>();
  need(int64_t(x.shape(1)) == n_in, "x.shape[1] != n_in");
  const int T = int(x.shape(0));
  Dev dw(t, w), dx(t, x), dy(t, size_t(T) * w.shape(0) * sizeof(float));
  const kern::Weight wt = weight(dw, w, type, n_in);
  Dev scratch(t, t.matmul_scratch_bytes(type, n_in, T));
  emu([&] {
    if (path == "vec")
      t.matvec(wt, dx.as<float>(), n_in, dy.as<float>(), wt.n_out, T, false, scratch.as<void>());
    else if (path == "gemm")
      t.gemm(wt, dx.as<float>(), n_in, dy.as<float>(), wt.n_out, T, false);
    else if (path == "auto" && T < cuk::kGemmMinT)
      t.matvec(wt, dx.as<float>(), n_in, dy.as<float>(), wt.n_out, T, false, scratch.as<void>());
    else if (path == "auto")
      t.gemm(wt, dx.as<float>(), n_in, dy.as<float>(), wt.n_out, T, false);
    else
      throw std::invalid_argument("path must be auto, vec or gemm");
    return 0;
  });
  auto y = new_array<float>({size_t(T), size_t(wt.n_out)});
  dy.to(y.data());
  return y;
}

template <int I>
F32 embed(In<uint8_t, 2> table, int type, int64_t n_in, In<int32_t, 1> ids) {
  const cuk::OpsTable &t = ops<I>();
  for (size_t i = 0; i < ids.shape(0); ++i)
    need(ids.data()[i] >= 0 && size_t(ids.data()[i]) < table.shape(0), "embed: id out of range");
  const int T = int(ids.shape(0));
  Dev dt(t, table), di(t, ids), dx(t, size_t(T) * size_t(n_in) * sizeof(float));
  const kern::Weight wt = weight(dt, table, type, n_in);
  emu([&] { return t.embed(wt, di.as<int32_t>(), T, dx.as<float>(), n_in), 0; });
  auto x = new_array<float>({size_t(T), size_t(n_in)});
  dx.to(x.data());
  return x;
}

template <int I>
F32 rmsnorm(In<float, 2> x, In<float, 1> w, float eps) {
  const cuk::OpsTable &t = ops<I>();
  need(w.shape(0) == x.shape(1), "rmsnorm: w must have x.shape[1] values");
  const int64_t n = int64_t(x.shape(1));
  Dev dx(t, x), dw(t, w), dy(t, x.size() * sizeof(float));
  emu([&] {
    return t.rmsnorm(dx.as<float>(), n, dw.as<float>(), dy.as<float>(), n, int(x.shape(0)), n, eps),
           0;
  });
  auto y = new_array<float>({x.shape(0), x.shape(1)});
  dy.to(y.data());
  return y;
}

template <int I>
F32 gated_rmsnorm(In<float, 2> y, In<float, 2> z, In<float, 1> w, int n_group, float eps) {
  const cuk::OpsTable &t = ops<I>();
  need(z.shape(0) == y.shape(0) && z.shape(1) == y.shape(1) && w.shape(0) == y.shape(1),
       "gated_rmsnorm: y, z (T, D) and w (D) required");
  const int64_t D = int64_t(y.shape(1));
  Dev dy(t, y), dz(t, z), dw(t, w), dout(t, y.size() * sizeof(float));
  emu([&] {
    return t.gated_rmsnorm(dy.as<float>(), D, dz.as<float>(), D, dw.as<float>(), dout.as<float>(),
                           D, int(y.shape(0)), D, n_group, eps),
           0;
  });
  auto out = new_array<float>({y.shape(0), y.shape(1)});
  dout.to(out.data());
  return out;
}

template <int I>
F32 relu2(In<float, 2> x) {
  const cuk::OpsTable &t = ops<I>();
  Dev dx(t, x);
  emu([&] {
    return t.relu2(dx.as<float>(), int64_t(x.shape(1)), int(x.shape(0)), int64_t(x.shape(1))), 0;
  });
  auto y = new_array<float>({x.shape(0), x.shape(1)});
  dx.to(y.data());
  return y;
}

template <int I>
F32 softplus(In<float, 2> x, In<float, 1> bias) {
  const cuk::OpsTable &t = ops<I>();
  need(bias.shape(0) == x.shape(1), "softplus: bias must have x.shape[1] values");
  const int H = int(x.shape(1));
  Dev dx(t, x), db(t, bias), dy(t, x.size() * sizeof(float));
  emu([&] {
    return t.softplus_bias(dx.as<float>(), H, db.as<float>(), dy.as<float>(), H, int(x.shape(0)),
                           H),
           0;
  });
  auto y = new_array<float>({x.shape(0), x.shape(1)});
  dy.to(y.data());
  return y;
}

template <int I>
std::pair<F32, F32> causal_conv(In<float, 2> x, In<float, 2> state, In<float, 2> w, In<float, 1> b,
                                bool silu) {
  const cuk::OpsTable &t = ops<I>();
  const size_t T = x.shape(0), C = x.shape(1), K = w.shape(1);
  need(w.shape(0) == C && b.shape(0) == C && state.shape(1) == C && state.shape(0) + 1 == K,
       "causal_conv: x (T, C), state (K-1, C), w (C, K), b (C) required");
  Dev dx(t, x), dst(t, state), dw(t, w), db(t, b), dy(t, T * C * sizeof(float));
  kern::ConvParams p;
  p.T = int(T), p.C = int64_t(C), p.K = int(K), p.x = dx.as<float>(), p.ldx = int64_t(C);
  p.w = dw.as<float>(), p.b = db.as<float>(), p.state = dst.as<float>(), p.y = dy.as<float>();
  p.ldy = int64_t(C), p.silu = silu;
  emu([&] { return t.causal_conv(p), 0; });
  auto y = new_array<float>({T, C});
  auto st = new_array<float>({K - 1, C});
  dy.to(y.data());
  dst.to(st.data());
  return {y, st};
}

template <int I>
std::pair<F32, F32> ssm_scan(In<float, 3> state, In<float, 3> x, In<float, 2> dt, In<float, 1> A,
                             In<float, 3> B, In<float, 3> C, In<float, 1> D, int chunk) {
  const cuk::OpsTable &t = ops<I>();
  const size_t T = x.shape(0), H = x.shape(1), P = x.shape(2), G = B.shape(1), N = B.shape(2);
  need(state.shape(0) == H && state.shape(1) == P && state.shape(2) == N && dt.shape(0) == T &&
           dt.shape(1) == H && A.shape(0) == H && D.shape(0) == H && B.shape(0) == T &&
           C.shape(0) == T && C.shape(1) == G && C.shape(2) == N,
       "ssm_scan: state (H,P,N), x (T,H,P), dt (T,H), A (H), B, C (T,G,N), D (H) required");
  Dev dst(t, state), dx(t, x), ddt(t, dt), dA(t, A), dB(t, B), dC(t, C), dD(t, D),
      dy(t, T * H * P * sizeof(float));
  kern::ScanParams p;
  p.T = int(T), p.H = int(H), p.P = int(P), p.N = int(N), p.G = int(G);
  p.x = dx.as<float>(), p.ldx = int64_t(H * P), p.B = dB.as<float>(), p.C = dC.as<float>();
  p.ldbc = int64_t(G * N), p.dt = ddt.as<float>(), p.lddt = int64_t(H), p.A = dA.as<float>();
  p.D = dD.as<float>(), p.state = dst.as<float>(), p.y = dy.as<float>(), p.ldy = int64_t(H * P);
  Dev scratch(t, t.ssm_scan_scratch_bytes(p, chunk));  // exact size: overruns hit a guard page
  emu([&] { return t.ssm_scan(p, chunk, scratch.as<void>()), 0; });
  auto y = new_array<float>({T, H, P});
  auto st = new_array<float>({H, P, N});
  dy.to(y.data());
  dst.to(st.data());
  return {y, st};
}

// Routed experts: out = src[rows]; dst + scale * src scattered to dst[rows].
template <int I>
F32 gather_rows(In<float, 2> src, In<int32_t, 1> rows) {
  const cuk::OpsTable &t = ops<I>();
  const size_t R = src.shape(0), n = src.shape(1), J = rows.shape(0);
  for (size_t j = 0; j < J; ++j) need(rows(j) >= 0 && size_t(rows(j)) < R, "row out of range");
  Dev ds(t, src), dr(t, rows), dd(t, J * n * sizeof(float));
  emu([&] {
    return t.gather_rows(ds.as<float>(), int64_t(n), dr.as<int32_t>(), int(J), int64_t(n),
                         dd.as<float>(), int64_t(n)),
           0;
  });
  auto out = new_array<float>({J, n});
  dd.to(out.data());
  return out;
}

template <int I>
F32 scatter_add_rows(In<float, 2> src, In<int32_t, 1> rows, In<float, 1> scale,
                     In<float, 2> dst) {
  const cuk::OpsTable &t = ops<I>();
  const size_t J = src.shape(0), n = src.shape(1), R = dst.shape(0);
  need(rows.shape(0) == J && scale.shape(0) == J && dst.shape(1) == n, "shapes disagree");
  for (size_t j = 0; j < J; ++j) need(rows(j) >= 0 && size_t(rows(j)) < R, "row out of range");
  Dev ds(t, src), dr(t, rows), dc(t, scale), dd(t, dst);
  emu([&] {
    return t.scatter_add_rows(ds.as<float>(), int64_t(n), dr.as<int32_t>(), dc.as<float>(),
                              int(J), int64_t(n), dd.as<float>(), int64_t(n)),
           0;
  });
  auto out = new_array<float>({R, n});
  dd.to(out.data());
  return out;
}

template <int I>
nb::ndarray<nb::numpy, uint8_t> kv_store(In<float, 2> x, int kv_type) {
  const cuk::OpsTable &t = ops<I>();
  const size_t rb = kern::row_bytes(kv_type, int64_t(x.shape(1)));
  need(rb != 0, "kv_store: kv_type must be F32, F16 or Q8_0 (whole blocks)");
  Dev dx(t, x), dout(t, x.shape(0) * rb);
  emu([&] {
    return t.kv_store(dx.as<float>(), int64_t(x.shape(1)), int(x.shape(0)), int64_t(x.shape(1)),
                      kv_type, dout.as<uint8_t>()),
           0;
  });
  auto out = new_array<uint8_t>({x.shape(0), rb});
  dout.to(out.data());
  return out;
}

template <int I>
F32 attention(In<float, 3> q, In<uint8_t, 2> k, In<uint8_t, 2> v, int n_past, int n_head_kv,
              int kv_type) {
  const cuk::OpsTable &t = ops<I>();
  const size_t T = q.shape(0), Hq = q.shape(1), d = q.shape(2);
  const size_t rb = kern::row_bytes(kv_type, int64_t(n_head_kv) * int64_t(d));
  need(rb != 0 && k.shape(1) == rb && v.shape(1) == rb && k.shape(0) == v.shape(0) &&
           k.shape(0) == size_t(n_past) + T && n_head_kv > 0 && Hq % size_t(n_head_kv) == 0,
       "attention: q (T, Hq, d) and caches (n_past + T, row bytes of Hkv*d values) required");
  Dev dq(t, q), dk(t, k), dv(t, v), dout(t, T * Hq * d * sizeof(float));
  kern::AttnParams p;
  p.T = int(T), p.n_past = n_past, p.n_head = int(Hq), p.n_head_kv = n_head_kv;
  p.head_dim = int(d), p.q = dq.as<float>(), p.ldq = int64_t(Hq * d), p.k = dk.as<uint8_t>();
  p.v = dv.as<uint8_t>(), p.kv_row_bytes = rb, p.kv_type = kv_type;
  p.scale = 1.f / std::sqrt(float(d)), p.out = dout.as<float>(), p.ldo = int64_t(Hq * d);
  Dev scratch(t, t.attention_scratch_bytes(p));
  emu([&] { return t.attention(p, scratch.as<void>()), 0; });
  auto out = new_array<float>({T, Hq * d});
  dout.to(out.data());
  return out;
}

template <int I>
void def_kernels(nb::module_ &m) {
  m.def("matmul", &matmul<I>, nb::arg("w"), nb::arg("type"), nb::arg("n_in"), nb::arg("x"),
        nb::arg("path") = "auto", "path: vec (int8 dots), gemm (TF32 tiles) or auto (by T).");
  m.def("embed", &embed<I>, nb::arg("table"), nb::arg("type"), nb::arg("n_in"), nb::arg("ids"));
  m.def("rmsnorm", &rmsnorm<I>, nb::arg("x"), nb::arg("w"), nb::arg("eps"));
  m.def("gated_rmsnorm", &gated_rmsnorm<I>, nb::arg("y"), nb::arg("z"), nb::arg("w"),
        nb::arg("n_group"), nb::arg("eps"));
  m.def("relu2", &relu2<I>, nb::arg("x"));
  m.def("softplus", &softplus<I>, nb::arg("x"), nb::arg("bias"));
  m.def("causal_conv", &causal_conv<I>, nb::arg("x"), nb::arg("state"), nb::arg("w"), nb::arg("b"),
        nb::arg("silu") = false);
  m.def("ssm_scan", &ssm_scan<I>, nb::arg("state"), nb::arg("x"), nb::arg("dt"), nb::arg("A"),
        nb::arg("B"), nb::arg("C"), nb::arg("D"), nb::arg("chunk") = 0);
  m.def("kv_store", &kv_store<I>, nb::arg("x"), nb::arg("kv_type"));
  m.def("gather_rows", &gather_rows<I>, nb::arg("src"), nb::arg("rows"));
  m.def("scatter_add_rows", &scatter_add_rows<I>, nb::arg("src"), nb::arg("rows"),
        nb::arg("scale"), nb::arg("dst"));
  m.def("attention", &attention<I>, nb::arg("q"), nb::arg("k"), nb::arg("v"), nb::arg("n_past"),
        nb::arg("n_head_kv"), nb::arg("kv_type"));
}

}  // namespace

void bind_cuda_emu(nb::module_ &parent) {
  nb::module_ m = parent.def_submodule(
      "cuda_emu",
      "The CUDA kernels on the CPU through the SIMT emulator (tests); _C.kernels "
      "signatures.");
  def_kernels<0>(m);
  m.def("gemm_min_tokens", [] { return cuk::kGemmMinT; });
  m.def(
      "selftest",
      [](const std::string &name) { return emu([&] { return simt_selftest::run(name); }); },
      nb::arg("name"),
      "Run a planted-bug (or correct) kernel; RuntimeError when the emulator "
      "rejects it.");
  m.def("selftest_names", &simt_selftest::names);
  m.def(
      "stats",
      [] {
        const simt::Stats s = simt::stats();
        return std::make_tuple(s.launches, s.blocks, s.switches);
      },
      "(launches, blocks, fiber switches) since the module loaded.");
  m.def("launches", &simt::launches_by_kernel, "Launches per kernel name since the module loaded.");
#if defined(EDGENANO_HAS_CUDA)
  nb::module_ dev = parent.def_submodule(
      "cuda_dev", "The same CUDA kernels on the GPU (tests marked gpu); _C.cuda_emu signatures.");
  dev.def("available", [] { return backend::cuda_probe() == nullptr; });
  dev.def("reason", [] {
    const char *why = backend::cuda_probe();
    return std::string(why ? why : "");
  });
  dev.def("mem_info", &backend::cuda_mem_info, "(free, total) device memory in bytes.");
  dev.def("copy_bandwidth", &backend::cuda_copy_bandwidth, nb::arg("nbytes") = size_t(1) << 30,
          nb::arg("reps") = 5, "Device-to-device copy: bytes read + written per second (best).");
  def_kernels<1>(dev);
#endif
}

}  // namespace edgenano
