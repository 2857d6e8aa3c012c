// nemotron_h on a backend (see nemotron_h.h). Shapes in comments are (rows, cols)
// of row-major buffers with T token rows; E embedding, D = H*P Mamba inner width, C = D + 2GN conv
// channels, H Mamba heads, Hq/Hkv attention heads of width d, F MLP width, V vocabulary.
#include "models/nemotron_h.h"

#include "backend/registry.h"
#include "ggml/format.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <stdexcept>
#include <unordered_map>

namespace edgenano {

namespace {

constexpr int kScanChunk = 64;        // SSD chunk length for prefill
constexpr int kChunkedScanMinT = 32;  // shorter batches use the recurrence
constexpr int kKvGrain = 256;         // KV rows are allocated in multiples of this

std::string shape_str(const std::vector<int64_t> &ne) {
  std::string s = "{";
  for (size_t i = 0; i < ne.size(); ++i) s += (i ? ", " : "") + std::to_string(ne[i]);
  return s + "}";
}

[[noreturn]] void bad(const std::string &msg) { throw std::invalid_argument(msg); }

}  // namespace

Model::Model(const std::string &path, Config cfg, const std::vector<TensorInfo> &tensors, int n_ctx,
             int n_threads, int n_batch, int kv_type, const std::string &backend, bool use_mmap)
    : cfg_(std::move(cfg)), n_ctx_(n_ctx), n_batch_(n_batch), kv_type_(kv_type) {
  if (n_ctx < 1) bad("n_ctx must be >= 1");
  if (n_batch < 1) bad("n_batch must be >= 1");
  if (n_threads < 1) bad("n_threads must be >= 1");
  if (kv_type != ggml::T_F16 && kv_type != ggml::T_Q8_0 && kv_type != ggml::T_F32)
    bad("kv_type must be F16, Q8_0 or F32");
  backend_ = backend::make_profiling_backend(backend::make(backend, {n_threads}));
  const char *env = std::getenv("EDGENANO_PROFILE");
  backend_->set_enabled(env && *env && *env != '0');
  map_file(path, use_mmap);
  try {
    weights_ = backend_->map_weights(map_, map_bytes_);
    build(tensors);
    pack_weights();
  } catch (...) {
    packed_.clear();
    converted_.clear();
    weights_.reset();
    munmap(const_cast<uint8_t *>(map_), map_bytes_);
    throw;
  }
}

Model::~Model() {
  weights_.reset();  // before the mapping it may view
  if (map_) munmap(const_cast<uint8_t *>(map_), map_bytes_);
}

// The file's bytes: a shared read-only mapping (pages come from the page cache, shared by every
// process that maps the file), or with use_mmap false an anonymous mapping read in full now, so
// the weights no longer depend on the file (llama.cpp's --no-mmap). Both are freed by munmap.
void Model::map_file(const std::string &path, bool use_mmap) {
  const int fd = open(path.c_str(), O_RDONLY);
  if (fd < 0) throw std::runtime_error(path + ": cannot open: " + std::strerror(errno));
  struct stat st{};
  if (fstat(fd, &st) != 0 || st.st_size <= 0) {
    close(fd);
    bad(path + ": cannot read the file size or the file is empty");
  }
  const size_t size = size_t(st.st_size);
  void *p = use_mmap
                ? mmap(nullptr, size, PROT_READ, MAP_SHARED, fd, 0)
                : mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED) {
    const int err = errno;
    close(fd);
    throw std::runtime_error(
        path + (use_mmap ? ": mmap failed: " : ": cannot allocate memory for the weights: ") +
        std::strerror(err));
  }
  if (!use_mmap) {
    madvise(p, size, MADV_HUGEPAGE);  // before the pages are touched (see below)
    size_t done = 0;
    while (done < size) {
      const ssize_t n = pread(fd, static_cast<uint8_t *>(p) + done,
                              std::min<size_t>(size - done, size_t(1) << 30), off_t(done));
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) {
        const std::string why = n < 0 ? std::strerror(errno) : "the file ended early";
        munmap(p, size);
        close(fd);
        throw std::runtime_error(path + ": cannot read the file: " + why);
      }
      done += size_t(n);
    }
  }
  close(fd);
  // Decode reads every weight once per token: with 4 KiB pages that is a TLB miss every 4 KiB.
  // Ask for huge pages (THP "madvise" mode; page-cache large folios for the file mapping); a
  // kernel without them ignores the advice. Measured here, widths/4 Q8_0 decode: read into
  // memory 28.0 -> 31.0 tok/s, mapped 29.6 -> 30.4.
  if (use_mmap) madvise(p, size, MADV_HUGEPAGE);
  map_ = static_cast<const uint8_t *>(p);
  map_bytes_ = size;
}

// Checks type, shape (trailing 1s allowed), size and bounds; returns the data in the mapping.
const uint8_t *Model::tensor_data(const TensorInfo &t, const std::vector<int64_t> &ne) const {
  if (!ggml::type_supported(t.type))
    bad(t.name + ": ggml type " + std::to_string(t.type) + " is not supported by the engine");
  std::vector<int64_t> got = t.ne;
  while (got.size() > ne.size() && got.back() == 1) got.pop_back();
  if (got != ne) bad(t.name + ": shape " + shape_str(t.ne) + ", expected " + shape_str(ne));
  const size_t rb = ggml::row_bytes(t.type, ne[0]);
  if (rb == 0)
    bad(t.name + ": rows of " + std::to_string(ne[0]) + " are not whole " +
        ggml::type_name(t.type) + " blocks");
  uint64_t rows = 1;
  for (size_t i = 1; i < ne.size(); ++i) rows *= uint64_t(ne[i]);
  if (t.nbytes != rb * rows)
    bad(t.name + ": " + std::to_string(t.nbytes) + " bytes, expected " + std::to_string(rb * rows));
  if (t.offset > map_bytes_ || t.nbytes > map_bytes_ - t.offset)
    bad(t.name + ": data [" + std::to_string(t.offset) + ", +" + std::to_string(t.nbytes) +
        ") lies outside the file (" + std::to_string(map_bytes_) + " bytes)");
  return map_ + t.offset;
}

