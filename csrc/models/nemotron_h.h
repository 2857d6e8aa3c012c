// nemotron_h (Nemotron-H hybrid Mamba-2 / attention / MLP): config, the layer table, per-sequence
// state and the forward as a sequence of backend operations. The backend owns every byte the
// forward touches (the weights it mapped or uploaded from the GGUF, scratch, state); the model
// holds its Buffers and pointers into them. The layer kind is data (per-layer arrays from the
// file), as in llama.cpp's nemotron_h.
#pragma once
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "backend/backend.h"

namespace edgenano {

enum class LayerKind : int { Mamba = 0, Attention = 1, Mlp = 2, Moe = 3 };

struct Config {
  int n_vocab = 0, n_embd = 0, n_layer = 0;
  std::vector<LayerKind> kind;  // (n_layer)
  std::vector<int> n_ff;        // (n_layer) MLP width at MLP layers
  std::vector<int> n_head_kv;   // (n_layer) KV heads at attention layers
  int n_head = 0, head_dim = 0;
  int ssm_d_conv = 0, ssm_d_state = 0, ssm_n_group = 0, ssm_d_inner = 0, ssm_n_head = 0;
  float eps = 1e-5f;
  // Mixture of experts (nemotron_h_moe, SPEC 1.4): n_ff holds the routed experts' width at Moe
  // layers.
  int n_expert = 0, n_expert_used = 0, n_ff_shexp = 0, moe_latent = 0;
  bool expert_weights_norm = false;
  float expert_scale = 1.f;  // on the chosen experts' weights

  int moe_n_embd() const { return moe_latent > 0 ? moe_latent : n_embd; }  // experts' width

  int ssm_head_dim() const { return ssm_d_inner / ssm_n_head; }                     // P
  int ssm_conv_dim() const { return ssm_d_inner + 2 * ssm_n_group * ssm_d_state; }  // C
  int ssm_in_dim() const { return ssm_d_inner + ssm_conv_dim() + ssm_n_head; }      // 2D+2GN+H
};

// One tensor of the file as the Python loader described it.
struct TensorInfo {
  std::string name;
  int type = 0;
  std::vector<int64_t> ne;  // ggml order, ne0 first
  uint64_t offset = 0;      // absolute byte offset in the file
  uint64_t nbytes = 0;
};

// One layer's weights: pointers into the backend's weight buffers.
struct Layer {
  LayerKind kind = LayerKind::Mamba;
  const float *attn_norm = nullptr;  // (E) pre-norm of every layer
  // Mamba-2
  backend::Weight ssm_in;           // E -> 2D+2GN+H: z | xBC | dt
  const float *conv_w = nullptr;    // (C, K), w[c, K-1] multiplies the current token
  const float *conv_b = nullptr;    // (C)
  const float *dt_bias = nullptr;   // (H)
  const float *A = nullptr;         // (H) = -exp(A_log), as stored
  const float *D = nullptr;         // (H)
  const float *ssm_norm = nullptr;  // (D) grouped RMSNorm weight
  backend::Weight ssm_out;          // D -> E
  // attention (no positional encoding)
  backend::Weight wq, wk, wv, wo;  // E -> Hq*d, E -> Hkv*d (x2), Hq*d -> E
  int n_head_kv = 0;
  size_t kv_row_bytes = 0;  // one cached K (or V) row: Hkv*d values
  // MLP (relu^2)
  backend::Weight up, down;  // E -> F, F -> E
  // MoE: router (F32) E -> X; the experts stacked: expert e's up is up_exps with data advanced by
  // e * up_exps.n_out * up_exps.row_bytes (the same for down); a shared relu^2 expert (up, down
  // above are unused); the latent projections when moe_latent > 0.
  backend::Weight gate_inp, up_exps, down_exps, up_shexp, down_shexp, latent_down, latent_up;
  std::vector<float> exp_probs_b;  // (X) correction bias, host copy: the choice runs on the host
};

// What a sequence carries, in buffers of the model's backend: conv + SSM state per Mamba layer,
// KV rows per attention layer (null for layers of other kinds).
struct State {
  State() = default;
  State(const State &) = delete;  // snapshots go through Model::copy_state
  State &operator=(const State &) = delete;

  const void *owner = nullptr;  // the Model that made it
  int n_past = 0;
  int kv_capacity = 0;                   // rows allocated in each k/v buffer
  std::vector<backend::BufferPtr> conv;  // [layer] (K-1, C) f32
  std::vector<backend::BufferPtr> ssm;   // [layer] (H, P, N) f32
  std::vector<backend::BufferPtr> k, v;  // [layer] (kv_capacity, kv row bytes)
  std::vector<int32_t> tokens;           // every token fed, for diagnostics and resumption

  size_t nbytes() const;  // bytes held on the backend
};

class Model {
 public:
  // Maps `path`, checks every tensor against the config and the file, builds the layer table.
  Model(const std::string &path, Config cfg, const std::vector<TensorInfo> &tensors, int n_ctx,
        int n_threads, int n_batch, int kv_type, const std::string &backend = "cpu",
        bool use_mmap = true);
  ~Model();
  Model(const Model &) = delete;
  Model &operator=(const Model &) = delete;

