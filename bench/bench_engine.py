"""edgenano's native engine against llama.cpp (llama-cpp-python) on the same GGUF, same threads,
in one run: prefill and decode speed, peak RSS, and decode's share of the memory-bandwidth limit.

    python bench/bench_engine.py --model scaled            # 9B-v2 pattern, widths / 4, Q8_0
    python bench/bench_engine.py --model full --prompts 64,512 --long 0   # 9B-v2 shapes, Q4_0

Each engine runs in its own subprocess (so peak RSS is its own), engines alternate for --reps
rounds and the best figure of each is kept: on a shared machine the ratios of one run are more
trustworthy than any absolute number.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
MODELS = {"scaled": ("9b-v2/4", "q8_0"), "full": ("9b-v2", "q4_0"),
          # Nemotron 3 Nano 30B-A3B widths, 16 experts, quantized by llama.cpp's quantizer
          "moe-q4_k_m": ("nano3-16x", "q4_k_m"), "moe-q8_0": ("nano3-16x", "q8_0")}
SHORT_PROMPT = 16  # tokens before the short-context decode


# ----------------------------------------------------------------------------- worker side


class Native:
    def __init__(self, path: str, threads: int, n_ctx: int):
        from edgenano.engine import NativeBackend
        from edgenano.gguf_model import load_gguf

        # The engine itself (edgenano.Model adds the tokenizer, which these random files only
        # stub out).
        self.m = NativeBackend(load_gguf(path), path, n_threads=threads, n_ctx=n_ctx)
        self.s = None

    def reset(self):
        self.s = self.m.new_state()

    def feed(self, ids):
        self.m.eval(self.s, ids)


class LlamaCpp:
    def __init__(self, path: str, threads: int, n_ctx: int):
        import llama_cpp

        self.llm = llama_cpp.Llama(path, n_ctx=n_ctx, n_batch=512, n_threads=threads,
                                   n_threads_batch=threads, verbose=False)

    def reset(self):
        self.llm.reset()
        mem = getattr(self.llm._ctx, "memory_clear", None)
        if mem:
            mem(True)

    def feed(self, ids):
        self.llm.eval(list(ids))


def peak_rss_mb() -> float:
    """This process's resident-set high-water mark (VmHWM: per address space, so unlike
    ru_maxrss it does not inherit the parent's figure across fork + exec)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def worker(a) -> None:
    prompts = [int(p) for p in a.prompts.split(",") if int(p) > 0]
    longest = max(prompts + [a.long, SHORT_PROMPT])
    n_ctx = longest + a.decode + 8
    ids = np.random.default_rng(0).integers(300, 30000, n_ctx).tolist()
    t0 = time.perf_counter()
    eng = (LlamaCpp if a.worker == "llama.cpp" else Native)(a.path, a.threads, n_ctx)
    out = {"load_s": time.perf_counter() - t0}
    eng.reset()
    eng.feed(ids[:8])  # warm-up: page in, start threads
    def decode(name: str, ctx: int) -> None:  # from a state holding ids[:ctx]
        t0 = time.perf_counter()
        for t in ids[ctx:ctx + a.decode]:
            eng.feed([t])
        out[f"decode_{name}"] = a.decode / (time.perf_counter() - t0)

    for n in prompts:
        eng.reset()
        t0 = time.perf_counter()
        eng.feed(ids[:n])
        out[f"prefill_{n}"] = n / (time.perf_counter() - t0)
        if n == a.long:  # the long decode continues this prefill rather than repeating it
            decode("long", n)
    for name, ctx in (("short", SHORT_PROMPT), ("long", a.long)):
        if ctx <= 0 or f"decode_{name}" in out:
            continue
        eng.reset()
        eng.feed(ids[:ctx])
        decode(name, ctx)
    out["peak_rss_mb"] = peak_rss_mb()
    if a.profile and a.worker != "llama.cpp":  # where the time goes, after the timed runs
        be = eng.m
        be.profiling = True
        eng.reset()
        eng.feed(ids[:prompts[0]])
        out["profile_prefill"] = be.profile(reset=True)
        for t in ids[prompts[0]:prompts[0] + a.decode]:
            eng.feed([t])
        out["profile_decode"] = be.profile(reset=True)
    print(json.dumps(out), flush=True)


