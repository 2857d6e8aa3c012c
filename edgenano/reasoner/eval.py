"""Held-out evaluation of the tiny reasoner: accuracy with reasoning on, off and under thinking
budgets (greedy), and the mean KL divergence of next-token distributions against the f32
reference. Runs on the transformers checkpoint (training) or on any GGUF of the model through
edgenano's backends (`edgenano eval`)."""

from __future__ import annotations

import argparse
import math
import re
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from ..chat import BudgetRule, BudgetTracker
from . import prompt, tasks

STOP_TOKENS = ("</s>", "<SPECIAL_11>", "<SPECIAL_12>")
DEFAULT_BUDGETS = (16, 32)
MAX_NEW = {True: 320, False: 48}
_WELL_FORMED = {
    True: re.compile(r"(?s).*\n?</think>\n\nThe answer is [^\n]*\.\n?"),
    False: re.compile(r"\n\nThe answer is [^\n]*\.\n?"),
}


@dataclass(frozen=True)
class Mode:
    name: str
    thinking: bool
    budget: int = -1  # -1 unlimited; > 0 the thinking budget

    def messages(self, problem: tasks.Problem) -> list[dict]:
        return [{"role": "system", "content": "/think" if self.thinking else "/no_think"},
                {"role": "user", "content": problem.question}]


def modes(budgets: Sequence[int] = DEFAULT_BUDGETS) -> list[Mode]:
    return ([Mode("think on", True), Mode("think off", False)]
            + [Mode(f"budget {b}", True, b) for b in budgets])


class GreedyDecoder:
    """One sequence decoded greedily, with SPEC section 2's budget rule while reasoning: after
    `budget` reasoning tokens the close is forced token by token at the next newline (or at
    budget + grace). Feed it the logits after each token; it names the next token, None at the
    end (a stop token or max_new)."""

    def __init__(self, thinking: bool, rule: BudgetRule, *, encode_plain: Callable,
                 piece: Callable[[int], str], stop_ids: set[int], max_new: int):
        self.tracker = BudgetTracker(rule) if thinking else None
        self.encode_plain, self.piece = encode_plain, piece
        self.stop_ids, self.max_new = stop_ids, max_new
        self.tokens: list[int] = []
        self.pending: list[int] = []
        self.done = False

    @property
    def forced(self) -> bool:
        return self.tracker is not None and self.tracker.forced

    def next_token(self, logits: np.ndarray) -> int | None:
        if self.done or len(self.tokens) >= self.max_new:
            self.done = True
            return None
        if self.pending:
            tok = self.pending.pop(0)
        else:
            tok = int(np.argmax(logits))
            if tok in self.stop_ids:
                self.done = True
                return None
            if self.tracker is not None and not self.tracker.closed:
                force = self.tracker.observe(self.piece(tok))
                if force is not None:
                    self.pending = list(self.encode_plain(force))
        self.tokens.append(tok)
        return tok


# -- runners: generate a batch of prompts, or give full-sequence logits --------------------------

class HFRunner:
    """A transformers NemotronHForCausalLM and its `tokenizers` tokenizer; prompts of equal
    length are decoded together (no padding, so the Mamba state needs no mask)."""

    def __init__(self, model, tokenizer, batch: int = 64):
        import torch

        self.torch, self.model, self.batch = torch, model, batch
        self.encode, self.piece = prompt.hf_codec(tokenizer)
        self.stop_ids = {tokenizer.token_to_id(t) for t in STOP_TOKENS} - {None}

    def generate(self, prompts: list[list[int]], make_decoder: Callable) -> list[GreedyDecoder]:
        decs = [make_decoder() for _ in prompts]
        groups: dict[int, list[int]] = {}
        for i, p in enumerate(prompts):
            groups.setdefault(len(p), []).append(i)
        for idx in groups.values():
            for k in range(0, len(idx), self.batch):
                rows = idx[k:k + self.batch]
                self._run([prompts[i] for i in rows], [decs[i] for i in rows])
        return decs

    def _run(self, prompts: list[list[int]], decs: list[GreedyDecoder]) -> None:
        torch = self.torch
        with torch.no_grad():
            out = self.model(torch.tensor(prompts), use_cache=True)
            while True:
                logits = out.logits[:, -1].float().numpy()
                nxt = [d.next_token(lg) for d, lg in zip(decs, logits)]
                if all(d.done for d in decs):
                    return
                ids = torch.tensor([[t if t is not None else 0] for t in nxt])
                out = self.model(ids, past_key_values=out.past_key_values, use_cache=True)

    def logits(self, ids: Sequence[int]) -> np.ndarray:
        with self.torch.no_grad():
            return self.model(self.torch.tensor([list(ids)])).logits[0].float().numpy()