  const Config &config() const { return cfg_; }
  int n_ctx() const { return n_ctx_; }
  int n_batch() const { return n_batch_; }
  int kv_type() const { return kv_type_; }
  int n_threads() const { return backend_->n_threads(); }
  const char *backend_name() const { return backend_->name(); }
  size_t file_bytes() const { return map_bytes_; }
  // Per-operation timing (off unless EDGENANO_PROFILE=1 or set_profiling(true)).
  void set_profiling(bool on) {
    std::lock_guard<std::mutex> g(mu_);
    backend_->set_enabled(on);
  }
  bool profiling() const { return backend_->enabled(); }
  std::vector<backend::ProfileEntry> profile(bool reset) {
    std::lock_guard<std::mutex> g(mu_);
    auto p = backend_->profile();
    if (reset) backend_->reset_profile();
    return p;
  }

  // Decode-step graphs (CUDA backend): counters, and 1 on / 0 off / 2 stale (tests' planted bug).
  backend::GraphStats graph_stats() const { return backend_->graph_stats(); }
  void set_graph_mode(int mode) {
    std::lock_guard<std::mutex> g(mu_);
    backend_->set_graph_mode(mode);
  }

  std::unique_ptr<State> new_state() const;
  std::unique_ptr<State> copy_state(const State &s) const;
  // The state copied to the host, tensor by tensor: conv.i (K-1, C) and ssm.i (H, P, N) float32
  // per Mamba layer, k.i / v.i (n_past, row bytes) int8 per attention layer (when n_past > 0);
  // `dst` returns where each goes (f32: float32, else int8 bytes).
  void export_state(const State &s,
                    const std::function<void *(const std::string &name, bool f32,
                                               const std::vector<size_t> &shape)> &dst) const;
  // A state rebuilt from exported buffers (as export_state writes them, in this model's KV
  // type): `buffer` returns the host bytes of each. Throws std::invalid_argument on any missing
  // or misshapen buffer.
  std::unique_ptr<State> restore_state(
      const std::vector<int32_t> &tokens,
      const std::function<const void *(const std::string &name, size_t nbytes)> &buffer) const;
  const Layer &layer(int il) const { return layers_[size_t(il)]; }

  // Feeds ids (prefill in n_batch chunks) and writes logits: of the last token (n_vocab floats)
  // or, when all_logits, of every token (n_ids x n_vocab).
  void eval(State &s, const int32_t *ids, int n_ids, float *logits, bool all_logits);
  // One decode step for several sequences at once: token ids[b] fed into *states[b], logits of
  // each written to logits + b * n_vocab. The matmuls run over the B rows together (the weights
  // stream once per step); conv, scan, KV store and attention run per sequence on its own state
  // and KV length. The states must be distinct.
  void eval_batch(const std::vector<State *> &states, const int32_t *ids, float *logits);
  size_t packed_bytes() const {
    size_t n = 0;
    for (const auto &b : packed_) n += b->nbytes();
    return n;
  }

 private:
  void map_file(const std::string &path, bool use_mmap);
  const uint8_t *tensor_data(const TensorInfo &t, const std::vector<int64_t> &ne) const;
  const uint8_t *on_backend(const uint8_t *host) const;  // the same bytes in weights_
  backend::Weight weight(const TensorInfo &t, int64_t n_in, int64_t n_out) const;
  const float *vector(const TensorInfo &t, int64_t n);
  void build(const std::vector<TensorInfo> &tensors);
  void build_moe(Layer &l, const std::string &p, int i,
                 const std::function<const TensorInfo &(const std::string &)> &get);
  void pack_weights();
  void reserve_kv(State &s, int rows) const;
  void ensure_scratch(int T);
  void forward(State &s, const int32_t *ids, int T, float *logits, bool all_logits);
  bool forward_graph(State &s, int32_t id, float *logits);
  void forward_ops(State &s, const int32_t *ids, int T, float *logits, bool all_logits);
  void forward_batch(const std::vector<State *> &states, const int32_t *ids, float *logits);
  void mamba(const Layer &l, State &s, int il, int T);
  void attention(const Layer &l, State &s, int il, int T);
  void mlp(const Layer &l, int T);
  void moe(const Layer &l, int T);

  Config cfg_;
  int n_ctx_, n_batch_, kv_type_;
  std::unique_ptr<backend::ProfilingBackend> backend_;  // declared first: destroyed last
  const uint8_t *map_ = nullptr;                        // the file, read-only (host)
  size_t map_bytes_ = 0;
  backend::BufferPtr weights_;                 // the file's bytes as the backend reads them
  std::vector<backend::BufferPtr> converted_;  // small tensors not stored as F32, converted once
  std::vector<backend::BufferPtr> packed_;     // matmul weights in the backend's own layout
  backend::Weight tok_embd_, output_;
  const float *output_norm_ = nullptr;
  std::vector<Layer> layers_;
  std::mutex mu_;  // one forward at a time: the scratch below is shared
  int scratch_T_ = 0;
  // Scratch, row-major (T rows) f32: x residual (E), xn normed (E), big (widest projection),
  // conv out (C), dt (H), y scan/attention out (max(D, Hq*d)), yn gated-norm out (D).
  backend::BufferPtr x_, xn_, big_, conv_, dt_, y_, yn_;
  // MoE scratch: router logits (T, X), latent input (T, L), gathered rows (T, L), expert outputs
  // (T, L), latent accumulator (T, L); host copies of the logits.
  backend::BufferPtr moe_logits_, moe_in_, moe_g_, moe_y_, moe_acc_;
  std::vector<float> moe_logits_host_;
  backend::BufferPtr graph_ids_, graph_logits_;  // the decode graph's token id and logits
};

}  // namespace edgenano