const uint8_t *Model::on_backend(const uint8_t *host) const {
  return weights_->as<const uint8_t>() + (host - map_);
}

backend::Weight Model::weight(const TensorInfo &t, int64_t n_in, int64_t n_out) const {
  const uint8_t *p = tensor_data(t, {n_in, n_out});
  return {t.type, on_backend(p), n_in, n_out, ggml::row_bytes(t.type, n_in)};
}

// A vector of n floats: the weights' bytes when stored as aligned F32, else a copy converted on
// the host and uploaded.
const float *Model::vector(const TensorInfo &t, int64_t n) {
  int64_t count = 1;
  for (int64_t d : t.ne) count *= d;
  if (count != n)
    bad(t.name + ": " + std::to_string(count) + " values, expected " + std::to_string(n));
  const uint8_t *p = tensor_data(t, t.ne.size() > 1 ? t.ne : std::vector<int64_t>{n});
  if (t.type == ggml::T_F32 && reinterpret_cast<uintptr_t>(p) % alignof(float) == 0)
    return reinterpret_cast<const float *>(on_backend(p));
  std::vector<float> host(static_cast<size_t>(n));
  const int64_t row = t.ne[0];
  for (int64_t r = 0; r < n / row; ++r)
    ggml::traits(t.type)->to_float(p + r * ggml::row_bytes(t.type, row), host.data() + r * row,
                                   row);
  converted_.push_back(backend_->alloc(host.size() * sizeof(float)));
  backend_->upload(*converted_.back(), 0, host.data(), host.size() * sizeof(float));
  return converted_.back()->as<const float>();
}

void Model::build(const std::vector<TensorInfo> &tensors) {
  const Config &c = cfg_;
  if (c.n_layer < 1 || int(c.kind.size()) != c.n_layer || int(c.n_ff.size()) != c.n_layer ||
      int(c.n_head_kv.size()) != c.n_layer)
    bad("config: per-layer arrays must have n_layer entries");
  if (c.n_vocab < 1 || c.n_embd < 1) bad("config: n_vocab and n_embd must be positive");
  std::unordered_map<std::string, const TensorInfo *> by_name;
  for (const auto &t : tensors) by_name[t.name] = &t;
  auto get = [&](const std::string &name) -> const TensorInfo & {
    auto it = by_name.find(name);
    if (it == by_name.end()) bad("missing tensor " + name);
    return *it->second;
  };
  const int64_t E = c.n_embd;
  tok_embd_ = weight(get("token_embd.weight"), E, c.n_vocab);
  output_ = weight(get("output.weight"), E, c.n_vocab);
  output_norm_ = vector(get("output_norm.weight"), E);
  bool any_mamba = false;
  for (int i = 0; i < c.n_layer; ++i) {
    const std::string p = "blk." + std::to_string(i) + ".";
    Layer l;
    l.kind = c.kind[size_t(i)];
    l.attn_norm = vector(get(p + "attn_norm.weight"), E);
    if (l.kind == LayerKind::Mamba) {
      any_mamba = true;
      const int64_t D = c.ssm_d_inner, C = c.ssm_conv_dim(), H = c.ssm_n_head;
      l.ssm_in = weight(get(p + "ssm_in.weight"), E, c.ssm_in_dim());
      l.conv_w = vector(get(p + "ssm_conv1d.weight"), C * c.ssm_d_conv);
      l.conv_b = vector(get(p + "ssm_conv1d.bias"), C);
      l.dt_bias = vector(get(p + "ssm_dt.bias"), H);
      l.A = vector(get(p + "ssm_a"), H);
      l.D = vector(get(p + "ssm_d"), H);
      l.ssm_norm = vector(get(p + "ssm_norm.weight"), D);
      l.ssm_out = weight(get(p + "ssm_out.weight"), D, E);
    } else if (l.kind == LayerKind::Attention) {
      l.n_head_kv = c.n_head_kv[size_t(i)];
      if (l.n_head_kv < 1 || c.n_head % l.n_head_kv)
        bad(p + ": n_head must be a multiple of n_head_kv");
      const int64_t q = int64_t(c.n_head) * c.head_dim, kv = int64_t(l.n_head_kv) * c.head_dim;
      l.wq = weight(get(p + "attn_q.weight"), E, q);
      l.wk = weight(get(p + "attn_k.weight"), E, kv);
      l.wv = weight(get(p + "attn_v.weight"), E, kv);
      l.wo = weight(get(p + "attn_output.weight"), q, E);
      if (kv_type_ == ggml::T_Q8_0 && c.head_dim % ggml::QK)
        bad("a q8_0 KV cache needs head_dim % 32 == 0");
      l.kv_row_bytes = ggml::row_bytes(kv_type_, kv);
    } else if (l.kind == LayerKind::Moe) {
      build_moe(l, p, i, get);
    } else {
      l.up = weight(get(p + "ffn_up.weight"), E, c.n_ff[size_t(i)]);
      l.down = weight(get(p + "ffn_down.weight"), c.n_ff[size_t(i)], E);
    }
    layers_.push_back(std::move(l));
  }
  if (any_mamba) {
    if (c.ssm_n_head < 1 || c.ssm_n_group < 1 || c.ssm_d_inner % c.ssm_n_head ||
        c.ssm_n_head % c.ssm_n_group || c.ssm_d_inner % c.ssm_n_group)
      bad("config: ssm inner size, heads and groups do not divide");
    if (c.ssm_d_conv < 1 || c.ssm_d_conv > 8) bad("config: ssm conv kernel must be 1..8");
  }
}

