"""`edgenano info`: what a GGUF holds and what a session of it costs in memory."""

from __future__ import annotations

import argparse
from collections import Counter

KV_BYTES = {"f16": 2.0, "q8_0": 34 / 32, "f32": 4.0}  # bytes per cached element
_PATTERN = {"mamba": "M", "attention": "*", "mlp": "-"}


def session_bytes(cfg, n_ctx: int, kv_type: str = "f16") -> dict[str, int]:
    """Memory one sequence needs: recurrent state of every Mamba layer (f32) and the KV cache of
    every attention layer at n_ctx tokens (SPEC section 1.3)."""
    n_mamba = cfg.layer_kinds.count("mamba")
    conv = (cfg.ssm_d_conv - 1) * cfg.ssm_conv_dim * 4
    ssm = cfg.ssm_n_head * cfg.ssm_head_dim * cfg.ssm_d_state * 4
    kv_per_token = sum(2 * h * cfg.head_dim for h in cfg.n_head_kv) * KV_BYTES[kv_type]
    return {"conv_state": n_mamba * conv, "ssm_state": n_mamba * ssm,
            "kv_cache": int(kv_per_token * n_ctx)}


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
    lines = [
        f"file          {path}",
        f"architecture  nemotron_h, {cfg.n_layer} layers: {kinds['mamba']} Mamba-2, "
        f"{kinds['mlp']} MLP, {kinds['attention']} attention",
        f"pattern       {''.join(_PATTERN[k] for k in cfg.layer_kinds)}",
        f"hidden        {cfg.n_embd}, vocab {cfg.n_vocab}, context (trained) {cfg.n_ctx_train}",
        f"mamba         {cfg.ssm_n_head} heads x {cfg.ssm_head_dim}, state {cfg.ssm_d_state}, "
        f"groups {cfg.ssm_n_group}, conv {cfg.ssm_d_conv}",
        f"attention     {cfg.n_head} query heads, {max(cfg.n_head_kv)} KV heads x {cfg.head_dim}",
        f"parameters    {params / 1e6:.2f} M, weights {_human(weights)}",
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
