"""Tiny Nemotron-H checkpoints and vocabularies, built locally (tests, training the built-in
model); development only, not in the wheel.

A tekken-style byte-level BPE (SPEC section 3) with Nemotron's special tokens, our chat template,
and random `NemotronHForCausalLM` weights written as a complete Hugging Face checkpoint directory.
torch and transformers are imported lazily: only `make_checkpoint` and `load_hf` need them.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

from edgenano.models import chat_template
from edgenano.tokenizer import TEKKEN_REGEX

# ids 0..15 are control tokens as in 9B-v2: <unk>, <s>, </s>, then <SPECIAL_n>.
SPECIAL_TOKENS = ["<unk>", "<s>", "</s>"] + [f"<SPECIAL_{i}>" for i in range(3, 16)]
BOS_ID, EOS_ID, PAD_ID = 1, 12, 0  # eos is <SPECIAL_12>, as in 9B-v2's config

# Text that gives the BPE merges something to learn beyond bytes; any corpus works.
DEFAULT_CORPUS = [
    "The quick brown fox jumps over the lazy dog. Numbers 0123456789 and 3.14159!",
    "Sum the digits: 12 + 34 = 46. Carry the one. Subtract 57 - 29 = 28.",
    "Résumé, naïve café, Größe, Ελληνικά, русский текст, 日本語のテキスト, 中文文本.",
    "Let's think step by step.\n\nFirst, count the letters.\nThen answer.",
    "<think>\nreasoning goes here\n</think>\n\nThe answer is 42.",
    "System\nUser\nAssistant\n<TOOLCALL>[]</TOOLCALL> <TOOL_RESPONSE>[]</TOOL_RESPONSE>",
    "    indented code(x, y) {\n\treturn x * y;\n}\n",
    "emoji 🙂👍🏽 and symbols ©®™ ← → ∑ √",
]


def build_tokenizer(corpus: Iterable[str] = DEFAULT_CORPUS, vocab_size: int = 512):
    """A byte-level BPE trained on `corpus` with the tekken pre-tokenizer and ignore_merges."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE(ignore_merges=True))
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(TEKKEN_REGEX), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(list(corpus), trainer=trainer)
    assert tok.token_to_id("<SPECIAL_12>") == EOS_ID
    return tok


def save_tokenizer(tok, out_dir: Path, template: str | None = None) -> None:
    """tokenizer.json + tokenizer_config.json (with the chat template) + special_tokens_map.json."""
    out_dir = Path(out_dir)
    tok.save(str(out_dir / "tokenizer.json"))
    added = {
        str(i): {"content": t, "special": True, "lstrip": False, "rstrip": False,
                 "normalized": False, "single_word": False}
        for i, t in enumerate(SPECIAL_TOKENS)
    }
    cfg = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": "<s>",
        "eos_token": "<SPECIAL_12>",
        "unk_token": "<unk>",
        "pad_token": "<unk>",
        "add_bos_token": False,
        "add_eos_token": False,
        "clean_up_tokenization_spaces": False,
        "model_max_length": 131072,
        "added_tokens_decoder": added,
        "chat_template": template if template is not None else chat_template(),
    }
    (out_dir / "tokenizer_config.json").write_text(json.dumps(cfg, indent=2, ensure_ascii=False))
    smap = {"bos_token": "<s>", "eos_token": "<SPECIAL_12>", "unk_token": "<unk>",
            "pad_token": "<unk>"}
    (out_dir / "special_tokens_map.json").write_text(json.dumps(smap, indent=2))