// A MoE layer's tensors (llama.cpp's nemotron_h_moe names and shapes): the router, the correction
// bias (a host copy: the choice runs on the host), the stacked experts (one Weight per stack,
// describing expert 0; expert e is the same rows e stacks further), the shared expert and the
// optional latent projections.
void Model::build_moe(Layer &l, const std::string &p, int i,
                      const std::function<const TensorInfo &(const std::string &)> &get) {
  const Config &c = cfg_;
  const int64_t E = c.n_embd, X = c.n_expert, F = c.n_ff[size_t(i)], L = c.moe_n_embd();
  if (X < 2 || c.n_expert_used < 1 || c.n_expert_used > X)
    bad(p + ": needs 2 or more experts and 1 <= experts used <= experts");
  if (F < 1 || c.n_ff_shexp < 1) bad(p + ": expert widths must be positive");
  l.gate_inp = weight(get(p + "ffn_gate_inp.weight"), E, X);
  const TensorInfo &b = get(p + "exp_probs_b.bias");
  const uint8_t *bias = tensor_data(b, {X});
  l.exp_probs_b.resize(size_t(X));
  ggml::traits(b.type)->to_float(bias, l.exp_probs_b.data(), X);
  auto stacked = [&](const TensorInfo &t, int64_t n_in, int64_t n_out) {
    const uint8_t *data = tensor_data(t, {n_in, n_out, X});
    return backend::Weight{t.type, on_backend(data), n_in, n_out, ggml::row_bytes(t.type, n_in)};
  };
  l.up_exps = stacked(get(p + "ffn_up_exps.weight"), L, F);
  l.down_exps = stacked(get(p + "ffn_down_exps.weight"), F, L);
  l.up_shexp = weight(get(p + "ffn_up_shexp.weight"), E, c.n_ff_shexp);
  l.down_shexp = weight(get(p + "ffn_down_shexp.weight"), c.n_ff_shexp, E);
  if (c.moe_latent > 0) {
    l.latent_down = weight(get(p + "ffn_latent_down.weight"), E, L);
    l.latent_up = weight(get(p + "ffn_latent_up.weight"), L, E);
  }
}

// The matmul weights in the backend's own layout where it has one (the CPU backend's 16-row
// interleave for its row-lane dots; EDGENANO_REPACK=0 keeps the file's layout). The file's pages
// of a packed matrix are then dropped from this process (the page cache keeps them), so the
// weights are resident once. Not the token embeddings: rows of them are looked up, not multiplied.
void Model::pack_weights() {
  const char *env = std::getenv("EDGENANO_REPACK");
  if (env && *env == '0') return;
  const uint8_t *base = weights_->as<const uint8_t>();
  const uintptr_t page = uintptr_t(sysconf(_SC_PAGESIZE));
  // The whole pages inside a packed range of the file's bytes (neighbours may share the ends).
  const auto release = [&](const uint8_t *p, size_t n) {
    if (p < base || p + n > base + map_bytes_) return;  // not the CPU backend's view of the file
    const uintptr_t at = uintptr_t(map_ + (p - base));
    const uintptr_t lo = (at + page - 1) / page * page, hi = (at + n) / page * page;
    if (hi > lo) madvise(reinterpret_cast<void *>(lo), hi - lo, MADV_DONTNEED);
  };
  std::vector<backend::Backend::PackItem> items;
  for (Layer &l : layers_) {
    for (backend::Weight *w : {&l.ssm_in, &l.ssm_out, &l.wq, &l.wk, &l.wv, &l.wo, &l.up, &l.down,
                               &l.gate_inp, &l.up_shexp, &l.down_shexp, &l.latent_down,
                               &l.latent_up})
      items.push_back({w, 1});  // a layer's absent ones have no data: the backend skips them
    items.push_back({&l.up_exps, cfg_.n_expert});
    items.push_back({&l.down_exps, cfg_.n_expert});
  }
  items.push_back({&output_, 1});
  if (auto buf = backend_->pack_weights(items, release)) packed_.push_back(std::move(buf));
}

size_t State::nbytes() const {
  size_t b = 0;
  for (const auto *bufs : {&conv, &ssm, &k, &v})
    for (const auto &buf : *bufs) b += buf ? buf->nbytes() : 0;
  return b;
}

std::unique_ptr<State> Model::new_state() const {
  auto s = std::make_unique<State>();
  s->owner = this;
  const size_t L = size_t(cfg_.n_layer);
  s->conv.resize(L), s->ssm.resize(L), s->k.resize(L), s->v.resize(L);
  for (size_t i = 0; i < L; ++i)
    if (layers_[i].kind == LayerKind::Mamba) {
      const size_t conv = size_t(cfg_.ssm_d_conv - 1) * size_t(cfg_.ssm_conv_dim());
      s->conv[i] = backend_->alloc(conv * sizeof(float));
      s->ssm[i] =
          backend_->alloc(size_t(cfg_.ssm_d_inner) * size_t(cfg_.ssm_d_state) * sizeof(float));
    }
  return s;
}

