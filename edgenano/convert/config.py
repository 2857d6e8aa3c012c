"""Read a Nemotron-H `config.json` in every spelling that has shipped (SPEC section 1).

Legacy `hybrid_override_pattern` strings and transformers>=5 `layers_block_type` lists both map to
one typed `HybridConfig`; anything llama.cpp's `nemotron_h` cannot represent is refused clearly.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, replace
from pathlib import Path

from ..layers import BY_LETTER, BY_WORD, KINDS, MTP_PATTERN, Dims
from .errors import ConversionError

ARCHITECTURES = {"NemotronHForCausalLM"}
MODEL_TYPES = {"nemotron_h"}

# One character per layer in the legacy string, one word per layer in the list spelling.
SPELLINGS = {"layers_block_type": BY_WORD, "hybrid_override_pattern": BY_LETTER}

# Canonical key -> every spelling that has shipped (first found wins); transformers' own aliases.
ALIASES = {
    "n_groups": ("n_groups", "mamba_n_groups"),
    "conv_kernel": ("conv_kernel", "mamba_d_conv"),
    "expand": ("expand", "mamba_expand"),
    "time_step_limit": ("time_step_limit", "mamba_dt_limit"),
    "use_conv_bias": ("use_conv_bias", "mamba_conv_bias"),
    "chunk_size": ("chunk_size", "mamba_chunk_size"),
}

# transformers' NemotronHConfig defaults for keys a config.json may leave out. Shapes derived from
# them are checked against the tensors, so a wrong default fails loudly rather than silently.
DEFAULTS = {
    "num_attention_heads": 32, "head_dim": 128, "intermediate_size": 21504,
    "mamba_num_heads": 128, "mamba_head_dim": 64, "ssm_state_size": 128, "n_groups": 8,
    "conv_kernel": 4, "use_conv_bias": True, "chunk_size": 128, "layer_norm_epsilon": 1e-5,
    "max_position_embeddings": 4096, "tie_word_embeddings": False,
    "time_step_limit": (0.0, math.inf), "mlp_hidden_act": "relu2", "mamba_hidden_act": "silu",
    "num_nextn_predict_layers": 0,
    # MoE (read only when the layer list has `E` layers; transformers' config object carries
    # these defaults for every model, dense ones included)
    "n_routed_experts": 8, "num_experts_per_tok": 2, "moe_intermediate_size": 7688,
    "moe_shared_expert_intermediate_size": 7688, "n_shared_experts": 1, "moe_latent_size": None,
    "routed_scaling_factor": 1.0, "norm_topk_prob": True, "n_group": 1, "topk_group": 1,
}

# Options whose non-default value changes the math in a way the nemotron_h layout cannot carry.
MUST_EQUAL = {
    "mlp_hidden_act": "relu2", "mamba_hidden_act": "silu", "attention_bias": False,
    "mlp_bias": False, "use_bias": False, "mamba_proj_bias": False,
}

# An upper dt limit at least this large is a stand-in for infinity (no clamp): values near
# float32's range end are how some tools serialize inf.
DT_LIMIT_AS_INFINITY = 1e30


@dataclass(frozen=True)
class HybridConfig:
    """Everything the converter needs from config.json, with the layer kinds spelled out."""

    layer_kinds: tuple[str, ...]  # a supported kind of edgenano.layers, one per layer
    n_vocab: int
    n_embd: int
    n_ff: int  # MLP intermediate size
    n_head: int
    n_head_kv: int
    head_dim: int
    ssm_n_heads: int  # H, also llama.cpp's time_step_rank
    ssm_head_dim: int  # P
    ssm_d_state: int  # N
    ssm_n_group: int  # G
    ssm_d_conv: int  # K
    eps: float
    n_ctx_train: int
    tie_embeddings: bool
    use_conv_bias: bool
    # Mixture of experts (zeros for a dense model): SPEC section 1.4
    n_expert: int = 0  # routed experts
    n_expert_used: int = 0  # top-k
    n_ff_exp: int = 0  # routed expert width
    n_ff_shexp: int = 0  # shared expert width
    n_expert_shared: int = 0
    moe_latent: int = 0  # 0: no latent projections
    expert_weights_norm: bool = False
    expert_weights_scale: float = 1.0
    n_nextn: int = 0  # MTP blocks (mtp.*) to write after the layers (edgenano.layers.MTP_BLOCK)
    mtp_kinds: tuple[str, ...] = ()  # the MTP sub-layers' kinds (mtp_layers_block_type)

    @property
    def is_moe(self) -> bool:
        return "moe" in self.layer_kinds

    @property
    def n_layer(self) -> int:
        return len(self.layer_kinds)

    @property
    def ssm_d_inner(self) -> int:
        """D = heads * head_dim (never expand * hidden)."""
        return self.ssm_n_heads * self.ssm_head_dim

    @property
    def ssm_conv_dim(self) -> int:
        """Channels of the depthwise conv: x, B and C."""
        return self.ssm_d_inner + 2 * self.ssm_n_group * self.ssm_d_state

    @property
    def ssm_in_dim(self) -> int:
        """in_proj width: z | xBC | dt."""
        return 2 * self.ssm_d_inner + 2 * self.ssm_n_group * self.ssm_d_state + self.ssm_n_heads

    def dims(self, i: int = 0) -> Dims:
        """The dimensions the layer table's shapes read at layer i: the same at every layer but
        n_ff, the routed experts' width at MoE layers (llama.cpp's feed_forward_length)."""
        moe = i >= self.n_layer or self.layer_kinds[i] == "moe"  # past the layers: MTP block
        return Dims(n_vocab=self.n_vocab, n_embd=self.n_embd, n_head=self.n_head,
                    n_head_kv=self.n_head_kv, head_dim=self.head_dim,
                    n_ff=self.n_ff_exp if moe else self.n_ff,
                    ssm_n_head=self.ssm_n_heads, ssm_d_inner=self.ssm_d_inner,
                    ssm_n_group=self.ssm_n_group, ssm_d_state=self.ssm_d_state,
                    ssm_d_conv=self.ssm_d_conv, n_expert=self.n_expert,
                    n_ff_shexp=self.n_ff_shexp, moe_latent=self.moe_latent)


def read_config_json(hf_dir: str | Path) -> dict:
    """The raw `hf_dir/config.json` dict; ConversionError when missing or unreadable."""
    path = Path(hf_dir) / "config.json"
    if not path.is_file():
        raise ConversionError(f"{path} not found: is {hf_dir} a Hugging Face checkpoint directory?")
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ConversionError(f"cannot read {path}: {e}") from e
    if not isinstance(raw, dict):
        raise ConversionError(f"{path} does not hold a JSON object")
    return raw


def load_config(hf_dir: str | Path) -> HybridConfig:
    """Parse `hf_dir/config.json`; ConversionError on a missing file or an unsupported model."""
    return parse_config(read_config_json(hf_dir), source=str(Path(hf_dir) / "config.json"))


def parse_config(raw: dict, source: str = "config.json") -> HybridConfig:
    """The typed config of a raw config.json dict."""
    _check_architecture(raw, source)
    cfg = {**DEFAULTS, **_canonical(raw)}
    for key, want in MUST_EQUAL.items():
        if key in cfg and cfg[key] != want:
            raise ConversionError(
                f"{source}: {key} = {cfg[key]!r} is not supported (nemotron_h needs {want!r})")
    _check_time_step_limit(cfg["time_step_limit"], source)
    for key in ("hidden_size", "vocab_size"):
        if key not in cfg:
            raise ConversionError(f"{source}: required key {key!r} is missing")
    n_head = int(cfg["num_attention_heads"])
    kinds = layer_kinds(raw, source)
    hc = HybridConfig(
        layer_kinds=kinds,
        n_vocab=int(cfg["vocab_size"]), n_embd=int(cfg["hidden_size"]),
        n_ff=int(cfg["intermediate_size"]), n_head=n_head,
        n_head_kv=int(cfg.get("num_key_value_heads") or n_head), head_dim=int(cfg["head_dim"]),
        ssm_n_heads=int(cfg["mamba_num_heads"]), ssm_head_dim=int(cfg["mamba_head_dim"]),
        ssm_d_state=int(cfg["ssm_state_size"]), ssm_n_group=int(cfg["n_groups"]),
        ssm_d_conv=int(cfg["conv_kernel"]), eps=float(cfg["layer_norm_epsilon"]),
        n_ctx_train=int(cfg["max_position_embeddings"]),
        tie_embeddings=bool(cfg["tie_word_embeddings"]), use_conv_bias=bool(cfg["use_conv_bias"]),
        **(_moe_fields(cfg, kinds, source) if "moe" in kinds else {}),
    )
    if not hc.is_moe and cfg["num_nextn_predict_layers"]:
        raise ConversionError(f"{source}: num_nextn_predict_layers = "
                              f"{cfg['num_nextn_predict_layers']!r}: MTP layers come only with "
                              "mixture-of-experts models (nemotron_h_moe)")
    _check_divisibility(hc, source)
    return hc


def _moe_fields(cfg: dict, kinds: tuple[str, ...], source: str) -> dict:
    """The MoE fields of a config with `E` layers, refusing what llama.cpp's nemotron_h_moe cannot
    represent: dense MLP layers beside expert layers (its loader reads every feed-forward layer of
    such a file as experts) and group-limited routing (it would need expert_group_used_count)."""
    if "mlp" in kinds:
        i = kinds.index("mlp")
        raise ConversionError(f"{source}: layer {i} is a dense MLP in a mixture-of-experts model; "
                              "llama.cpp's nemotron_h_moe reads every feed-forward layer as "
                              "experts, so such a mix cannot be converted")
    n_expert, k = int(cfg["n_routed_experts"]), int(cfg["num_experts_per_tok"])
    if not 1 <= k <= n_expert or n_expert < 2:
        raise ConversionError(f"{source}: num_experts_per_tok {k} must lie in [1, "
                              f"n_routed_experts {n_expert}] with at least 2 experts")
    n_group, topk_group = int(cfg["n_group"] or 1), int(cfg["topk_group"] or 1)
    if n_group > 1 and topk_group < n_group:
        raise ConversionError(f"{source}: group-limited routing (n_group {n_group}, topk_group "
                              f"{topk_group}) is not supported; only n_group 1 is")
    latent = cfg["moe_latent_size"]
    return dict(
        n_expert=n_expert, n_expert_used=k, n_ff_exp=int(cfg["moe_intermediate_size"]),
        n_ff_shexp=int(cfg["moe_shared_expert_intermediate_size"]),
        n_expert_shared=int(cfg["n_shared_experts"]), moe_latent=int(latent or 0),
        expert_weights_norm=bool(cfg["norm_topk_prob"]),
        expert_weights_scale=float(cfg["routed_scaling_factor"]),
        n_nextn=int(cfg["num_nextn_predict_layers"] or 0),
        mtp_kinds=_mtp_kinds(cfg, source),
    )


def _mtp_kinds(cfg: dict, source: str) -> tuple[str, ...]:
    """The MTP sub-layers' kinds, in either spelling (transformers' default: attention, moe)."""
    if not cfg["num_nextn_predict_layers"]:
        return ()
    for key, table in (("mtp_layers_block_type", BY_WORD),
                       ("mtp_hybrid_override_pattern", BY_LETTER)):
        seq = cfg.get(key)
        if seq is not None:
            try:
                return tuple(table[item] for item in seq)
            except KeyError as e:
                raise ConversionError(f"{source}: {key} has unknown type {e.args[0]!r}") from None
    return MTP_PATTERN


def _canonical(raw: dict) -> dict:
    """raw with every aliased key stored under its canonical name."""
    out = dict(raw)
    for canon, spellings in ALIASES.items():
        for key in spellings:
            if key in raw:
                out[canon] = raw[key]
                break
    return out


def _check_architecture(raw: dict, source: str) -> None:
    archs = set(raw.get("architectures") or [])
    mtype = raw.get("model_type")
    if archs & ARCHITECTURES or (not archs and mtype in MODEL_TYPES):
        return
    found = ", ".join(sorted(archs)) or "none listed"
    raise ConversionError(
        f"{source}: unsupported architecture ({found}; model_type {mtype!r}): edgenano converts "
        "only NemotronHForCausalLM checkpoints (model_type nemotron_h)")


def layer_kinds(raw: dict, source: str = "config.json") -> tuple[str, ...]:
    """Per-layer kinds from `layers_block_type` (list) or `hybrid_override_pattern` (string)."""
    spelling = next((k for k in SPELLINGS if raw.get(k) is not None), None)
    if spelling is None:
        raise ConversionError(
            f"{source}: no layer pattern (neither layers_block_type nor hybrid_override_pattern)")
    seq, table = raw[spelling], SPELLINGS[spelling]
    kinds = []
    for i, item in enumerate(seq):
        kind = table.get(item)
        if kind is None:
            raise ConversionError(
                f"{source}: layer {i} has unknown type {item!r} in {spelling} "
                f"(known: {', '.join(repr(k) for k in table)})")
        if not KINDS[kind].supported:
            raise ConversionError(
                f"{source}: layer {i} is of kind {kind} ({item!r} in {spelling}), which is not "
                "supported yet")
        kinds.append(kind)
    if not kinds:
        raise ConversionError(f"{source}: {spelling} is empty")
    return tuple(kinds)


def _as_float(v) -> float:
    """A float from a JSON number, "Infinity"-style string or transformers' {"__float__": ...}."""
    if isinstance(v, dict) and "__float__" in v:
        v = v["__float__"]
    return float(v)