# Small configs that differ the way the real models do (SPEC section 1): n_groups 1 and > 1,
# an attention layer first, q width != hidden, d_inner != 2 * hidden, head widths multiples of 32.
TINY_CONFIGS: dict[str, dict] = {
    "mix": dict(
        hybrid_override_pattern="M-M*-M-",
        hidden_size=64, intermediate_size=96,
        num_attention_heads=4, num_key_value_heads=2, head_dim=32,  # q width 128 != hidden
        mamba_num_heads=8, mamba_head_dim=16, n_groups=2, ssm_state_size=16,  # d_inner 128 = 2h
        conv_kernel=4, chunk_size=8,
    ),
    "attn_first": dict(
        hybrid_override_pattern="*M-M",
        hidden_size=96, intermediate_size=64,
        num_attention_heads=6, num_key_value_heads=3, head_dim=32,  # q width 192 != hidden
        mamba_num_heads=4, mamba_head_dim=40, n_groups=1, ssm_state_size=32,  # d_inner 160
        conv_kernel=4, chunk_size=16,
    ),
    "groups4": dict(
        hybrid_override_pattern="M-*-MM-",
        hidden_size=64, intermediate_size=128,
        num_attention_heads=2, num_key_value_heads=1, head_dim=64,
        mamba_num_heads=8, mamba_head_dim=24, n_groups=4, ssm_state_size=8,  # d_inner 192 = 3h
        conv_kernel=3, chunk_size=8,
    ),
}

# Mixture of experts (SPEC section 1.4): several experts, top-k > 1, a shared expert, routed
# scaling; one with Super's latent size, one with an attention layer first and no normalised
# top-k. Expert counts avoid 8 (llama.cpp's quantizer has rules for exactly 8 experts).
MOE_CONFIGS: dict[str, dict] = {
    "moe": dict(
        hybrid_override_pattern="ME*EME",
        hidden_size=64, intermediate_size=96,
        num_attention_heads=4, num_key_value_heads=2, head_dim=32,
        mamba_num_heads=8, mamba_head_dim=16, n_groups=2, ssm_state_size=16,
        conv_kernel=4, chunk_size=8,
        n_routed_experts=6, num_experts_per_tok=2, moe_intermediate_size=48,
        moe_shared_expert_intermediate_size=80, n_shared_experts=1, routed_scaling_factor=2.5,
        norm_topk_prob=True, n_group=1, topk_group=1,
    ),
    "moe_latent": dict(
        hybrid_override_pattern="MEM*E",
        hidden_size=96, intermediate_size=64,
        num_attention_heads=6, num_key_value_heads=3, head_dim=32,
        mamba_num_heads=4, mamba_head_dim=40, n_groups=1, ssm_state_size=32,
        conv_kernel=4, chunk_size=16,
        n_routed_experts=10, num_experts_per_tok=3, moe_intermediate_size=40,
        moe_shared_expert_intermediate_size=64, n_shared_experts=1, routed_scaling_factor=2.0,
        norm_topk_prob=True, n_group=1, topk_group=1, moe_latent_size=32,
    ),
    "moe_attn_first": dict(
        hybrid_override_pattern="*EMEM",
        hidden_size=64, intermediate_size=128,
        num_attention_heads=2, num_key_value_heads=1, head_dim=64,
        mamba_num_heads=8, mamba_head_dim=24, n_groups=4, ssm_state_size=8,
        conv_kernel=3, chunk_size=8,
        n_routed_experts=5, num_experts_per_tok=2, moe_intermediate_size=32,
        moe_shared_expert_intermediate_size=48, n_shared_experts=1, routed_scaling_factor=1.0,
        norm_topk_prob=False, n_group=1, topk_group=1,
    ),
}


def make_config(name_or_fields: str | dict, vocab_size: int = 512, **overrides) -> dict:
    """A complete config.json dict in the legacy (9B-v2) spelling."""
    fields = ({**TINY_CONFIGS, **MOE_CONFIGS}[name_or_fields] if isinstance(name_or_fields, str)
              else name_or_fields)
    cfg = dict(
        architectures=["NemotronHForCausalLM"], model_type="nemotron_h",
        vocab_size=vocab_size, tie_word_embeddings=False,
        bos_token_id=BOS_ID, eos_token_id=EOS_ID, pad_token_id=PAD_ID,
        layer_norm_epsilon=1e-5, max_position_embeddings=4096,
        mlp_hidden_act="relu2", mamba_hidden_act="silu", use_conv_bias=True,
        use_bias=False, mlp_bias=False, attention_bias=False, mamba_proj_bias=False,
        time_step_limit=[0.0, float("inf")], residual_in_fp32=False, expand=2,
        torch_dtype="float32",
    )
    cfg.update(fields)
    cfg.update(overrides)
    cfg["num_hidden_layers"] = len(cfg["hybrid_override_pattern"])
    return cfg