# ----------------------------------------------------------------------------- driver side


def model_path(a) -> Path:
    if a.model not in MODELS:
        return Path(a.model)
    shape, qtype = MODELS[a.model]
    path = Path(a.dir) / f"nemotron_h_{a.model}_{qtype}.gguf"
    if not path.exists():
        sys.path.insert(0, str(HERE))
        from make_gguf import llama_quantize, write

        path.parent.mkdir(parents=True, exist_ok=True)
        via_llama = a.model.startswith("moe") or qtype in ("q4_k_m", "q5_k_m")
        (llama_quantize if via_llama else write)(shape, qtype, path)
    return path


def step_bytes(path: Path, n_past: int, kv_bytes: float = 2.0) -> dict[str, int]:
    """Bytes one decode step must move, by kind: every weight but the embedding table plus one
    embedding row (of routed experts, the k of X a token chooses); each Mamba layer's conv and SSM
    state (f32), read and written back; each attention layer's K and V rows for n_past tokens
    (f16 by default: 2 bytes a value) and the new row written. Activations (a few KB a layer)
    stay in cache and are not counted."""
    from edgenano.gguf_model import load_gguf

    g = load_gguf(path)
    c = g.config
    emb = g.tensors["token_embd.weight"]
    used = c.n_expert_used / c.n_expert if c.n_expert else 1.0  # routed experts: k of X
    weights = sum(t.nbytes * (used if name.endswith("_exps.weight") else 1)
                  for name, t in g.tensors.items() if name != "token_embd.weight")
    weights = int(weights)
    weights += emb.nbytes // emb.ne[1]
    n_mamba = c.layer_kinds.count("mamba")
    conv_dim = c.ssm_d_inner + 2 * c.ssm_n_group * c.ssm_d_state
    ssm = c.ssm_n_head * c.ssm_head_dim * c.ssm_d_state
    state = n_mamba * 4 * 2 * (ssm + (c.ssm_d_conv - 1) * conv_dim)
    kv = sum(2 * (n_past + 1) * hk * c.head_dim * kv_bytes for hk in c.n_head_kv if hk)
    return {"weights": weights, "state": state, "kv": int(kv)}


def run_worker(engine: str, path: Path, a, profile: bool = False) -> dict:
    # edgenano-base: the same engine from another install (--base-python), e.g. the code before
    # a change, so before and after are measured in one run.
    python = a.base_python if engine == "edgenano-base" else sys.executable
    if engine == "edgenano-base" and not python:
        raise SystemExit("engine edgenano-base needs --base-python")
    cmd = [python, __file__, "--worker", engine, "--path", str(path),
           "--threads", str(a.threads), "--prompts", a.prompts, "--decode", str(a.decode),
           "--long", str(a.long)] + (["--profile"] if profile else [])
    env = dict(os.environ)
    cwd = None
    if engine == "edgenano-base":  # import that install's edgenano, not this tree's
        cwd = "/"
        env.pop("PYTHONPATH", None)
    if engine == "edgenano-avx2":  # the same engine with the AVX-512 VNNI dots turned off
        env["EDGENANO_NO_AVX512"] = "1"
    res = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=cwd)
    lines = [ln for ln in res.stdout.splitlines() if ln.startswith("{")]
    if res.returncode or not lines:
        raise RuntimeError(f"{engine} worker failed:\n{res.stderr[-2000:]}")
    return json.loads(lines[-1])


def bandwidth(threads: int) -> float:
    from edgenano._C import kernels

    return kernels.read_bandwidth(1 << 30, threads, 5)


