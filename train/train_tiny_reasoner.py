"""Train edgenano's built-in tiny reasoner: a NemotronHForCausalLM (Mamba-2, MLP and attention
layers) taught the synthetic tasks of edgenano.reasoner in the 9B-v2 chat format, on CPU.

Seeded and deterministic (data, init, batch order); see train/README.md for the exact command.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import sys
import time
from pathlib import Path

import numpy as np
import torch
from transformers import NemotronHConfig, NemotronHForCausalLM

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # devtools/ and train/ are source-tree packages, never installed

from devtools.tiny import PAD_ID, build_tokenizer, make_config, save_tokenizer  # noqa: E402
from edgenano.reasoner import eval as reval  # noqa: E402
from edgenano.reasoner import tasks  # noqa: E402
from train import data, ssd_quadratic  # noqa: E402

# The 9B-v2 mix in miniature: Mamba-2 (M), MLP (-) and attention (*) layers, n_groups > 1,
# every matrix width a multiple of 256 so every K-quant applies without fallback. Two attention
# layers, not one: the one-attention models misread digits by position (the tens digit of a
# 3-digit operand, the digits of the number counted) and reached 37-54% with reasoning on.
MODEL = dict(
    hybrid_override_pattern="M-M*-M*M-",
    hidden_size=256, intermediate_size=512,
    num_attention_heads=8, num_key_value_heads=2, head_dim=32,
    mamba_num_heads=16, mamba_head_dim=32, n_groups=4, ssm_state_size=32,
    conv_kernel=4, chunk_size=64, max_position_embeddings=1024,
)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--out", type=Path, default=ROOT / "edgenano/assets/tiny-reasoner")
    p.add_argument("--steps", type=int, default=1200)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--warmup", type=int, default=40)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--save-dtype", default="bfloat16", choices=["bfloat16", "float32"])
    p.add_argument("--eval-n", type=int, default=50, help="held-out problems per kind")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a MODEL field (ints, or a string for the pattern)")
    return p.parse_args(argv)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True)


def model_fields(overrides: list[str]) -> dict:
    fields = dict(MODEL)
    for kv in overrides:
        k, v = kv.split("=", 1)
        fields[k] = int(v) if v.lstrip("-").isdigit() else v
    return fields


def batches(rng: random.Random, encode, decode_one, batch: int, exclude: frozenset,
            pool: int = 8):
    """Endless batches of examples; `pool` batches at a time are grouped by length so that
    little padding is needed, then shuffled."""
    mix = data.Mix()
    while True:
        exs = [data.encode_sample(data.make_sample(rng, mix, exclude), encode, decode_one)
               for _ in range(batch * pool)]
        exs.sort(key=lambda e: len(e.ids))
        groups = [exs[i:i + batch] for i in range(0, len(exs), batch)]
        rng.shuffle(groups)
        yield from groups


def collate(exs: list[data.Example]) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded ids and next-token targets (-100 where no loss)."""
    t = max(len(e.ids) for e in exs)
    ids = torch.full((len(exs), t), PAD_ID, dtype=torch.long)
    tgt = torch.full((len(exs), t), -100, dtype=torch.long)
    for i, e in enumerate(exs):
        ids[i, :len(e.ids)] = torch.tensor(e.ids)
        m = torch.tensor(e.mask[1:])
        nxt = torch.tensor(e.ids[1:])
        tgt[i, :len(e.ids) - 1] = torch.where(m, nxt, torch.full_like(nxt, -100))
    return ids, tgt


def make_optimizer(model, lr: float):
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        (decay if p.dim() >= 2 and "embeddings" not in name else no_decay).append(p)
    return torch.optim.AdamW([{"params": decay, "weight_decay": 0.05},
                              {"params": no_decay, "weight_decay": 0.0}],
                             lr=lr, betas=(0.9, 0.95), eps=1e-8)


def lr_at(step: int, args) -> float:
    if step < args.warmup:
        return args.lr * (step + 1) / args.warmup
    frac = (step - args.warmup) / max(args.steps - args.warmup, 1)
    return args.lr * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * frac)))


def train(model, tok, args) -> None:
    encode, decode_one = data.hf_codec(tok)
    rng = random.Random(args.seed)
    stream = batches(rng, encode, decode_one, args.batch, tasks.heldout_keys())
    opt = make_optimizer(model, args.lr)
    model.train()
    t0, run_loss, run_tok = time.time(), 0.0, 0
    for step in range(args.steps):
        ids, tgt = collate(next(stream))
        for g in opt.param_groups:
            g["lr"] = lr_at(step, args)
        logits = model(input_ids=ids).logits
        loss = torch.nn.functional.cross_entropy(
            logits.view(-1, logits.size(-1)).float(), tgt.view(-1), ignore_index=-100)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        run_loss += loss.item()
        run_tok += ids.numel()
        if (step + 1) % 25 == 0 or step == 0:
            n = 1 if step == 0 else 25
            el = time.time() - t0
            print(f"step {step + 1:5d}  loss {run_loss / n:.4f}  lr {lr_at(step, args):.2e}  "
                  f"{run_tok / el:.0f} tok/s  {el:.0f} s", flush=True)
            run_loss = 0.0
    print(f"trained {args.steps} steps in {time.time() - t0:.0f} s", flush=True)


def save(model, tok, cfg: dict, args) -> None:
    """save_pretrained, then config.json in the legacy 9B-v2 spelling and our tokenizer files."""
    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    model.to(getattr(torch, args.save_dtype)).save_pretrained(out, safe_serialization=True)
    (out / "config.json").write_text(json.dumps(dict(cfg, torch_dtype=args.save_dtype), indent=2)
                                     + "\n")
    save_tokenizer(tok, out)
    for extra in ("generation_config.json",):
        (out / extra).unlink(missing_ok=True)


def evaluate_saved(args) -> None:
    """Reload the saved checkpoint (stored precision) in f32 and run the held-out evaluation."""
    from tokenizers import Tokenizer

    model = NemotronHForCausalLM.from_pretrained(args.out, dtype=torch.float32).eval()
    tok = Tokenizer.from_file(str(args.out / "tokenizer.json"))
    runner = reval.HFRunner(model, tok)
    results = reval.evaluate(runner, args.eval_n, reval.modes(),
                             decode=lambda ids: tok.decode(ids, skip_special_tokens=False),
                             log=lambda s: print(s, flush=True))
    print(reval.format_table(results))
    for r in results:
        for q, text in r.samples[:2]:
            print(f"[{r.mode.name}] {q!r} -> {text!r}")


def main(argv=None) -> None:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    seed_everything(args.seed)
    tok = build_tokenizer(data.tokenizer_corpus(), vocab_size=1024)
    cfg = make_config(model_fields(args.set), vocab_size=tok.get_vocab_size())
    model = NemotronHForCausalLM(NemotronHConfig(**cfg))
    n_params = sum(p.numel() for p in model.parameters())
    print(f"vocab {tok.get_vocab_size()}, {n_params / 1e6:.2f} M parameters, "
          f"pattern {cfg['hybrid_override_pattern']}", flush=True)
    ssd_quadratic.install()
    train(model, tok, args)
    save(model, tok, cfg, args)
    if args.eval_n > 0:
        evaluate_saved(args)


if __name__ == "__main__":
    main()
