"""A dry run of a Nemotron-H config without its weights: parameters (total and per token), the
GGUF's size for every output type, and a session's memory at given contexts. Defaults to the
published Nemotron 3 Nano 30B-A3B config (SPEC section 1.4).

    python bench/moe_dry_run.py                 # Nemotron 3 Nano 30B-A3B
    python bench/moe_dry_run.py config.json     # any config.json
"""

from __future__ import annotations

import argparse
import json
import math

from edgenano.convert.config import parse_config
from edgenano.convert.presets import OUTTYPES, assign_types, row_bytes
from edgenano.convert.tensors import TensorSpec, expected_rows, gguf_name
from edgenano.info import session_bytes
from edgenano.layers import MATRIX, pattern

# Nemotron 3 Nano 30B-A3B as published (SPEC section 1.4).
NANO_30B_A3B = dict(
    architectures=["NemotronHForCausalLM"], model_type="nemotron_h",
    hybrid_override_pattern="MEMEM*EMEMEM*EMEMEM*EMEMEM*EMEMEM*EMEMEMEM*EMEMEMEME",
    vocab_size=131072, hidden_size=2688, num_attention_heads=32, num_key_value_heads=2,
    head_dim=128, mamba_num_heads=64, mamba_head_dim=64, n_groups=8, ssm_state_size=128,
    conv_kernel=4, n_routed_experts=128, num_experts_per_tok=6, moe_intermediate_size=1856,
    moe_shared_expert_intermediate_size=3712, n_shared_experts=1, routed_scaling_factor=2.5,
    norm_topk_prob=True, n_group=1, topk_group=1, max_position_embeddings=262144,
    tie_word_embeddings=False, layer_norm_epsilon=1e-5, time_step_limit=[0.0, float("inf")],
)


def specs(raw: dict):
    c = parse_config(raw)
    out = []
    for layer, t in expected_rows(c, has_output=not c.tie_embeddings):
        d = c.dims(max(layer, 0))
        out.append(TensorSpec(gguf_name(layer, t), t.hf, t.shape(d), t.transform,
                              t.rule == MATRIX, layer, d.n_expert if t.experts else 0))
    return c, out


def dry_run(raw: dict, contexts=(131072, 262144)) -> str:
    c, ss = specs(raw)
    n = {s.name: math.prod(s.shape) for s in ss}
    total = sum(n.values())
    routed = sum(v for k, v in n.items() if k.endswith("_exps.weight"))
    per_token = total - routed + (routed * c.n_expert_used // c.n_expert if c.n_expert else 0)
    emb = n["token_embd.weight"]
    lines = [f"{c.n_layer} layers {pattern(c.layer_kinds)}",
             f"parameters {total / 1e9:.2f} B, routed experts {routed / 1e9:.2f} B, per token "
             f"{per_token / 1e9:.2f} B ({(per_token - emb) / 1e9:.2f} B without the embedding "
             f"table, of which a token reads one row)"]
    for name, out in OUTTYPES.items():
        types = assign_types(ss, out, c.n_layer + c.n_nextn, c.n_expert)
        size = sum(math.prod(s.shape[:-1]) * row_bytes(t, s.shape[-1])
                   for s, t in zip(ss, types, strict=True))
        active = sum(math.prod(s.shape[:-1]) * row_bytes(t, s.shape[-1])
                     * (c.n_expert_used / s.experts if s.experts else 1)
                     for s, t in zip(ss, types, strict=True) if s.name != "token_embd.weight")
        lines.append(f"  {name:7s} file {size / 2**30:6.2f} GiB, weights a decoded token reads "
                     f"{active / 2**30:5.2f} GiB")
    for ctx in contexts:
        for kv in ("f16", "q8_0"):
            mem = session_bytes(c, ctx, kv)
            lines.append(f"  session @ {ctx} tokens, KV {kv}: {sum(mem.values()) / 2**30:.2f} GiB"
                         f" (" + ", ".join(f"{k} {v / 2**20:.1f} MiB" for k, v in mem.items())
                         + ")")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("config", nargs="?", help="config.json (default: Nemotron 3 Nano 30B-A3B)")
    a = ap.parse_args()
    raw = json.loads(open(a.config).read()) if a.config else NANO_30B_A3B
    print(dry_run(raw))


if __name__ == "__main__":
    main()