def randomize_(model, seed: int = 0, scale: float = 1.0) -> None:
    """Give every parameter a non-trivial value, so layout bugs (norm weights of 1, D of 1, ...)
    cannot hide. Keeps A negative and dt positive-ish as trained models have them."""
    import torch

    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            r = torch.randn(p.shape, generator=g, dtype=torch.float32)
            if name.endswith("A_log"):
                v = torch.log(torch.rand(p.shape, generator=g) * 15 + 1)
            elif name.endswith("dt_bias"):
                v = torch.rand(p.shape, generator=g) * 2 - 3
            elif name.endswith(".D"):
                v = 1 + 0.5 * r
            elif "norm" in name:
                v = 1 + 0.2 * r
            elif "conv1d" in name:
                v = 0.3 * r
            else:
                fan_in = p.shape[-1] if p.dim() > 1 else 1
                v = r * scale / fan_in**0.5
            p.copy_(v.to(p.dtype))
        for name, b in model.named_buffers():  # the router's correction bias (choice only)
            if name.endswith("e_score_correction_bias"):
                b.copy_((0.3 * torch.randn(b.shape, generator=g)).to(b.dtype))


def make_checkpoint(out_dir: str | Path, config: str | dict = "mix", *, seed: int = 0,
                    dtype: str = "float32", vocab_size: int = 512, tokenizer=None,
                    max_shard_size: str | None = None, **overrides) -> Path:
    """Write a random tiny NemotronHForCausalLM checkpoint (config, safetensors, tokenizer)."""
    import torch
    from transformers import NemotronHConfig, NemotronHForCausalLM

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    cfg_dict = config if isinstance(config, dict) and "model_type" in config else make_config(
        config, vocab_size=vocab_size, **overrides)
    torch.manual_seed(seed)
    model = NemotronHForCausalLM(NemotronHConfig(**cfg_dict)).eval()
    randomize_(model, seed)
    model = model.to(getattr(torch, dtype))
    kw = {"max_shard_size": max_shard_size} if max_shard_size else {}
    model.save_pretrained(out_dir, safe_serialization=True, **kw)
    # Keep the legacy spelling of config.json that 9B-v2 ships with, exactly as given.
    saved = dict(cfg_dict, torch_dtype=dtype)
    (out_dir / "config.json").write_text(json.dumps(saved, indent=2))
    save_tokenizer(tokenizer or build_tokenizer(vocab_size=cfg_dict["vocab_size"]), out_dir)
    return out_dir


def load_hf(model_dir: str | Path, dtype: str = "float32"):
    """The transformers reference: (model, tokenizer) from a checkpoint directory."""
    import torch
    from transformers import AutoTokenizer, NemotronHForCausalLM

    model = NemotronHForCausalLM.from_pretrained(model_dir, dtype=getattr(torch, dtype)).eval()
    return model, AutoTokenizer.from_pretrained(model_dir)