// Grows every KV buffer to at least `rows` rows, keeping the n_past rows in use.
void Model::reserve_kv(State &s, int rows) const {
  if (rows <= s.kv_capacity) return;
  int cap = std::max(rows, std::min(n_ctx_, std::max(2 * s.kv_capacity, kKvGrain)));
  cap = std::min(n_ctx_, (cap + kKvGrain - 1) / kKvGrain * kKvGrain);
  for (size_t i = 0; i < layers_.size(); ++i)
    if (layers_[i].kind == LayerKind::Attention) {
      const size_t rb = layers_[i].kv_row_bytes, used = size_t(s.n_past) * rb;
      for (auto *kv : {&s.k[i], &s.v[i]})
        *kv =
            *kv ? backend_->clone(**kv, used, size_t(cap) * rb) : backend_->alloc(size_t(cap) * rb);
    }
  s.kv_capacity = cap;
}

std::unique_ptr<State> Model::copy_state(const State &src) const {
  auto s = std::make_unique<State>();
  s->owner = this;
  s->n_past = src.n_past;
  s->tokens = src.tokens;
  const size_t L = layers_.size();
  s->conv.resize(L), s->ssm.resize(L), s->k.resize(L), s->v.resize(L);
  for (size_t i = 0; i < L; ++i) {
    if (src.conv[i])
      s->conv[i] = backend_->clone(*src.conv[i], src.conv[i]->nbytes(), src.conv[i]->nbytes());
    if (src.ssm[i])
      s->ssm[i] = backend_->clone(*src.ssm[i], src.ssm[i]->nbytes(), src.ssm[i]->nbytes());
  }
  reserve_kv(*s, src.n_past);
  for (size_t i = 0; i < L; ++i)
    if (const size_t used = size_t(src.n_past) * layers_[i].kv_row_bytes; used) {
      backend_->copy(*src.k[i], 0, *s->k[i], 0, used);
      backend_->copy(*src.v[i], 0, *s->v[i], 0, used);
    }
  return s;
}

void Model::export_state(const State &s,
                         const std::function<void *(const std::string &, bool,
                                                    const std::vector<size_t> &)> &dst) const {
  if (s.owner != this) bad("this state was made by another model");
  const Config &c = cfg_;
  const size_t H = size_t(c.ssm_n_head), P = size_t(c.ssm_head_dim()), N = size_t(c.ssm_d_state);
  for (size_t i = 0; i < layers_.size(); ++i) {
    const std::string il = "." + std::to_string(i);
    const Layer &l = layers_[i];
    if (l.kind == LayerKind::Mamba) {
      backend_->download(
          *s.conv[i], 0,
          dst("conv" + il, true, {size_t(c.ssm_d_conv - 1), size_t(c.ssm_conv_dim())}),
          s.conv[i]->nbytes());
      backend_->download(*s.ssm[i], 0, dst("ssm" + il, true, {H, P, N}), s.ssm[i]->nbytes());
    } else if (l.kind == LayerKind::Attention && s.n_past > 0) {
      const size_t used = size_t(s.n_past) * l.kv_row_bytes;
      backend_->download(*s.k[i], 0, dst("k" + il, false, {size_t(s.n_past), l.kv_row_bytes}),
                         used);
      backend_->download(*s.v[i], 0, dst("v" + il, false, {size_t(s.n_past), l.kv_row_bytes}),
                         used);
    }
  }
}

std::unique_ptr<State> Model::restore_state(
    const std::vector<int32_t> &tokens,
    const std::function<const void *(const std::string &, size_t)> &buffer) const {
  if (tokens.size() > size_t(n_ctx_))
    throw std::invalid_argument("state holds " + std::to_string(tokens.size()) +
                                " tokens, more than n_ctx=" + std::to_string(n_ctx_));
  auto s = new_state();
  s->n_past = int(tokens.size());
  s->tokens = tokens;
  reserve_kv(*s, s->n_past);
  auto fill = [&](const std::string &name, backend::Buffer &dst, size_t nbytes) {
    if (nbytes) backend_->upload(dst, 0, buffer(name, nbytes), nbytes);
  };
  for (size_t i = 0; i < layers_.size(); ++i) {
    const std::string il = "." + std::to_string(i);
    if (layers_[i].kind == LayerKind::Mamba) {
      fill("conv" + il, *s->conv[i], s->conv[i]->nbytes());
      fill("ssm" + il, *s->ssm[i], s->ssm[i]->nbytes());
    } else if (layers_[i].kind == LayerKind::Attention && s->n_past > 0) {
      const size_t used = size_t(s->n_past) * layers_[i].kv_row_bytes;
      fill("k" + il, *s->k[i], used);
      fill("v" + il, *s->v[i], used);
    }
  }
  return s;
}