def _check_time_step_limit(limit, source: str) -> None:
    """llama.cpp never clamps dt, so only (<=0, ~inf) limits are representable."""
    try:
        lo, hi = (_as_float(v) for v in limit)
    except (TypeError, ValueError) as e:
        raise ConversionError(f"{source}: cannot read time_step_limit {limit!r}") from e
    if lo > 0.0 or hi < DT_LIMIT_AS_INFINITY:
        raise ConversionError(
            f"{source}: time_step_limit ({lo}, {hi}) clamps dt, but llama.cpp's nemotron_h never "
            "clamps it; only (0, inf) can be converted faithfully")


def _check_divisibility(c: HybridConfig, source: str) -> None:
    checks = [
        ("mamba" in c.layer_kinds and c.ssm_n_heads % c.ssm_n_group != 0,
         f"mamba_num_heads {c.ssm_n_heads} is not a multiple of n_groups {c.ssm_n_group}"),
        ("attention" in c.layer_kinds and (c.n_head_kv <= 0 or c.n_head % c.n_head_kv != 0),
         f"num_attention_heads {c.n_head} is not a multiple of num_key_value_heads {c.n_head_kv}"),
    ]
    for bad, what in checks:
        if bad:
            raise ConversionError(f"{source}: {what}")


# What to do with a checkpoint's MTP draft head, as llama.cpp's converter: keep it after the
# layers (its default), drop it (--no-mtp), or write only it and the tensors it shares with the
# model (--mtp: a separate draft file for speculative decoding).
MTP_MODES = ("keep", "drop", "only")


def with_mtp(c: HybridConfig, mode: str, source: str = "config.json") -> HybridConfig:
    """`c` with n_nextn set to the MTP blocks the output will hold under `mode`."""
    if mode not in MTP_MODES:
        raise ConversionError(f"unknown MTP mode {mode!r}; choose one of {', '.join(MTP_MODES)}")
    if mode == "drop" or (mode == "keep" and not c.n_nextn):
        return replace(c, n_nextn=0)
    if not c.n_nextn:
        raise ConversionError(f"{source}: --mtp asks for the MTP draft head only, but this model "
                              "has none (num_nextn_predict_layers is 0)")
    if c.n_nextn != 1 or c.mtp_kinds != MTP_PATTERN:
        raise ConversionError(
            f"{source}: an MTP head of {c.n_nextn} layer(s) of kinds {list(c.mtp_kinds)} cannot "
            "be written as llama.cpp's nemotron_h_moe (one block of attention then experts); "
            "convert with --no-mtp to leave it out")
    return c