class ModelRunner:
    """An edgenano.Model (a GGUF on one of edgenano's backends), one sequence at a time."""

    def __init__(self, model):
        self.model = model
        tok = model.tokenizer
        self.encode = lambda s: tok.encode(s)
        self.piece = lambda t: tok.token_bytes(t).decode("utf-8", "replace")
        self.encode_plain = lambda s: tok.encode(s, special=False)
        self.stop_ids = set(model.stop_ids)

    def generate(self, prompts: list[list[int]], make_decoder: Callable) -> list[GreedyDecoder]:
        decs = []
        for p in prompts:
            dec = make_decoder()
            state = self.model.new_state()
            logits = self.model.eval(state, p)
            while (tok := dec.next_token(logits)) is not None:
                logits = self.model.eval(state, [tok])
            decs.append(dec)
        return decs

    def logits(self, ids: Sequence[int]) -> np.ndarray:
        return self.model.logits(list(ids))


# -- accuracy ------------------------------------------------------------------------------------

@dataclass
class ModeResult:
    mode: Mode
    correct: int = 0
    well_formed: int = 0
    cut: int = 0
    total: int = 0
    per_kind: dict = field(default_factory=dict)
    samples: list = field(default_factory=list)

    @property
    def accuracy(self) -> float:
        return self.correct / max(self.total, 1)


def evaluate_mode(runner, problems: list[tasks.Problem], mode: Mode, *, grace: int = 500,
                  decode: Callable[[list[int]], str]) -> ModeResult:
    """Greedy answers to `problems` in one mode; counts correct, well-formed and budget-cut."""
    rule = BudgetRule(budget=mode.budget, grace=grace)
    encode_plain = getattr(runner, "encode_plain", runner.encode)
    prompts = [runner.encode(prompt.render_prompt(mode.messages(p))) for p in problems]

    def make():
        return GreedyDecoder(mode.thinking, rule, encode_plain=encode_plain, piece=runner.piece,
                             stop_ids=runner.stop_ids, max_new=MAX_NEW[mode.thinking])

    res = ModeResult(mode)
    for p, dec in zip(problems, runner.generate(prompts, make)):
        text = decode(dec.tokens)
        ok = tasks.is_correct(p, text)
        res.total += 1
        res.correct += ok
        res.well_formed += bool(_WELL_FORMED[mode.thinking].fullmatch(text))
        res.cut += dec.forced
        k = res.per_kind.setdefault(p.kind, [0, 0])
        k[0] += ok
        k[1] += 1
        if len(res.samples) < 4 and not ok:
            res.samples.append((p.question, text))
    return res


def evaluate(runner, n_per_kind: int, mode_list: Sequence[Mode], *, decode, grace: int = 500,
             log: Callable[[str], None] | None = None) -> list[ModeResult]:
    problems = tasks.heldout(n_per_kind)
    out = []
    for m in mode_list:
        t0 = time.time()
        r = evaluate_mode(runner, problems, m, grace=grace, decode=decode)
        if log:
            log(f"{m.name}: {r.correct}/{r.total} = {r.accuracy:.1%} "
                f"({time.time() - t0:.0f} s)")
        out.append(r)
    return out


def format_table(results: list[ModeResult]) -> str:
    kinds = tasks.KINDS
    head = "| mode | accuracy | " + " | ".join(kinds) + " | well-formed | budget cut |"
    rows = [head, "|" + "---|" * (len(kinds) + 4)]
    for r in results:
        cells = [f"{r.per_kind.get(k, [0, 0])[0]}/{r.per_kind.get(k, [0, 1])[1]}" for k in kinds]
        cut = f"{r.cut}/{r.total}" if r.mode.budget > 0 else "-"
        rows.append(f"| {r.mode.name} | {r.accuracy:.1%} | " + " | ".join(cells)
                    + f" | {r.well_formed}/{r.total} | {cut} |")
    return "\n".join(rows)