void Model::ensure_scratch(int T) {
  if (T <= scratch_T_) return;
  const Config &c = cfg_;
  size_t big = 1, y = size_t(c.ssm_d_inner);
  for (size_t i = 0; i < layers_.size(); ++i) {
    const Layer &l = layers_[i];
    if (l.kind == LayerKind::Mamba) big = std::max(big, size_t(c.ssm_in_dim()));
    if (l.kind == LayerKind::Mlp) big = std::max(big, size_t(c.n_ff[i]));
    if (l.kind == LayerKind::Moe) big = std::max({big, size_t(c.n_ff[i]), size_t(c.n_ff_shexp)});
    if (l.kind == LayerKind::Attention) {
      const size_t q = size_t(c.n_head) * size_t(c.head_dim);
      big = std::max(big, q + 2 * size_t(l.n_head_kv) * size_t(c.head_dim));
      y = std::max(y, q);
    }
  }
  const size_t t = size_t(T) * sizeof(float), E = size_t(c.n_embd);
  backend::Backend &be = *backend_;  // contents need not survive: every forward writes first
  x_ = be.alloc(t * E), xn_ = be.alloc(t * E), big_ = be.alloc(t * big), y_ = be.alloc(t * y);
  conv_ = be.alloc(t * size_t(c.ssm_conv_dim())), dt_ = be.alloc(t * size_t(c.ssm_n_head));
  yn_ = be.alloc(t * size_t(c.ssm_d_inner));
  if (std::count(c.kind.begin(), c.kind.end(), LayerKind::Moe)) {
    const size_t L = size_t(c.moe_n_embd());
    moe_logits_ = be.alloc(t * size_t(c.n_expert));
    moe_in_ = be.alloc(t * L), moe_g_ = be.alloc(t * L), moe_y_ = be.alloc(t * L);
    moe_acc_ = be.alloc(t * L);
  }
  scratch_T_ = T;
}

void Model::eval(State &s, const int32_t *ids, int n_ids, float *logits, bool all_logits) {
  if (n_ids < 1) bad("no tokens to evaluate");
  for (int i = 0; i < n_ids; ++i)
    if (ids[i] < 0 || ids[i] >= cfg_.n_vocab)
      bad("token id " + std::to_string(ids[i]) + " outside [0, " + std::to_string(cfg_.n_vocab) +
          ")");
  if (int64_t(s.n_past) + n_ids > n_ctx_)
    throw std::length_error("context full: " + std::to_string(s.n_past) + " tokens + " +
                            std::to_string(n_ids) + " new > n_ctx=" + std::to_string(n_ctx_));
  if (s.owner != this) bad("this state was made by another model");
  std::lock_guard<std::mutex> lock(mu_);
  reserve_kv(s, s.n_past + n_ids);
  for (int i0 = 0; i0 < n_ids; i0 += n_batch_) {
    const int T = std::min(n_batch_, n_ids - i0);
    const bool last = i0 + T == n_ids;
    float *out =
        all_logits ? logits + size_t(i0) * size_t(cfg_.n_vocab) : (last ? logits : nullptr);
    forward(s, ids + i0, T, out, all_logits);
  }
  s.tokens.insert(s.tokens.end(), ids, ids + n_ids);
}

void Model::forward(State &s, const int32_t *ids, int T, float *logits, bool all_logits) {
  ensure_scratch(T);
  if (T == 1 && logits && forward_graph(s, ids[0], logits)) return;
  forward_ops(s, ids, T, logits, all_logits);
  s.n_past += T;
}

// The decode step as one graph launch on a backend that records (CUDA): the token id staged in
// device memory before and the logits downloaded after, since a recording may not copy between
// host and device. Each step is recorded anew (its KV length and cache row are parameters of the
// recorded kernels) and the backend updates its instantiated graph in place. Not for models with
// MoE layers: their router's top-k runs on the host in the middle of the forward.
bool Model::forward_graph(State &s, int32_t id, float *logits) {
  if (std::count(cfg_.kind.begin(), cfg_.kind.end(), LayerKind::Moe)) return false;
  backend::Backend &be = *backend_;
  const size_t V = size_t(cfg_.n_vocab);
  if (!graph_ids_) graph_ids_ = be.alloc(sizeof(int32_t)), graph_logits_ = be.alloc(V * 4);
  be.upload(*graph_ids_, 0, &id, sizeof id);
  if (!be.graph_begin()) return false;  // not a recording backend, graphs off, or profiling
  try {
    forward_ops(s, graph_ids_->as<int32_t>(), 1, graph_logits_->as<float>(), false);
  } catch (const backend::GraphUnrecordable &) {  // nothing ran: the step goes eagerly
    be.graph_abort();
    return false;
  } catch (...) {
    be.graph_abort();
    throw;
  }
  be.graph_launch();
  be.download(*graph_logits_, 0, logits, V * sizeof(float));
  s.n_past += 1;
  return true;
}

// The layers and the head on T tokens at s.n_past (forward() advances n_past after).
void Model::forward_ops(State &s, const int32_t *ids, int T, float *logits, bool all_logits) {
  backend::Backend &be = *backend_;
  const int64_t E = cfg_.n_embd;
  be.embed(tok_embd_, ids, T, x_->as<float>(), E);  // x (T, E)
  for (size_t il = 0; il < layers_.size(); ++il) {
    const Layer &l = layers_[il];
    be.rmsnorm(x_->as<float>(), E, l.attn_norm, xn_->as<float>(), E, T, E, cfg_.eps);  // xn (T, E)
    switch (l.kind) {  // each mixer adds its output to x
      case LayerKind::Mamba: mamba(l, s, int(il), T); break;
      case LayerKind::Attention: attention(l, s, int(il), T); break;
      case LayerKind::Mlp: mlp(l, T); break;
      case LayerKind::Moe: moe(l, T); break;
    }
  }
  if (!logits) return;
  const int rows = all_logits ? T : 1;
  const float *src = x_->as<float>() + int64_t(T - rows) * E;
  be.rmsnorm(src, E, output_norm_, xn_->as<float>(), E, rows, E, cfg_.eps);
  be.matmul(output_, xn_->as<float>(), E, logits, cfg_.n_vocab, rows, false);  // (rows, V)
}

