"""NumPy forward of nemotron_h (SPEC section 1): the oracle every engine and kernel is tested
against, and a portable slow backend. Plain float32 or float64 math, one function per kernel.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

import numpy as np

from .gguf_model import GGUFModel, TensorView
from .layers import KINDS

# Letters used in shapes: T tokens, E embedding, H Mamba heads, P Mamba head width, N state size,
# G groups, D = H*P, K conv width, C = D + 2GN conv channels, Hq/Hkv attention heads, d head width.

# ---------------------------------------------------------------------------------------------
# Elementwise


def silu(x: np.ndarray) -> np.ndarray:
    """x * sigmoid(x); sigmoid from exp(-|x|) so that no exp overflows."""
    e = np.exp(-np.abs(x))
    return x * np.where(x >= 0, 1 / (1 + e), e / (1 + e))


def softplus(v: np.ndarray) -> np.ndarray:
    """log(1 + exp(v)), and v itself for v > 20 (llama.cpp's threshold)."""
    return np.where(v > 20, v, np.log1p(np.exp(np.minimum(v, 20))))


def relu2(x: np.ndarray) -> np.ndarray:
    """relu(x)^2, the MLP activation of nemotron_h."""
    return np.square(np.maximum(x, 0))


def linear(x: np.ndarray, w: np.ndarray) -> np.ndarray:
    """x (T, in) times a dequantized weight w (out, in) -> (T, out)."""
    return x @ w.T


# ---------------------------------------------------------------------------------------------
# Norms


def rmsnorm(x: np.ndarray, w: np.ndarray, eps: float) -> np.ndarray:
    """RMSNorm over the last axis. x (T, E), w (E,) -> (T, E): x / sqrt(mean(x^2) + eps) * w."""
    return x / np.sqrt(np.mean(np.square(x), axis=-1, keepdims=True) + eps) * w


def gated_group_rmsnorm(y: np.ndarray, z: np.ndarray, w: np.ndarray, n_group: int,
                        eps: float) -> np.ndarray:
    """Mamba-2 output norm, gate before norm. y, z (T, D); w (D,) -> (T, D).

    1. y = y * silu(z)
    2. split the D channels into G contiguous groups of D/G; RMS-normalise each group alone
    3. multiply by w
    """
    T, D = y.shape
    g = (y * silu(z)).reshape(T, n_group, D // n_group)  # (T, G, D/G)
    g = g / np.sqrt(np.mean(np.square(g), axis=-1, keepdims=True) + eps)
    return g.reshape(T, D) * w


# ---------------------------------------------------------------------------------------------
# Causal depthwise convolution


def causal_conv(x: np.ndarray, state: np.ndarray, w: np.ndarray,
                b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Causal depthwise conv over time, sequence form (no activation).

    x (T, C) new inputs; state (K-1, C) the K-1 inputs before them (zeros at the start);
    w (C, K) with w[:, K-1] multiplying the current token; b (C,).
    1. xp = [state; x]                        (K-1+T, C)
    2. out[t] = b + sum_k w[:, k] * xp[t + k]  (T, C)
    3. the new state is the last K-1 rows of xp (pre-conv inputs)
    """
    K, T = w.shape[1], x.shape[0]
    xp = np.concatenate([state, x], axis=0)
    out = np.broadcast_to(b, x.shape).copy()
    for k in range(K):
        out += w[:, k] * xp[k:k + T]
    return out, xp[T:].copy()


def causal_conv_step(x: np.ndarray, state: np.ndarray, w: np.ndarray,
                     b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """One token of `causal_conv`. x (C,), state (K-1, C) -> out (C,), new state (K-1, C)."""
    window = np.concatenate([state, x[None]], axis=0)  # (K, C), oldest first
    out = b + np.sum(w.T * window, axis=0)
    return out, window[1:].copy()


# ---------------------------------------------------------------------------------------------
# Selective scan (Mamba-2 SSD). Head h reads B/C group h // (H/G).


def ssm_step(state: np.ndarray, x: np.ndarray, dt: np.ndarray, A: np.ndarray, B: np.ndarray,
             C: np.ndarray, D: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """One step of the recurrence.

    state (H, P, N); x (H, P); dt (H,) after softplus; A (H,) negative; B, C (G, N); D (H,).
    1. Bh, Ch = B, C repeated per head                       (H, N)
    2. S = exp(dt * A) * S + dt * outer(x_h, Bh_h)            (H, P, N)
    3. y_h = S_h @ Ch_h + D_h * x_h                           (H, P)
    Returns y (H, P) and the new state.
    """
    rep = x.shape[0] // B.shape[0]
    Bh, Ch = np.repeat(B, rep, axis=0), np.repeat(C, rep, axis=0)
    decay = np.exp(dt * A)[:, None, None]
    state = decay * state + (dt[:, None] * x)[:, :, None] * Bh[:, None, :]
    y = np.einsum("hpn,hn->hp", state, Ch) + D[:, None] * x
    return y, state


def ssm_scan_recurrent(state, x, dt, A, B, C, D) -> tuple[np.ndarray, np.ndarray]:
    """`ssm_step` over a sequence. x (T, H, P), dt (T, H), B, C (T, G, N); state (H, P, N).

    Returns y (T, H, P) and the final state.
    """
    y = np.empty_like(x)
    for t in range(x.shape[0]):
        y[t], state = ssm_step(state, x[t], dt[t], A, B[t], C[t], D)
    return y, state


def segsum(a: np.ndarray) -> np.ndarray:
    """a (L, H) -> (L, L, H): out[t, u] = sum_{u < k <= t} a[k] for t >= u, -inf above.

    Summed per (t, u) from masked terms rather than as cumsum[t] - cumsum[u], which loses
    precision when the cumulative sums are large.
    """
    L = a.shape[0]
    terms = np.broadcast_to(a[:, None, :], (L, L, a.shape[1])).copy()  # terms[k, u] = a[k]
    terms[~np.tril(np.ones((L, L), dtype=bool), -1)] = 0  # keep k > u
    out = np.cumsum(terms, axis=0)  # out[t, u] = sum_{u < k <= t} a[k]
    out[~np.tril(np.ones((L, L), dtype=bool), 0)] = -np.inf
    return out


def ssm_scan_chunked(state, x, dt, A, B, C, D, chunk_size: int) -> tuple[np.ndarray, np.ndarray]:
    """The same scan in chunked SSD form; equals `ssm_scan_recurrent` up to rounding.

    Shapes as in `ssm_scan_recurrent`. Per chunk of L <= chunk_size tokens (the last may be
    shorter), with a[t] = dt[t] * A the log-decay of step t and s[t] its cumulative sum:
    1. intra-chunk:   y[t] += sum_{u<=t} exp(s[t]-s[u]) (C[t].B[u]) dt[u] x[u]
    2. carried state: y[t] += exp(s[t]) S C[t]
    3. next state:    S = exp(s[L-1]) S + sum_u exp(s[L-1]-s[u]) dt[u] outer(x[u], B[u])
    4. skip:          y[t] += D x[t]
    """
    T, H, _ = x.shape
    rep = H // B.shape[1]
    Bh, Ch = np.repeat(B, rep, axis=1), np.repeat(C, rep, axis=1)  # (T, H, N)
    a = dt * A  # (T, H)
    y = np.empty_like(x)
    for c0 in range(0, T, chunk_size):
        sl = slice(c0, min(c0 + chunk_size, T))
        xs, dts, Bs, Cs = x[sl], dt[sl], Bh[sl], Ch[sl]
        decay = np.exp(segsum(a[sl]))  # (L, L, H): exp(s[t] - s[u]) for u <= t, else 0
        s = np.cumsum(a[sl], axis=0)  # (L, H)
        scores = np.einsum("thn,uhn->tuh", Cs, Bs, optimize=True) * decay * dts[None]  # (L, L, H)
        y_diag = np.einsum("tuh,uhp->thp", scores, xs, optimize=True)
        y_state = np.einsum("hpn,thn->thp", state, Cs, optimize=True) * np.exp(s)[:, :, None]
        w_end = decay[-1] * dts  # (L, H): exp(s[L-1] - s[u]) dt[u]
        state = (np.exp(s[-1])[:, None, None] * state
                 + np.einsum("uh,uhp,uhn->hpn", w_end, xs, Bs, optimize=True))
        y[sl] = y_diag + y_state + D[None, :, None] * xs
    return y, state


# ---------------------------------------------------------------------------------------------
# Attention and MLP


def attention(q: np.ndarray, k: np.ndarray, v: np.ndarray, n_past: int) -> np.ndarray:
    """Causal GQA attention over a KV cache; no positional encoding (nemotron_h has none).

    q (T, Hq, d) for tokens at positions n_past .. n_past+T-1; k, v (n_past+T, Hkv, d) the whole
    cache including these tokens. Query head h uses KV head h // (Hq/Hkv).
    1. scores[h, t, s] = q[t, h] . k[s, h // rep] / sqrt(d), -inf where s > n_past + t
    2. p = softmax over s
    3. out[t, h] = sum_s p[h, t, s] v[s, h // rep]        -> (T, Hq * d)
    """
    T, Hq, d = q.shape
    rep = Hq // k.shape[1]
    kh, vh = np.repeat(k, rep, axis=1), np.repeat(v, rep, axis=1)  # (S, Hq, d)
    scores = np.einsum("thd,shd->hts", q, kh, optimize=True) / np.sqrt(d).astype(q.dtype)
    visible = np.arange(k.shape[0])[None, :] <= n_past + np.arange(T)[:, None]  # (T, S)
    scores = np.where(visible[None], scores, -np.inf)
    p = np.exp(scores - scores.max(axis=-1, keepdims=True))
    p /= p.sum(axis=-1, keepdims=True)
    return np.einsum("hts,shd->thd", p, vh, optimize=True).reshape(T, Hq * d)


def mlp_relu2(x: np.ndarray, w_up: np.ndarray, w_down: np.ndarray) -> np.ndarray:
    """down(relu(up(x))^2); x (T, E), w_up (F, E), w_down (E, F) -> (T, E). No gate, no bias."""
    return linear(relu2(linear(x, w_up)), w_down)


def sigmoid(x: np.ndarray) -> np.ndarray:
    """1 / (1 + exp(-x)) without overflow."""
    e = np.exp(-np.abs(x))
    return np.where(x >= 0, 1 / (1 + e), e / (1 + e))


# llama.cpp clamps the sum of the chosen weights before dividing (F16's smallest normal);
# transformers adds 1e-20. Sums of sigmoids this small do not occur in practice.
MOE_WEIGHT_SUM_MIN = 6.103515625e-05


def moe_route(h: np.ndarray, w_gate: np.ndarray, bias: np.ndarray, k: int, norm: bool,
              scale: float) -> tuple[np.ndarray, np.ndarray]:
    """The router, in float32 whatever the model dtype (as transformers and llama.cpp run it).

    h (T, E), w_gate (X, E) for X experts, bias (X,) -> chosen (T, k) expert ids, weights (T, k).
    1. scores = sigmoid(h W_g^T)                       (T, X)
    2. chosen = the k largest of scores + bias          (the bias decides the choice only)
    3. weights = scores at chosen, / their sum when norm, * scale
    """
    scores = sigmoid(h.astype(np.float32) @ w_gate.astype(np.float32).T)
    choice = scores + bias.astype(np.float32)
    chosen = np.argsort(-choice, axis=1, kind="stable")[:, :k]
    w = np.take_along_axis(scores, chosen, axis=1)
    if norm:
        w = w / np.maximum(w.sum(axis=1, keepdims=True), np.float32(MOE_WEIGHT_SUM_MIN))
    return chosen, w * np.float32(scale)


def moe_experts(x: np.ndarray, chosen: np.ndarray, weights: np.ndarray, up: np.ndarray,
                down: np.ndarray) -> np.ndarray:
    """The routed experts, grouped by expert: each chosen expert runs once on the tokens that chose
    it (how the engines read each expert's weights once per batch).

    x (T, L) the experts' input (L: latent size or E); chosen, weights (T, k);
    up (X, F, L), down (X, L, F) -> (T, L) = sum over the k choices of weight * down(relu2(up x)).
    """
    out = np.zeros(x.shape, dtype=x.dtype)
    for e in np.unique(chosen):
        rows, slot = np.nonzero(chosen == e)
        y = mlp_relu2(x[rows], up[e], down[e])
        out[rows] += weights[rows, slot][:, None].astype(x.dtype) * y
    return out


# ---------------------------------------------------------------------------------------------
# Model


@dataclass
class ReferenceState:
    """What a sequence carries between calls; keys are layer indices.

    conv[i] (K-1, C) last pre-conv inputs and ssm[i] (H, P, N) at Mamba layers;
    k[i], v[i] (n_past, Hkv, d) at attention layers; n_past tokens seen so far.
    """

    conv: dict[int, np.ndarray] = field(default_factory=dict)
    ssm: dict[int, np.ndarray] = field(default_factory=dict)
    k: dict[int, np.ndarray] = field(default_factory=dict)
    v: dict[int, np.ndarray] = field(default_factory=dict)
    n_past: int = 0

    def copy(self) -> ReferenceState:
        """An independent snapshot (arrays copied)."""
        return copy.deepcopy(self)


class ReferenceModel:
    """nemotron_h forward over a `GGUFModel`, in float32 or float64.

    Weights are dequantized on first use and kept when `cache_weights` (default: when they fit in
    2 GiB as float32); otherwise dequantized at every use, so a large model runs slowly in little
    memory. `chunk_size` is the SSD chunk length used by prefill (`eval`, `logits`).
    """

    def __init__(self, model: GGUFModel, dtype=np.float32, chunk_size: int = 128,
                 cache_weights: bool | None = None):
        self.model, self.config = model, model.config
        self.dtype = np.dtype(dtype)
        self.chunk_size = chunk_size
        if cache_weights is None:
            n = sum(int(np.prod(t.shape)) for t in model.tensors.values())
            cache_weights = n * 4 <= 2 << 30
        self._cache: dict[str, np.ndarray] | None = {} if cache_weights else None

    # -- weights

    def w(self, name: str) -> np.ndarray:
        """Dequantized tensor `name` in the model dtype (numpy shape)."""
        if self._cache is not None and name in self._cache:
            return self._cache[name]
        arr = self.model.tensors[name].dequantize().astype(self.dtype)
        if self._cache is not None:
            self._cache[name] = arr
        return arr

    def _embed(self, ids: np.ndarray) -> np.ndarray:
        if self._cache is not None:
            return self.w("token_embd.weight")[ids]
        view: TensorView = self.model.tensors["token_embd.weight"]
        return np.stack([view.rows(i, i + 1).dequantize()[0] for i in ids]).astype(self.dtype)

    # -- state

    def new_state(self) -> ReferenceState:
        """Zero conv and SSM states, empty KV caches."""
        c, st = self.config, ReferenceState()
        for i, kind in enumerate(c.layer_kinds):
            for a in KINDS[kind].state:  # per-token arrays start empty: (0, ...)
                shape = ((0,) if a.per_token else ()) + a.shape(c.dims(i))
                getattr(st, a.name)[i] = np.zeros(shape, self.dtype)
        return st

    # -- public forward

    def eval(self, state: ReferenceState, token_ids, trace: dict | None = None) -> np.ndarray:
        """Prefill: run all tokens in one call (chunked scan), advance `state`; last logits (V,)."""
        h = self.forward(state, token_ids, recurrent=False, trace=trace)
        return linear(h[-1:], self.w("output.weight"))[0]

    def step(self, state: ReferenceState, token_id: int, trace: dict | None = None) -> np.ndarray:
        """Decode one token (one-step conv and recurrent scan), advance `state`; logits (V,)."""
        h = self.forward(state, [token_id], recurrent=True, trace=trace)
        return linear(h, self.w("output.weight"))[0]

    def logits(self, token_ids, trace: dict | None = None) -> np.ndarray:
        """Logits (T, V) of every position of `token_ids`, from a fresh state."""
        h = self.forward(self.new_state(), token_ids, recurrent=False, trace=trace)
        return linear(h, self.w("output.weight"))

    def forward(self, state: ReferenceState, token_ids, recurrent: bool = False,
                trace: dict | None = None) -> np.ndarray:
        """Final-normed hidden states (T, E); `trace` (a dict) collects named intermediates.

        Every layer: x = x + mixer(rmsnorm(x) * attn_norm), then rmsnorm(x) * output_norm.
        """
        ids = np.asarray(token_ids, dtype=np.int64).reshape(-1)
        if ids.size == 0:
            raise ValueError("no tokens to evaluate")
        if ids.min() < 0 or ids.max() >= self.config.n_vocab:
            raise ValueError(f"token ids must lie in [0, {self.config.n_vocab})")
        c = self.config
        x = self._embed(ids)  # (T, E)
        mixers = {"mamba": self._mamba, "attention": self._attention, "mlp": self._mlp,
                  "moe": self._moe}
        for i, kind in enumerate(c.layer_kinds):
            hn = rmsnorm(x, self.w(f"blk.{i}.attn_norm.weight"), c.eps)
            out = mixers[kind](i, hn, state, recurrent, trace)
            x = x + out
            if trace is not None:
                trace[f"blk.{i}.norm"], trace[f"blk.{i}.mixer"], trace[f"blk.{i}.out"] = hn, out, x
        state.n_past += ids.size
        return rmsnorm(x, self.w("output_norm.weight"), c.eps)

    # -- mixers: h (T, E) normed input -> (T, E)

    def _mamba(self, i: int, h: np.ndarray, st: ReferenceState, recurrent: bool,
               trace: dict | None) -> np.ndarray:
        """SPEC 1.2 steps 1-7."""
        c, p = self.config, f"blk.{i}."
        T, D, G, N, H, P = h.shape[0], c.ssm_d_inner, c.ssm_n_group, c.ssm_d_state, \
            c.ssm_n_head, c.ssm_head_dim
        # 1. in_proj, split z | xBC | dt
        zxbcdt = linear(h, self.w(p + "ssm_in.weight"))  # (T, 2D + 2GN + H)
        z, xbc, dt = np.split(zxbcdt, [D, D + c.ssm_conv_dim], axis=1)
        # 2. causal conv + bias, silu
        w_conv, b_conv = self.w(p + "ssm_conv1d.weight"), self.w(p + "ssm_conv1d.bias")
        if recurrent and T == 1:
            out, st.conv[i] = causal_conv_step(xbc[0], st.conv[i], w_conv, b_conv)
            xbc = out[None]
        else:
            xbc, st.conv[i] = causal_conv(xbc, st.conv[i], w_conv, b_conv)
        xbc = silu(xbc)
        # 3. split x (T, H, P), B and C (T, G, N)
        x = xbc[:, :D].reshape(T, H, P)
        B = xbc[:, D:D + G * N].reshape(T, G, N)
        C = xbc[:, D + G * N:].reshape(T, G, N)
        # 4. dt = softplus(dt + dt_bias), no clamp; A = -exp(A_log) is stored as is
        dt = softplus(dt + self.w(p + "ssm_dt.bias"))  # (T, H)
        A, Dskip = self.w(p + "ssm_a").reshape(H), self.w(p + "ssm_d").reshape(H)
        # 5. scan
        if recurrent:
            y, st.ssm[i] = ssm_scan_recurrent(st.ssm[i], x, dt, A, B, C, Dskip)
        else:
            y, st.ssm[i] = ssm_scan_chunked(st.ssm[i], x, dt, A, B, C, Dskip, self.chunk_size)
        if trace is not None:
            trace[f"blk.{i}.ssm_dt"], trace[f"blk.{i}.ssm_y"] = dt, y
        # 6. gate, then grouped RMSNorm
        y = gated_group_rmsnorm(y.reshape(T, D), z, self.w(p + "ssm_norm.weight").reshape(D),
                                G, c.eps)
        # 7. out_proj
        return linear(y, self.w(p + "ssm_out.weight"))

    def _attention(self, i: int, h: np.ndarray, st: ReferenceState, recurrent: bool,
                   trace: dict | None) -> np.ndarray:
        c, p, T = self.config, f"blk.{i}.", h.shape[0]
        q = linear(h, self.w(p + "attn_q.weight")).reshape(T, c.n_head, c.head_dim)
        k = linear(h, self.w(p + "attn_k.weight")).reshape(T, c.n_head_kv[i], c.head_dim)
        v = linear(h, self.w(p + "attn_v.weight")).reshape(T, c.n_head_kv[i], c.head_dim)
        st.k[i] = np.concatenate([st.k[i], k], axis=0)
        st.v[i] = np.concatenate([st.v[i], v], axis=0)
        o = attention(q, st.k[i], st.v[i], st.n_past)  # (T, Hq * d)
        return linear(o, self.w(p + "attn_output.weight"))

    def _mlp(self, i: int, h: np.ndarray, st: ReferenceState, recurrent: bool,
             trace: dict | None) -> np.ndarray:
        p = f"blk.{i}."
        return mlp_relu2(h, self.w(p + "ffn_up.weight"), self.w(p + "ffn_down.weight"))

    def _moe(self, i: int, h: np.ndarray, st: ReferenceState, recurrent: bool,
             trace: dict | None) -> np.ndarray:
        """SPEC 1.4: routed experts (through the latent space when the layer has one) plus the
        shared expert, both on the normed input."""
        c, p = self.config, f"blk.{i}."
        chosen, weights = moe_route(h, self.w(p + "ffn_gate_inp.weight"),
                                    self.w(p + "exp_probs_b.bias"), c.n_expert_used,
                                    c.expert_weights_norm, c.expert_scale)
        x = linear(h, self.w(p + "ffn_latent_down.weight")) if c.moe_latent else h
        y = moe_experts(x, chosen, weights, self.w(p + "ffn_up_exps.weight"),
                        self.w(p + "ffn_down_exps.weight"))
        if c.moe_latent:
            y = linear(y, self.w(p + "ffn_latent_up.weight"))
        if trace is not None:
            trace[f"blk.{i}.moe_chosen"], trace[f"blk.{i}.moe_weights"] = chosen, weights
        return y + mlp_relu2(h, self.w(p + "ffn_up_shexp.weight"),
                             self.w(p + "ffn_down_shexp.weight"))