# -- KL divergence against the f32 reference ---------------------------------------------------

def kl_sequences(encode, n_per_kind: int = 4) -> list[list[int]]:
    """Held-out conversations with their reasoning-on completions, as token ids."""
    out = []
    for p in tasks.heldout(n_per_kind):
        text = prompt.render_prompt(Mode("on", True).messages(p))
        out.append(encode(text + p.trace + prompt.CLOSE + p.answer_line + "\n"))
    return out


def mean_kl(logits_ref: np.ndarray, logits_test: np.ndarray) -> float:
    """Mean over positions of KL(p_ref || p_test), in nats."""
    a = logits_ref.astype(np.float64)
    b = logits_test.astype(np.float64)
    la = a - a.max(-1, keepdims=True)
    la -= np.log(np.exp(la).sum(-1, keepdims=True))
    lb = b - b.max(-1, keepdims=True)
    lb -= np.log(np.exp(lb).sum(-1, keepdims=True))
    return float((np.exp(la) * (la - lb)).sum(-1).mean())


def kl_against(ref_runner, test_runner, sequences: list[list[int]]) -> float:
    kls = [mean_kl(ref_runner.logits(s), test_runner.logits(s)) for s in sequences]
    return float(np.mean(kls)) if kls else math.nan


# -- `edgenano eval` ----------------------------------------------------------------------------

def _open(path: str, backend: str, threads: int | None):
    from ..model import Model

    return Model(path, backend=backend, n_ctx=1024, n_threads=threads)


def _pick_backend(name: str) -> str:
    """auto: the native engine when the extension is built, else the NumPy reference."""
    if name != "auto":
        return name
    try:
        from .. import _C  # noqa: F401

        return "native"
    except ImportError:
        return "reference"


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="edgenano eval",
        description="Held-out accuracy of a GGUF of the built-in tiny reasoner with reasoning on, "
                    "off and under thinking budgets (greedy), and the mean KL divergence of its "
                    "next-token distributions against the f32 reference.")
    p.add_argument("model", nargs="?", help="GGUF file (default: the built-in model, f32)")
    p.add_argument("--backend", default="auto",
                   help="native, llama.cpp or reference (auto: native, or reference without the "
                        "C++ extension)")
    kinds = ", ".join(tasks.KINDS)
    p.add_argument("--n", type=int, default=25,
                   help=f"problems per task kind ({len(tasks.KINDS)} kinds: {kinds})")
    p.add_argument("--budgets", default=",".join(map(str, DEFAULT_BUDGETS)),
                   help="thinking budgets to evaluate, comma-separated ('' for none)")
    p.add_argument("--grace", type=int, default=500, help="tokens to wait for a newline")
    p.add_argument("--kl-n", type=int, default=4, help="KL sequences per task kind (0: skip)")
    p.add_argument("--ref", help="f32 GGUF for the KL reference (default: the built-in f32)")
    p.add_argument("--threads", type=int, default=None)
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    from ..models import default_model_path

    path = args.model or str(default_model_path("f32"))
    backend = _pick_backend(args.backend)
    runner = ModelRunner(_open(path, backend, args.threads))
    budgets = [int(b) for b in args.budgets.split(",") if b.strip()]
    print(f"{path} on {backend}: {args.n} held-out problems per kind, greedy")
    results = evaluate(runner, args.n, modes(budgets), grace=args.grace,
                       decode=runner.model.detokenize, log=print)
    print(format_table(results))
    if args.kl_n > 0:
        ref_path = args.ref or str(default_model_path("f32"))
        ref = ModelRunner(_open(ref_path, "reference", args.threads))
        kl = kl_against(ref, runner, kl_sequences(ref.encode, args.kl_n))
        print(f"mean KL vs f32 reference ({ref_path}): {kl:.3e} nats/token")
    return 0


if __name__ == "__main__":
    sys.exit(main())