// Batched decode: the layer loop of forward() with T = B rows, one per sequence. Row-wise ops
// (embed, norms, matmuls, softplus, relu2) take all B rows at once; what reads or writes a
// sequence's own state (conv, scan, KV store, attention over its KV length) runs per row, T = 1.
void Model::eval_batch(const std::vector<State *> &states, const int32_t *ids, float *logits) {
  const int B = int(states.size());
  if (B < 1) bad("no sequences to evaluate");
  for (int b = 0; b < B; ++b) {
    const State *s = states[size_t(b)];
    if (!s) bad("a state is missing");
    if (s->owner != this) bad("this state was made by another model");
    if (ids[b] < 0 || ids[b] >= cfg_.n_vocab)
      bad("token id " + std::to_string(ids[b]) + " outside [0, " + std::to_string(cfg_.n_vocab) +
          ")");
    if (int64_t(s->n_past) + 1 > n_ctx_)
      throw std::length_error("context full: " + std::to_string(s->n_past) +
                              " tokens + 1 new > n_ctx=" + std::to_string(n_ctx_));
    for (int c = 0; c < b; ++c)
      if (states[size_t(c)] == s) bad("the same state twice in one batch");
  }
  std::lock_guard<std::mutex> lock(mu_);
  for (State *s : states) reserve_kv(*s, s->n_past + 1);
  for (int b0 = 0; b0 < B; b0 += n_batch_) {  // more sequences than scratch rows: in groups
    const int n = std::min(n_batch_, B - b0);
    std::vector<State *> group(states.begin() + b0, states.begin() + b0 + n);
    forward_batch(group, ids + b0, logits + size_t(b0) * size_t(cfg_.n_vocab));
  }
  for (int b = 0; b < B; ++b) states[size_t(b)]->tokens.push_back(ids[b]);
}

void Model::forward_batch(const std::vector<State *> &states, const int32_t *ids, float *logits) {
  const int B = int(states.size());
  ensure_scratch(B);
  backend::Backend &be = *backend_;
  const Config &c = cfg_;
  const int64_t E = c.n_embd;
  be.embed(tok_embd_, ids, B, x_->as<float>(), E);  // x (B, E)
  for (size_t il = 0; il < layers_.size(); ++il) {
    const Layer &l = layers_[il];
    be.rmsnorm(x_->as<float>(), E, l.attn_norm, xn_->as<float>(), E, B, E, c.eps);
    if (l.kind == LayerKind::Mamba) {
      const int64_t D = c.ssm_d_inner, C = c.ssm_conv_dim(), W = c.ssm_in_dim();
      const int H = c.ssm_n_head, G = c.ssm_n_group, N = c.ssm_d_state;
      float *zxbcdt = big_->as<float>();
      be.matmul(l.ssm_in, xn_->as<float>(), E, zxbcdt, W, B, false);
      std::vector<backend::ConvParams> cps(static_cast<size_t>(B));
      for (int b = 0; b < B; ++b) {
        backend::ConvParams &cp = cps[size_t(b)];
        cp.T = 1, cp.C = C, cp.K = c.ssm_d_conv, cp.x = zxbcdt + b * W + D, cp.ldx = W;
        cp.w = l.conv_w, cp.b = l.conv_b, cp.state = states[size_t(b)]->conv[il]->as<float>();
        cp.y = conv_->as<float>() + b * C, cp.ldy = C, cp.silu = true;
      }
      be.causal_conv_many(cps.data(), B);
      be.softplus_bias(zxbcdt + D + C, W, l.dt_bias, dt_->as<float>(), H, B, H);
      std::vector<backend::ScanParams> sps(static_cast<size_t>(B));
      for (int b = 0; b < B; ++b) {
        backend::ScanParams &sp = sps[size_t(b)];
        const float *xb = conv_->as<float>() + b * C;
        sp.T = 1, sp.H = H, sp.P = c.ssm_head_dim(), sp.N = N, sp.G = G;
        sp.x = xb, sp.ldx = C, sp.B = xb + D, sp.C = xb + D + G * N, sp.ldbc = C;
        sp.dt = dt_->as<float>() + b * H, sp.lddt = H, sp.A = l.A, sp.D = l.D;
        sp.state = states[size_t(b)]->ssm[il]->as<float>(), sp.y = y_->as<float>() + b * D;
        sp.ldy = D;
      }
      be.ssm_scan_many(sps.data(), B);
      be.gated_rmsnorm(y_->as<float>(), D, zxbcdt, W, l.ssm_norm, yn_->as<float>(), D, B, D, G,
                       c.eps);
      be.matmul(l.ssm_out, yn_->as<float>(), D, x_->as<float>(), E, B, true);
    } else if (l.kind == LayerKind::Attention) {
      const int64_t d = c.head_dim, q = int64_t(c.n_head) * d;
      const int64_t kv = int64_t(l.n_head_kv) * d, W = q + 2 * kv;
      float *qkv = big_->as<float>();
      be.matmul(l.wq, xn_->as<float>(), E, qkv, W, B, false);
      be.matmul(l.wk, xn_->as<float>(), E, qkv + q, W, B, false);
      be.matmul(l.wv, xn_->as<float>(), E, qkv + q + kv, W, B, false);
      for (int b = 0; b < B; ++b) {
        State &s = *states[size_t(b)];
        uint8_t *kc = s.k[il]->as<uint8_t>(), *vc = s.v[il]->as<uint8_t>();
        const float *row = qkv + b * W;
        be.kv_store(row + q, W, 1, kv, kv_type_, kc + size_t(s.n_past) * l.kv_row_bytes);
        be.kv_store(row + q + kv, W, 1, kv, kv_type_, vc + size_t(s.n_past) * l.kv_row_bytes);
        backend::AttnParams ap;
        ap.T = 1, ap.n_past = s.n_past, ap.n_head = c.n_head, ap.n_head_kv = l.n_head_kv;
        ap.head_dim = int(d), ap.q = row, ap.ldq = W, ap.k = kc, ap.v = vc;
        ap.kv_row_bytes = l.kv_row_bytes, ap.kv_type = kv_type_;
        ap.scale = 1.f / std::sqrt(float(d));
        ap.out = y_->as<float>() + b * q, ap.ldo = q;
        be.attention(ap);
      }
      be.matmul(l.wo, y_->as<float>(), q, x_->as<float>(), E, B, true);
    } else if (l.kind == LayerKind::Mlp) {
      mlp(l, B);
    } else if (l.kind == LayerKind::Moe) {  // position-wise: the B rows are tokens to route
      moe(l, B);
    } else {
      bad("eval_batch: layer kind " + std::to_string(int(l.kind)) + " is not supported");
    }
  }
  for (State *s : states) s->n_past += 1;
  be.rmsnorm(x_->as<float>(), E, output_norm_, xn_->as<float>(), E, B, E, c.eps);
  be.matmul(output_, xn_->as<float>(), E, logits, c.n_vocab, B, false);  // (B, V)
}

