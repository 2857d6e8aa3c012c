"""`edgenano info`: what a GGUF holds and what a session of it costs in memory."""

from __future__ import annotations

import argparse
import math
from collections import Counter

from .layers import KINDS, pattern

KV_BYTES = {"f16": 2.0, "q8_0": 34 / 32, "f32": 4.0}  # bytes per cached element


def session_bytes(cfg, n_ctx: int, kv_type: str = "f16") -> dict[str, int]:
    """Memory one sequence needs, from the layer table's state arrays: the recurrent state of
    every Mamba layer (f32) and the KV cache of every attention layer at n_ctx tokens (SPEC
    section 1.3). Keys: `<name>_state` per recurrent array, `kv_cache` for the per-token ones."""
    fixed = {f"{st.name}_state": 0 for k in KINDS.values() for st in k.state if not st.per_token}
    per_token = 0
    for i, kind in enumerate(cfg.layer_kinds):
        for st in KINDS[kind].state:
            n = math.prod(st.shape(cfg.dims(i)))
            if st.per_token:
                per_token += n
            else:
                fixed[f"{st.name}_state"] += n * 4
    return {**fixed, "kv_cache": int(per_token * KV_BYTES[kv_type] * n_ctx)}


def _human(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
    raise AssertionError


def describe(path: str, n_ctx: int | None = None, kv_type: str = "f16",
             tensors: bool = False) -> str:
    from .gguf_model import load_gguf

    m = load_gguf(path)
    cfg = m.config
    n_ctx = n_ctx or cfg.n_ctx_train
    kinds = Counter(cfg.layer_kinds)
    weights = sum(t.nbytes for t in m.tensors.values())
    params = sum(int(_prod(t.ne)) for t in m.tensors.values())
    by_type: Counter = Counter()
    for t in m.tensors.values():
        by_type[t.type.name] += t.nbytes
    moe = f", {kinds['moe']} MoE" if kinds["moe"] else ""
    lines = [
        f"file          {path}",
        f"architecture  {cfg.arch}, {cfg.n_layer} layers: {kinds['mamba']} Mamba-2, "
        f"{kinds['mlp']} MLP{moe}, {kinds['attention']} attention",
        f"pattern       {pattern(cfg.layer_kinds)}",
        f"hidden        {cfg.n_embd}, vocab {cfg.n_vocab}, context (trained) {cfg.n_ctx_train}",
        f"mamba         {cfg.ssm_n_head} heads x {cfg.ssm_head_dim}, state {cfg.ssm_d_state}, "
        f"groups {cfg.ssm_n_group}, conv {cfg.ssm_d_conv}",
        f"attention     {cfg.n_head} query heads, {max(cfg.n_head_kv)} KV heads x {cfg.head_dim}",
        f"parameters    {params / 1e6:.2f} M, weights {_human(weights)}",
        *_moe_lines(m, params, weights),
        "tensor types  " + ", ".join(f"{k} {_human(v)}" for k, v in by_type.most_common()),
    ]
    mem = session_bytes(cfg, n_ctx, kv_type)
    total = sum(mem.values())
    lines.append(f"session @ {n_ctx} tokens (KV {kv_type}): {_human(total)} = "
                 + ", ".join(f"{k} {_human(v)}" for k, v in mem.items()))
    if tensors:
        lines.append("")
        for t in m.tensors.values():
            ne = str(list(t.ne))
            lines.append(f"  {t.name:<32} {t.type.name:<6} {ne:<20} {_human(t.nbytes)}")
    return "\n".join(lines)


def active(m) -> tuple[int, int]:
    """Parameters and weight bytes one token reads: everything but the routed experts it does
    not choose (k of X at each MoE layer)."""
    cfg = m.config
    params = sum(_prod(t.ne) for t in m.tensors.values())
    nbytes = sum(t.nbytes for t in m.tensors.values())
    if not cfg.n_expert:
        return params, nbytes
    skip = 1 - cfg.n_expert_used / cfg.n_expert
    for t in m.tensors.values():
        if t.name.endswith(("_exps.weight",)):
            params -= int(_prod(t.ne) * skip)
            nbytes -= int(t.nbytes * skip)
    return params, nbytes


def _moe_lines(m, params: int, weights: int) -> list[str]:
    cfg = m.config
    if not cfg.n_expert:
        return []
    width = next(cfg.n_ff[i] for i, k in enumerate(cfg.layer_kinds) if k == "moe")
    latent = f", latent {cfg.moe_latent}" if cfg.moe_latent else ""
    a_params, a_bytes = active(m)
    return [
        f"experts       {cfg.n_expert} routed x {width} wide, top-{cfg.n_expert_used}, "
        f"{cfg.n_expert_shared} shared x {cfg.n_ff_shexp}{latent}; weights "
        f"{'normalised, ' if cfg.expert_weights_norm else ''}scaled {cfg.expert_scale:g}",
        f"active        {a_params / 1e6:.2f} M parameters per token "
        f"({100 * a_params / params:.1f}%), {_human(a_bytes)} of weights read per decoded token",
    ] + ([f"draft head    {cfg.n_nextn} MTP block(s) after the layers, for llama.cpp's "
          "speculative decoding (not counted above; edgenano does not run them)"]
         if cfg.n_nextn else [])


def _prod(xs) -> int:
    out = 1
    for x in xs:
        out *= int(x)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="edgenano info", description=__doc__.split("\n")[0])
    p.add_argument("model", nargs="?", help="GGUF file (default: the built-in tiny reasoner)")
    p.add_argument("--ctx", type=int, default=None,
                   help="context length for the session-memory estimate (default: trained)")
    p.add_argument("--kv-type", choices=sorted(KV_BYTES), default="f16",
                   help="KV cache element type for the estimate (default f16)")
    p.add_argument("--tensors", action="store_true", help="list every tensor")
    a = p.parse_args(argv)
    from .gguf_model import GGUFError

    path = a.model
    if path is None:
        from .models import default_model_path

        path = str(default_model_path())
    try:
        print(describe(path, a.ctx, a.kv_type, a.tensors))
    except (GGUFError, FileNotFoundError) as e:
        p.exit(2, f"edgenano info: error: {e}\n")
    return 0
