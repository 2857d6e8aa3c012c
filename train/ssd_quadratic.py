"""A faster drop-in for transformers' pure-PyTorch Mamba-2 chunked scan, for training only.

For the short sequences of the tiny reasoner (<= ~250 tokens) the whole sequence is one chunk:
SSD's quadratic ("attention-like") form, y = (C B^T * L) (dt x) + D x with
L[t, s] = exp(sum_{s<r<=t} dt_r A) for s <= t, computed with batched matmuls. Same math, same
dt handling (softplus, clamp to dt_limit) as `mamba2_chunk_scan`; prefill with a cache or initial
states still goes through the original.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from transformers.models.nemotron_h import modeling_nemotron_h as mod

_original = mod.mamba2_chunk_scan


def quadratic_scan(hidden_states, dt, A, B, C, chunk_size, D=None, dt_bias=None,
                   initial_states=None, dt_softplus=False, dt_limit=(0.0, float("inf")),
                   return_final_states=False, **kwargs):
    if initial_states is not None or return_final_states:
        return _original(hidden_states, dt, A, B, C, chunk_size, D=D, dt_bias=dt_bias,
                         initial_states=initial_states, dt_softplus=dt_softplus,
                         dt_limit=dt_limit, return_final_states=return_final_states, **kwargs)
    b, t, h, p = hidden_states.shape       # x: (b, t, h, p)
    g = B.shape[2]                         # B, C: (b, t, g, n)
    if dt_bias is not None:
        dt = dt + dt_bias.to(dt.dtype)
    if dt_softplus:
        dt = F.softplus(dt)
    dt = torch.clamp(dt, min=dt_limit[0], max=dt_limit[1]).float()   # (b, t, h)
    x = hidden_states.float()
    cs = torch.cumsum(dt * A.float(), dim=1).transpose(1, 2)          # (b, h, t)
    causal = torch.ones(t, t, dtype=torch.bool, device=x.device).tril()
    seg = (cs[..., :, None] - cs[..., None, :]).masked_fill(~causal, float("-inf"))
    decay = torch.exp(seg)                                            # (b, h, t, s)
    cb = torch.einsum("btgn,bsgn->bgts", C.float(), B.float())        # (b, g, t, s)
    m = cb.repeat_interleave(h // g, dim=1) * decay                   # (b, h, t, s)
    y = m @ (x * dt[..., None]).transpose(1, 2)                       # (b, h, t, p)
    y = y.transpose(1, 2)                                             # (b, t, h, p)
    if D is not None:
        y = y + D.float()[:, None] * x
    return y


def install() -> None:
    """Route transformers' NemotronH mixer to the quadratic scan (training only)."""
    mod.mamba2_chunk_scan = quadratic_scan