void Model::mamba(const Layer &l, State &s, int il, int T) {
  backend::Backend &be = *backend_;
  const Config &c = cfg_;
  const int64_t E = c.n_embd, D = c.ssm_d_inner, C = c.ssm_conv_dim(), W = c.ssm_in_dim();
  const int H = c.ssm_n_head, G = c.ssm_n_group, N = c.ssm_d_state;
  float *zxbcdt = big_->as<float>();  // (T, W): z (D) | xBC (C) | dt (H)
  be.matmul(l.ssm_in, xn_->as<float>(), E, zxbcdt, W, T, false);

  backend::ConvParams cp;  // xBC -> conv_ (T, C), silu applied
  cp.T = T, cp.C = C, cp.K = c.ssm_d_conv, cp.x = zxbcdt + D, cp.ldx = W, cp.w = l.conv_w;
  cp.b = l.conv_b, cp.state = s.conv[size_t(il)]->as<float>(), cp.y = conv_->as<float>(),
  cp.ldy = C;
  cp.silu = true;
  be.causal_conv(cp);
  be.softplus_bias(zxbcdt + D + C, W, l.dt_bias, dt_->as<float>(), H, T, H);  // dt (T, H)

  backend::ScanParams sp;  // x (T, H, P), B, C (T, G, N) from conv_ -> y_ (T, D)
  sp.T = T, sp.H = H, sp.P = c.ssm_head_dim(), sp.N = N, sp.G = G;
  sp.x = conv_->as<float>(), sp.ldx = C, sp.B = conv_->as<float>() + D,
  sp.C = conv_->as<float>() + D + G * N;
  sp.ldbc = C, sp.dt = dt_->as<float>(), sp.lddt = H, sp.A = l.A, sp.D = l.D;
  sp.state = s.ssm[size_t(il)]->as<float>(), sp.y = y_->as<float>(), sp.ldy = D;
  be.ssm_scan(sp, T >= kChunkedScanMinT ? kScanChunk : 0);

  be.gated_rmsnorm(y_->as<float>(), D, zxbcdt, W, l.ssm_norm, yn_->as<float>(), D, T, D, G,
                   c.eps);                                                 // (T, D)
  be.matmul(l.ssm_out, yn_->as<float>(), D, x_->as<float>(), E, T, true);  // x += (T, E)
}

void Model::attention(const Layer &l, State &s, int il, int T) {
  backend::Backend &be = *backend_;
  const Config &c = cfg_;
  const int64_t E = c.n_embd, d = c.head_dim, q = int64_t(c.n_head) * d;
  const int64_t kv = int64_t(l.n_head_kv) * d, W = q + 2 * kv;
  float *qkv = big_->as<float>();  // (T, W): q (Hq*d) | k (Hkv*d) | v (Hkv*d)
  be.matmul(l.wq, xn_->as<float>(), E, qkv, W, T, false);
  be.matmul(l.wk, xn_->as<float>(), E, qkv + q, W, T, false);
  be.matmul(l.wv, xn_->as<float>(), E, qkv + q + kv, W, T, false);
  uint8_t *kc = s.k[size_t(il)]->as<uint8_t>(), *vc = s.v[size_t(il)]->as<uint8_t>();
  be.kv_store(qkv + q, W, T, kv, kv_type_, kc + size_t(s.n_past) * l.kv_row_bytes);
  be.kv_store(qkv + q + kv, W, T, kv, kv_type_, vc + size_t(s.n_past) * l.kv_row_bytes);

  backend::AttnParams ap;  // -> y_ (T, Hq*d)
  ap.T = T, ap.n_past = s.n_past, ap.n_head = c.n_head, ap.n_head_kv = l.n_head_kv;
  ap.head_dim = int(d), ap.q = qkv, ap.ldq = W, ap.k = kc, ap.v = vc;
  ap.kv_row_bytes = l.kv_row_bytes, ap.kv_type = kv_type_, ap.scale = 1.f / std::sqrt(float(d));
  ap.out = y_->as<float>(), ap.ldo = q;
  be.attention(ap);
  be.matmul(l.wo, y_->as<float>(), q, x_->as<float>(), E, T, true);  // x += (T, E)
}