def mtp_shapes(cfg: dict) -> dict[str, tuple[int, ...]]:
    """Checkpoint name -> shape of a Nemotron 3 Super-style multi-token-prediction head
    (`num_nextn_predict_layers` 1, `mtp_hybrid_override_pattern` "*E"): mtp.layers.0 the NextN
    input fusion and an attention sub-layer, mtp.layers.1 an expert sub-layer and the head's
    final norm. Spelled out here as the published checkpoints name them (the names llama.cpp's
    converter maps), not derived from edgenano's layer table."""
    E, hd = cfg["hidden_size"], cfg["head_dim"]
    q, kv = cfg["num_attention_heads"] * hd, cfg["num_key_value_heads"] * hd
    n, F, Fs = cfg["n_routed_experts"], cfg["moe_intermediate_size"], \
        cfg["moe_shared_expert_intermediate_size"]
    L = cfg.get("moe_latent_size") or E
    a, m = "mtp.layers.0.", "mtp.layers.1."
    shapes = {a + "enorm.weight": (E,), a + "hnorm.weight": (E,), a + "eh_proj.weight": (E, 2 * E),
              a + "norm.weight": (E,), a + "mixer.q_proj.weight": (q, E),
              a + "mixer.k_proj.weight": (kv, E), a + "mixer.v_proj.weight": (kv, E),
              a + "mixer.o_proj.weight": (E, q),
              m + "norm.weight": (E,), m + "mixer.gate.weight": (n, E),
              m + "mixer.gate.e_score_correction_bias": (n,),
              m + "mixer.shared_experts.up_proj.weight": (Fs, E),
              m + "mixer.shared_experts.down_proj.weight": (E, Fs),
              m + "final_layernorm.weight": (E,)}
    for x in range(n):
        shapes[m + f"mixer.experts.{x}.up_proj.weight"] = (F, L)
        shapes[m + f"mixer.experts.{x}.down_proj.weight"] = (L, F)
    if cfg.get("moe_latent_size"):
        shapes[m + "mixer.fc1_latent_proj.weight"] = (L, E)
        shapes[m + "mixer.fc2_latent_proj.weight"] = (E, L)
    return shapes


def add_mtp(hf_dir: str | Path, seed: int = 1) -> Path:
    """Give an MoE checkpoint a random MTP head (mtp.safetensors, config keys, the shard index;
    one is written for a single-file checkpoint), as Super ships it; transformers ignores mtp.*
    when loading."""
    import numpy as np
    from safetensors import safe_open
    from safetensors.numpy import save_file

    hf_dir = Path(hf_dir)
    cfg = json.loads((hf_dir / "config.json").read_text())
    rng = np.random.default_rng(seed)
    tensors = {name: (rng.standard_normal(shape) * (0.2 if len(shape) == 1 else 0.1)
                      + (1.0 if name.endswith("norm.weight") else 0.0)).astype(np.float32)
               for name, shape in mtp_shapes(cfg).items()}
    save_file(tensors, hf_dir / "mtp.safetensors")
    cfg |= {"num_nextn_predict_layers": 1, "mtp_hybrid_override_pattern": "*E"}
    (hf_dir / "config.json").write_text(json.dumps(cfg, indent=2))
    index = hf_dir / "model.safetensors.index.json"
    if index.exists():
        j = json.loads(index.read_text())
    else:
        with safe_open(hf_dir / "model.safetensors", "np") as f:
            j = {"metadata": {}, "weight_map": dict.fromkeys(f.keys(), "model.safetensors")}
    j["weight_map"] |= dict.fromkeys(tensors, "mtp.safetensors")
    index.write_text(json.dumps(j, indent=2))
    return hf_dir


def stack_experts(src: str | Path, dst: str | Path, suffix: str = "") -> Path:
    """A copy of checkpoint `src` with each layer's per-expert tensors
    (`...experts.{x}.up_proj.weight`, 2-D) stacked into one 3-D tensor per projection
    (`...experts.up_proj` + `suffix`, shape (experts, out, in)): transformers' in-memory layout,
    which a plain safetensors dump of its state dict writes. One shard, no index."""
    import re
    import shutil

    import numpy as np
    from safetensors.numpy import load_file, save_file

    src, dst = Path(src), Path(dst)
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("*.safetensors", "*.index.json"))
    tensors: dict = {}
    for f in sorted(src.glob("*.safetensors")):
        tensors |= load_file(f)
    expert = re.compile(r"^(.*\.experts)\.(\d+)\.(up_proj|down_proj)\.weight$")
    groups: dict[str, dict[int, np.ndarray]] = {}
    out = {}
    for name, a in tensors.items():
        m = expert.match(name)
        if m:
            groups.setdefault(f"{m[1]}.{m[3]}{suffix}", {})[int(m[2])] = a
        else:
            out[name] = a
    for name, per in groups.items():
        out[name] = np.stack([per[x] for x in range(len(per))])
    save_file(out, dst / "model.safetensors")
    return dst
