// Matmul drivers: pick the kernel table for this CPU, split rows over the pool, and choose between
// the int8 dot-product path (small batches) and the f32 panel path (prefill).
#include "kernels/cpu/matmul.h"

#include <algorithm>
#include <climits>
#include <cstring>
#include <stdexcept>
#include <vector>

#include "kernels/cpu/matmul_impl.h"

namespace edgenano::kern {

int type_index(int type) {
  switch (type) {
    case T_F32: return I_F32;
    case T_F16: return I_F16;
    case T_BF16: return I_BF16;
    case T_Q8_0: return I_Q8_0;
    case T_Q4_0: return I_Q4_0;
    case T_Q5_0: return I_Q5_0;
    case T_Q4_1: return I_Q4_1;
    case T_Q5_1: return I_Q5_1;
    case T_Q4_K: return I_Q4_K;
    case T_Q5_K: return I_Q5_K;
    case T_Q6_K: return I_Q6_K;
    default: return -1;
  }
}

ActKind act_kind(int type) {
  switch (type) {
    case T_Q8_0:
    case T_Q4_0:
    case T_Q5_0:
    case T_Q4_1:
    case T_Q5_1: return ACT_A8;
    case T_Q4_K:
    case T_Q5_K:
    case T_Q6_K: return ACT_A8K;
    default: return ACT_F32;
  }
}

const KernelTable &active_kernels() {
#ifdef EDGENANO_X86
#ifdef EDGENANO_AVX512
  if (use_avx512()) return avx512_kernels();
#endif
  if (use_avx2()) return avx2_kernels();
#endif
  return scalar_kernels();
}

uint8_t *Workspace::get_shared(size_t bytes) {
  if (shared.size() < bytes) shared.resize(bytes);
  return shared.data();
}

float *Workspace::get_thread(int tid, size_t n) {
  if (per_thread.size() <= size_t(tid)) per_thread.resize(size_t(tid) + 1);
  auto &v = per_thread[size_t(tid)];
  if (v.size() < n + 16) v.resize(n + 16);
  const auto addr = reinterpret_cast<uintptr_t>(v.data());
  return v.data() + ((64 - addr % 64) % 64) / sizeof(float);  // 64-byte aligned
}

int gemm_min_batch(int type) {
  switch (type) {
    case T_Q8_0:  // the int8 tiles match the f32 panels from here
    case T_Q4_0:
    case T_Q5_0: return 64;
    default: break;
  }
  switch (act_kind(type)) {
    case ACT_A8: return 32;
    case ACT_A8K: return 128;  // the K types' multi-token dots stay ahead of f32 panels this long
    default: return 4;
  }
}

void dequantize_row(int type, const void *src, float *dst, int64_t n) {
  const int ti = type_index(type);
  if (ti < 0 || row_bytes(type, n) == 0) throw std::invalid_argument("dequantize_row: bad type/n");
  active_kernels().dequant[ti](src, dst, n);
}

namespace {

// Prepare the activations a dot kernel reads: quantized blocks (one row per token) or x itself.
const void *prepare_acts(const KernelTable &kt, int kind, const float *x, int64_t ldx, int64_t n,
                         int T, Workspace &ws, size_t &act_stride) {
  if (kind == ACT_F32) {
    act_stride = size_t(ldx) * sizeof(float);
    return x;
  }
  const bool k = kind == ACT_A8K;
  act_stride = k ? size_t(n / QK_K) * sizeof(BlockA8K) : size_t(n / QK) * sizeof(BlockA8);
  uint8_t *buf = ws.get_shared(act_stride * size_t(T));
  for (int t = 0; t < T; ++t) {
    if (k)
      kt.quant_a8k(x + t * ldx, reinterpret_cast<BlockA8K *>(buf + t * act_stride), n);
    else
      kt.quant_a8(x + t * ldx, reinterpret_cast<BlockA8 *>(buf + t * act_stride), n);
  }
  return buf;
}

// The activations of the row-lane dots (matmul_impl.h): each token quantized as for the one-token
// dots (A: BlockA8 / BlockA8K, by quant), then each block placed by fill into R (BlockA8R /
// BlockA8KR) in groups of 8 tokens, the last T % 8.
template <class A, class R, class Quant, class Fill>
const uint8_t *interleave_acts(const float *x, int64_t ldx, int64_t n, int T, int64_t bsize,
                               Workspace &ws, size_t &group_stride, Quant quant, Fill fill) {
  const int64_t nb = n / bsize;
  group_stride = size_t(nb) * 8 * sizeof(R);
  const size_t groups = size_t(T + 7) / 8;
  uint8_t *buf = ws.get_shared(groups * group_stride + size_t(nb) * sizeof(A));
  auto *tmp = reinterpret_cast<A *>(buf + groups * group_stride);
  for (int t = 0; t < T; ++t) {
    quant(x + t * ldx, tmp, n);
    const int g = std::min(8, T - t / 8 * 8);  // tokens in this one's group
    auto *out = reinterpret_cast<R *>(buf + size_t(t / 8) * group_stride) + t % 8;
    for (int64_t i = 0; i < nb; ++i) fill(tmp[i], out[g * i]);
  }
  return buf;
}

// With the zero point's integer term (*_0: -zero * sum(qs)), or Q4_K's sub-block sums paired for
// its minimums.
const uint8_t *prepare_acts_rows(const KernelTable &kt, int type, const float *x, int64_t ldx,
                                 int64_t n, int T, Workspace &ws, size_t &group_stride) {
  if (type == T_Q4_K)
    return interleave_acts<BlockA8K, BlockA8KR>(
        x, ldx, n, T, QK_K, ws, group_stride, kt.quant_a8k,
        [](const BlockA8K &b, BlockA8KR &o) {
          int32_t S[8];
          for (int j = 0; j < 8; ++j) S[j] = b.bsums[2 * j] + b.bsums[2 * j + 1];
          o.d = b.d;
          const int pair[4] = {0, 1, 4, 5};
          for (int q = 0; q < 4; ++q)
            o.msum[q] = int32_t(uint32_t(uint16_t(int16_t(S[pair[q]]))) |
                                uint32_t(uint16_t(int16_t(S[pair[q] + 2]))) << 16);
          std::memcpy(o.qs, b.qs, QK_K);
        });
  const int zero = type == T_Q5_0 ? 16 : type == T_Q4_0 ? 8 : 128;
  return interleave_acts<BlockA8, BlockA8R>(x, ldx, n, T, QK, ws, group_stride, kt.quant_a8,
                                            [zero](const BlockA8 &b, BlockA8R &o) {
                                              int32_t sum = 0;
                                              for (int k = 0; k < QK; ++k) sum += b.qs[k];
                                              o.d = b.d;
                                              o.corr = -zero * sum;
                                              std::memcpy(o.qs, b.qs, QK);
                                            });
}

// One token takes the row-lane dots too on a matrix this large: their stream of the next 16 rows
// into L2 beats the one-token dots' prefetch there (9B-v2 full shapes, Q4_K_M, 2 threads: decode
// 1.08-1.19x the tokens a second over three alternating runs), but not on small ones (widths/4,
// every matrix under 5 MB but the 39 MB output: 0.66-0.95x with the row-lane dots for all).
constexpr int64_t kLanesOneToken = int64_t(16) << 20;

void matmul_vec(const KernelTable &kt, int ti, const Weight &w, const float *x, int64_t ldx,
                float *y, int64_t ldy, int T, bool acc, ThreadPool &pool, Workspace &ws) {
  size_t stride = 0;
  const bool lanes = kt.dot_rows[ti] && (w.packed || T >= 2 ||
                                         w.n_out * int64_t(w.row_bytes) >= kLanesOneToken);
  auto *act = lanes ? prepare_acts_rows(kt, w.type, x, ldx, w.n_in, T, ws, stride)
                    : static_cast<const uint8_t *>(
                          prepare_acts(kt, act_kind(w.type), x, ldx, w.n_in, T, ws, stride));
  // About 8 items per thread for balance on a busy machine; rows per item a multiple of 16 (the
  // row-lane dots' group).
  int64_t per = (w.n_out + int64_t(pool.size()) * 8 - 1) / (int64_t(pool.size()) * 8);
  per = std::max<int64_t>(16, (per + 15) / 16 * 16);
  const int64_t items = (w.n_out + per - 1) / per;
  const DotFn dot = lanes ? kt.dot_rows[ti] : kt.dot[ti];
  pool.parallel_for(items, [&](int64_t it, int) {
    const int64_t r0 = it * per;
    dot({w.data + r0 * w.row_bytes, w.row_bytes, std::min(per, w.n_out - r0), w.n_in, act, stride,
         T, y + r0, ldy, acc, w.packed});
  });
}

// Panels are grouped kMacro at a time: their packed k-chunks (kMacro x 16 KB) stay in L2 while
// the tokens pass in blocks of kTokBlock, so each block of activations is read from L3 once per
// kMacro panels and then from L1/L2 (at 512 tokens the whole activation chunk is 512 KB).
constexpr int kMacro = 4;
constexpr int kTokBlock = 48;

void matmul_gemm(const KernelTable &kt, int ti, const Weight &w, const float *x, int64_t ldx,
                 float *y, int64_t ldy, int T, bool acc, ThreadPool &pool, Workspace &ws) {
  const int64_t panels = (w.n_out + kPanel - 1) / kPanel;
  const int64_t items = (panels + kMacro - 1) / kMacro;
  const int bs = type_block_size(w.type);
  const size_t bbytes = type_block_bytes(w.type);
  std::vector<float *> bufs(size_t(pool.size()));
  for (int t = 0; t < pool.size(); ++t)
    bufs[size_t(t)] = ws.get_thread(t, size_t(1 + kMacro) * kPanel * kKC);
  const DequantFn dq = kt.dequant[ti];
  auto run = [&](int64_t p0, int np, int tid) {
    float *rows = bufs[size_t(tid)], *wp = rows + kPanel * kKC;
    for (int64_t k0 = 0; k0 < w.n_in; k0 += kKC) {
      const int64_t kc = std::min<int64_t>(kKC, w.n_in - k0);
      for (int j = 0; j < np; ++j) {
        const int64_t r0 = (p0 + j) * kPanel;
        const int nr = int(std::min<int64_t>(kPanel, w.n_out - r0));
        if (nr < kPanel) std::fill(rows, rows + kPanel * kKC, 0.f);
        for (int r = 0; r < nr; ++r)
          dq(w.data + (r0 + r) * w.row_bytes + size_t(k0 / bs) * bbytes, rows + r * kKC, kc);
        kt.pack_panel(rows, kc, wp + j * kPanel * kKC);
      }
      for (int t0 = 0; t0 < T; t0 += kTokBlock)
        for (int j = 0; j < np; ++j) {
          const int64_t r0 = (p0 + j) * kPanel;
          kt.gemm_panel(wp + j * kPanel * kKC, kc, x + t0 * ldx + k0, ldx, y + t0 * ldy + r0, ldy,
                        std::min(kTokBlock, T - t0), int(std::min<int64_t>(kPanel, w.n_out - r0)),
                        acc || k0 > 0);
        }
    }
  };
  pool.parallel_for(items, [&](int64_t it, int tid) {
    const int64_t p0 = it * kMacro;
    run(p0, int(std::min<int64_t>(kMacro, panels - p0)), tid);
  });
}

// Int8 panels: the activations quantized once into quads (in parallel), then each item of rows
// runs the blocked integer kernel over all tokens.
void matmul_i8gemm(const KernelTable &kt, int ti, const Weight &w, const float *x, int64_t ldx,
                   float *y, int64_t ldy, int T, bool acc, ThreadPool &pool, Workspace &ws) {
  const int n_quads = (T + 3) / 4;
  const bool k = act_kind(w.type) == ACT_A8K;
  const size_t quad_bytes =
      k ? size_t(w.n_in / QK_K) * sizeof(QuadA8K) : size_t(w.n_in / QK) * sizeof(QuadA8);
  uint8_t *act = ws.get_shared(size_t(n_quads) * quad_bytes);
  const int zero = w.type == T_Q5_0 ? 16 : w.type == T_Q4_0 ? 8 : 0;  // Q8_0: signed codes
  pool.parallel_for(n_quads, [&](int64_t q, int) {
    if (k)
      kt.quant_quads_k(x, ldx, T, int(q), int(q) + 1, w.n_in, reinterpret_cast<QuadA8K *>(act));
    else
      kt.quant_quads(x, ldx, T, int(q), int(q) + 1, w.n_in, zero, reinterpret_cast<QuadA8 *>(act));
  });
  // Up to 64 rows per item (each item streams every token's activations once), at least 4 items
  // per thread.
  int64_t per = (w.n_out + int64_t(pool.size()) * 4 - 1) / (int64_t(pool.size()) * 4);
  per = std::clamp<int64_t>((per + 3) / 4 * 4, 4, 64);
  const int64_t items = (w.n_out + per - 1) / per;
  const QuadFn gemm = kt.quad_gemm[ti];
  pool.parallel_for(items, [&](int64_t it, int) {
    const int64_t r0 = it * per;
    gemm({w.data + r0 * w.row_bytes, w.row_bytes, std::min(per, w.n_out - r0), w.n_in, act, T,
          y + r0, ldy, acc});
  });
}

}  // namespace

// From here the int8 panels beat the dots and tiles (2 threads): Q4_0 at 4480x15680, 116 vs 111
// GFLOP/s at 8 tokens, 144 vs 121 at 16 (Q5_0: 102 vs 109 at 8, 137 vs 120 at 16); Q4_K at
// 10240x8960, 152 vs 162 at 12, 188 vs 165 at 16 (Q5_K: 140 vs 147 at 12, 161 vs 145 at 16).
// Q8_0 (sign trick, a madd per token: 24 integer ops per 4 block dots against Q4_0's 18) beats
// the dots from 24 tokens and matches the f32 panels from about 96 (2 threads, best of 6, at
// 4480x15680 / 15680x4480): 144 / 109 vs 137 / 104 (dots) at 24, 152 / 153 vs 142 / 139 (panels)
// at 64, 146 / 153 vs 150 / 152 at 96, 170 / 154 vs 166 / 158 at 512; so f32 panels from 96.
// Q6_K (sign trick, 4 more instructions per sub-block than Q4_K) against its multi-token dots
// and the f32 panels (2 threads, best of 9, machine shared, 4480x15616 / 15616x4608): 81 / 156
// vs 88 / 159 (dots) at 16, 85 / 183 vs 85 / 172 at 24, 119 / 243 vs 94 / 196 (panels) at 256,
// 230 / 223 vs 174 / 164 at 512.
// With VNNI the *_0 panels spend one vpdpbusd per token and block: ahead of the one-token dots
// from 3 tokens for Q4_0 / Q5_0 (one Zen 4 core, 256 rows of 4480 in L2, us a token, panels vs
// dots: Q5_0 33 vs 51 at 3, 25 vs 38 at 4, 20 vs 30 at 8; Q4_0 31 vs 39, 24 vs 31, 19 vs 29) and
// from 8 for Q8_0 (28 vs 27 at 4, 23 vs 26 at 8). Where the row-lane dots exist (AVX-512 VNNI:
// Q4_0, Q5_0, Q8_0, Q4_K) they take every batch instead (resolve_path), and these panels run only
// when asked for by path.
static bool vnni_panels() { return active_kernels().quad_gemm[I_Q5_0] == quad_gemm_q5_0_vnni; }
static int i8gemm_min_batch(int type) {
  if (vnni_panels()) {
    if (type == T_Q4_0 || type == T_Q5_0) return 3;
    if (type == T_Q8_0) return 8;
  }
  if (type == T_Q8_0 || type == T_Q6_K) return 24;
  return act_kind(type) == ACT_A8K ? 16 : 12;
}
// With VNNI (vpdpbusd: one instruction per token and block) Q8_0's panels lead the f32 panels at
// every batch (2 threads, best of 7 on a loaded machine, 4480x15680 / 15680x4480, GFLOP/s int8
// VNNI vs f32 panels vs AVX2 int8): 39 / 30 vs 29 / 28 vs 31 / 26 at 96, 46 / 38 vs 34 / 29
// vs 42 / 30 at 512.
static int i8gemm_max_batch(int type) {
  if (type != T_Q8_0) return 1 << 30;
  return vnni_panels() ? 1 << 30 : 95;
}

static bool has_i8gemm(const KernelTable &kt, int ti) { return kt.quad_gemm[ti] != nullptr; }

MatmulPath resolve_path(int type, int T, MatmulPath path) {
  const int ti = type_index(type);
  if (ti < 0) throw std::invalid_argument(std::string("unsupported type ") + type_name(type));
  const bool i8 = has_i8gemm(active_kernels(), ti);
  if (path == MatmulPath::I8Gemm && i8) return path;
  if (path == MatmulPath::Vec || path == MatmulPath::Gemm) return path;
  // The row-lane dots lead the VNNI int8 panels and the f32 panels at every batch (2 threads,
  // ms, dots vs panels: Q5_0 15360x4480 21.1 vs 33.2 at 64, 41.8 vs 63.3 at 128, 166.8 vs 247.1
  // at 512, 374.7 vs 542.4 at 1024; Q8_0 21.2 vs 39.5, 39.8 vs 73.2, 159.4 vs 286.3, 363.9 vs
  // 632.4; Q4_K 4480x8192 against the f32 panels 16.5 vs 39.7 at 96, 88.9 vs 209.4 at 512).
  if (T >= 2 && active_kernels().dot_rows[ti]) return MatmulPath::Vec;
  if (i8 && T >= i8gemm_min_batch(type) && T <= i8gemm_max_batch(type)) return MatmulPath::I8Gemm;
  return T >= gemm_min_batch(type) ? MatmulPath::Gemm : MatmulPath::Vec;
}

void matmul(const Weight &w, const float *x, int64_t ldx, float *y, int64_t ldy, int T,
            bool accumulate, ThreadPool &pool, Workspace &ws, MatmulPath path) {
  const int ti = type_index(w.type);
  if (ti < 0)
    throw std::invalid_argument(std::string("matmul: unsupported type ") + type_name(w.type));
  if (row_bytes(w.type, w.n_in) != w.row_bytes || w.row_bytes == 0)
    throw std::invalid_argument("matmul: row size does not match the type and n_in");
  if (T <= 0 || w.n_out <= 0) return;
  const KernelTable &kt = active_kernels();
  if (w.packed) {
    if (kt.dot_rows[ti]) return matmul_vec(kt, ti, w, x, ldx, y, ldy, T, accumulate, pool, ws);
    // The AVX-512 dots switched off after the weight was packed (tests, EDGENANO_NO_AVX512 is
    // read at start): its rows unpacked for this call, then the kernels chosen as for any weight.
    std::vector<uint8_t> rows(size_t(w.n_out) * w.row_bytes);
    unpack_rows16(w.type, w.n_in, w.data, rows.data(), w.n_out);
    Weight u = w;
    u.data = rows.data();
    u.packed = false;
    return matmul(u, x, ldx, y, ldy, T, accumulate, pool, ws, path);
  }
  switch (resolve_path(w.type, T, path)) {
    case MatmulPath::I8Gemm:
      return matmul_i8gemm(kt, ti, w, x, ldx, y, ldy, T, accumulate, pool, ws);
    case MatmulPath::Gemm: return matmul_gemm(kt, ti, w, x, ldx, y, ldy, T, accumulate, pool, ws);
    default: return matmul_vec(kt, ti, w, x, ldx, y, ldy, T, accumulate, pool, ws);
  }
}

}  // namespace edgenano::kern