void Model::mlp(const Layer &l, int T) {
  backend::Backend &be = *backend_;
  const int64_t E = cfg_.n_embd, F = l.up.n_out;
  be.matmul(l.up, xn_->as<float>(), E, big_->as<float>(), F, T, false);  // (T, F)
  be.relu2(big_->as<float>(), F, T, F);
  be.matmul(l.down, big_->as<float>(), F, x_->as<float>(), E, T, true);  // x += (T, E)
}

}  // namespace edgenano

namespace edgenano {

namespace {

// llama.cpp clamps the sum of the chosen weights before dividing (F16's smallest normal).
constexpr float kMoeWeightSumMin = 6.103515625e-5f;

backend::Weight expert(const backend::Weight &stack, int e) {
  backend::Weight w = stack;
  w.data += size_t(e) * size_t(stack.n_out) * stack.row_bytes;
  return w;
}

}  // namespace

// Mixture of experts (SPEC 1.4): x += experts(xn) + shared(xn). The router's logits come to the
// host, which chooses each token's experts (sigmoid, + bias for the choice only, top-k, weights
// normalised and scaled) and groups the tokens by expert; each chosen expert then runs once on its
// tokens gathered into contiguous rows, so its weights are read once per batch, and a decoded
// token reads only its k experts. Experts run in index order, their outputs weighted and added
// back to their tokens' rows.
void Model::moe(const Layer &l, int T) {
  backend::Backend &be = *backend_;
  const Config &c = cfg_;
  const int64_t E = c.n_embd, X = c.n_expert, L = c.moe_n_embd(), F = l.up_exps.n_out;
  const int k = c.n_expert_used;
  const bool latent = c.moe_latent > 0;
  const float *xn = xn_->as<float>();
  be.matmul(l.gate_inp, xn, E, moe_logits_->as<float>(), X, T, false);  // (T, X)
  std::vector<float> &lg = moe_logits_host_;
  lg.resize(size_t(T) * size_t(X));
  be.download(*moe_logits_, 0, lg.data(), lg.size() * sizeof(float));

  std::vector<std::vector<int32_t>> rows(static_cast<size_t>(X));
  std::vector<std::vector<float>> weights(static_cast<size_t>(X));
  std::vector<float> score(static_cast<size_t>(X)), choice(static_cast<size_t>(X));
  std::vector<int> order(static_cast<size_t>(X));
  for (int t = 0; t < T; ++t) {
    for (int64_t e = 0; e < X; ++e) {
      score[size_t(e)] = 1.f / (1.f + std::exp(-lg[size_t(t) * size_t(X) + size_t(e)]));
      choice[size_t(e)] = score[size_t(e)] + l.exp_probs_b[size_t(e)];
    }
    for (int64_t e = 0; e < X; ++e) order[size_t(e)] = int(e);
    std::partial_sort(order.begin(), order.begin() + k, order.end(), [&](int a, int b) {
      return choice[size_t(a)] > choice[size_t(b)] ||
             (choice[size_t(a)] == choice[size_t(b)] && a < b);
    });
    float sum = 0;
    for (int j = 0; j < k; ++j) sum += score[size_t(order[size_t(j)])];
    const float norm = c.expert_weights_norm ? 1.f / std::max(sum, kMoeWeightSumMin) : 1.f;
    for (int j = 0; j < k; ++j) {
      const int e = order[size_t(j)];
      rows[size_t(e)].push_back(t);
      weights[size_t(e)].push_back(score[size_t(e)] * norm * c.expert_scale);
    }
  }

  const float *in = xn;  // the experts' input (T, L)
  int64_t ld_in = E;
  float *out = x_->as<float>();  // where the weighted expert outputs go: x, or the latent sum
  int64_t ld_out = E;
  if (latent) {
    be.matmul(l.latent_down, xn, E, moe_in_->as<float>(), L, T, false);
    in = moe_in_->as<float>(), ld_in = L;
    const std::vector<float> zeros(size_t(T) * size_t(L), 0.f);
    be.upload(*moe_acc_, 0, zeros.data(), zeros.size() * sizeof(float));
    out = moe_acc_->as<float>(), ld_out = L;
  }
  float *h = big_->as<float>(), *y = moe_y_->as<float>();
  for (int64_t e = 0; e < X; ++e) {
    const auto &r = rows[size_t(e)];
    const int n = int(r.size());
    if (!n) continue;
    const float *g = in;
    int64_t ld_g = ld_in;
    if (n != T) {  // not every token: gather this expert's rows (all T keep their own rows)
      be.gather_rows(in, ld_in, r.data(), n, L, moe_g_->as<float>(), L);
      g = moe_g_->as<float>(), ld_g = L;
    }
    be.matmul(expert(l.up_exps, int(e)), g, ld_g, h, F, n, false);  // (n, F)
    be.relu2(h, F, n, F);
    be.matmul(expert(l.down_exps, int(e)), h, F, y, L, n, false);  // (n, L)
    be.scatter_add_rows(y, L, r.data(), weights[size_t(e)].data(), n, L, out, ld_out);
  }
  if (latent) be.matmul(l.latent_up, out, L, x_->as<float>(), E, T, true);  // x += (T, E)

  const int64_t S = l.up_shexp.n_out;  // the shared expert, on every token
  be.matmul(l.up_shexp, xn, E, h, S, T, false);
  be.relu2(h, S, T, S);
  be.matmul(l.down_shexp, h, S, x_->as<float>(), E, T, true);  // x += (T, E)
}

}  // namespace edgenano