def report(results: dict, bw: list[float], path: Path, a) -> None:
    engines = list(results)
    keys = sorted({k for r in results.values() for k in r}, key=lambda k: (k.split("_")[0], k))
    higher_better = lambda k: k.startswith(("prefill", "decode"))  # noqa: E731
    short = step_bytes(path, SHORT_PROMPT)
    print(f"\nmodel {path} | threads {a.threads} | read bandwidth "
          f"{min(bw) / 1e9:.1f}-{max(bw) / 1e9:.1f} GB/s | a decode step moves "
          + ", ".join(f"{v / 1e6:.0f} MB of {k}" for k, v in short.items())
          + f" at {SHORT_PROMPT} tokens of context")
    base = engines[-1]  # ratios: every other engine over the last one
    others = engines[:-1]
    print(f"{'metric':16s}" + "".join(f"{e:>14s}" for e in engines)
          + "".join(f"{e + '/' + base:>24s}" for e in others))
    for k in keys:
        vals = [results[e].get(k, float("nan")) for e in engines]
        unit = " tok/s" if higher_better(k) else ""
        print(f"{k + unit:16s}" + "".join(f"{v:14.2f}" for v in vals)
              + "".join(f"{v / vals[-1]:23.2f}x" for v in vals[:-1]))
    for e in engines:
        for k, ctx in (("decode_short", SHORT_PROMPT), ("decode_long", a.long)):
            if k in results[e]:
                # the step at the middle of the measured run
                bpt = sum(step_bytes(path, ctx + a.decode // 2).values())
                frac = results[e][k] * bpt / max(bw)
                print(f"{e} {k}: {frac:.0%} of the bandwidth limit "
                      f"({max(bw) / bpt:.1f} tok/s for {bpt / 1e6:.0f} MB a step at "
                      f"{max(bw) / 1e9:.1f} GB/s)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="scaled", help="scaled, full, or a GGUF path")
    ap.add_argument("--dir", default="/tmp/edgenano-bench", help="where generated GGUFs go")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--prompts", default="512,4096", help="prefill lengths (comma-separated)")
    ap.add_argument("--decode", type=int, default=32, help="decode steps per measurement")
    ap.add_argument("--long", type=int, default=4096, help="context before the long decode")
    ap.add_argument("--reps", type=int, default=2)
    ap.add_argument("--engines", default="edgenano,llama.cpp",
                    help="comma-separated: edgenano, edgenano-avx2 (AVX-512 dots off), "
                    "edgenano-base (--base-python's install), llama.cpp; ratios are each over "
                    "the last")
    ap.add_argument("--base-python",
                    help="a Python with another edgenano install, run as engine edgenano-base")
    ap.add_argument("--profile", action="store_true",
                    help="then profile edgenano's first prefill and a decode, per operation")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--path", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.worker:
        return worker(a)
    path = model_path(a)
    a.path_used = path
    results: dict[str, dict] = {e: {} for e in a.engines.split(",")}
    bw = [bandwidth(a.threads)]
    for rep in range(a.reps):
        # every other round in reverse order: the first worker after the bandwidth probe was
        # measured slower, and a fixed order would hand that to one engine
        for e in (list(results) if rep % 2 == 0 else list(results)[::-1]):
            r = run_worker(e, path, a)
            print(f"rep {rep} {e}: {json.dumps({k: round(v, 2) for k, v in r.items()})}",
                  flush=True)
            for k, v in r.items():
                best = max if k.startswith(("prefill", "decode")) else min
                results[e][k] = best(results[e].get(k, v), v) if k != "peak_rss_mb" else \
                    max(results[e].get(k, v), v)
        bw.append(bandwidth(a.threads))
    report(results, bw, path, a)
    if a.profile:
        from edgenano.engine import format_profile

        r = run_worker("edgenano", path, a, profile=True)
        first = [int(p) for p in a.prompts.split(",") if int(p) > 0][0]
        print(f"\nedgenano profile, prefill of {first} tokens:\n"
              + format_profile(r["profile_prefill"]))
        print(f"\nedgenano profile, {a.decode} decode steps:\n"
              + format_profile(r["profile_decode"]))


if __name__ == "__main__":
    main()
