"""`edgenano bench`: prefill and decode speed of a GGUF on edgenano's backends and llama.cpp, on
the same file with the same threads, in one run, as ratios (on a shared machine a ratio means more
than an absolute time). bench/bench_engine.py is the full benchmark (peak RSS, bandwidth share,
9B-v2-shaped files); this is the quick check a user runs on their own model."""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np

from .cli import add_output_args, open_model


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="edgenano bench",
        description="Prefill and decode tokens/s of a GGUF on each backend, same file and "
                    "threads, best of --reps rounds, with ratios against the last backend.")
    p.add_argument("model", nargs="?", help="GGUF file (default: the built-in tiny reasoner)")
    p.add_argument("--backends", default="native,llama.cpp",
                   help="comma-separated: native, llama.cpp, reference (default: %(default)s; "
                        "llama.cpp is skipped when llama-cpp-python is not installed)")
    p.add_argument("-p", "--prompt", type=int, default=512, help="prefill length in tokens")
    p.add_argument("-n", "--decode", type=int, default=64, help="decode steps")
    p.add_argument("-t", "--threads", type=int, default=None, help="threads (default: all cores)")
    p.add_argument("--reps", type=int, default=3, help="rounds; the best of each is kept")
    add_output_args(p, quiet="no progress lines on stderr")
    return p


class _Progress:
    """What is running, on stderr: one line rewritten in place on a terminal, else one line
    per step; stdout keeps only the table."""

    def __init__(self, quiet: bool):
        self.quiet, self.tty = quiet, sys.stderr.isatty()

    def __call__(self, text: str) -> None:
        if not self.quiet:
            sys.stderr.write(f"\r\033[Kbench: {text}" if self.tty else f"bench: {text}\n")
            sys.stderr.flush()

    def done(self) -> None:
        if self.tty and not self.quiet:
            sys.stderr.write("\r\033[K")
            sys.stderr.flush()


def measure(model, ids: list[int], n_decode: int) -> tuple[float, float]:
    """(prefill tok/s, decode tok/s) for one round on a fresh state."""
    state = model.new_state()
    t0 = time.perf_counter()
    logits = model.eval(state, ids)
    t1 = time.perf_counter()
    for _ in range(n_decode):
        logits = model.eval(state, [int(np.argmax(logits))])
    t2 = time.perf_counter()
    return len(ids) / (t1 - t0), n_decode / max(t2 - t1, 1e-9)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    from .backend_base import default_threads

    if args.model is None:
        from .models import default_model_path

        args.model = str(default_model_path())
    threads = args.threads or default_threads()
    names = [b.strip() for b in args.backends.split(",") if b.strip()]
    if "llama.cpp" in names:
        try:
            import llama_cpp  # noqa: F401
        except ImportError:
            print("llama-cpp-python not installed: skipping llama.cpp", file=sys.stderr)
            names.remove("llama.cpp")
    n_ctx = args.prompt + args.decode + 8
    progress = _Progress(args.quiet)
    models = {}
    for b in names:
        progress(f"loading {b}")
        models[b] = open_model("edgenano bench", args.model, backend=b, n_ctx=n_ctx,
                               n_threads=threads, verbose=args.verbose, ctx_flag=None)
    n_vocab = next(iter(models.values())).config.n_vocab
    ids = np.random.default_rng(0).integers(min(300, n_vocab - 1), n_vocab, args.prompt).tolist()
    best: dict[str, list[float]] = {b: [0.0, 0.0] for b in names}
    for b, m in models.items():
        progress(f"warm-up {b}")
        measure(m, ids[:8], 2)  # warm-up: page the weights in, start the threads
    for r in range(args.reps):  # backends alternate, so a noisy moment hits them alike
        for b, m in models.items():
            progress(f"round {r + 1}/{args.reps}: {b}")
            pf, dc = measure(m, ids, args.decode)
            best[b] = [max(best[b][0], pf), max(best[b][1], dc)]
    progress.done()
    base = names[-1]
    print(f"{args.model} | {threads} threads | prompt {args.prompt} | decode {args.decode} | "
          f"best of {args.reps}")
    print(f"{'backend':12s}{'prefill tok/s':>15s}{'decode tok/s':>15s}"
          + (f"{'prefill ratio':>15s}{'decode ratio':>14s}" if len(names) > 1 else ""))
    for b in names:
        pf, dc = best[b]
        line = f"{b:12s}{pf:15.1f}{dc:15.1f}"
        if len(names) > 1:
            line += f"{pf / best[base][0]:14.2f}x{dc / best[base][1]:13.2f}x"
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
