"""Every CUDA kernel's measured error against its CPU twin, run through the SIMT emulator
(_C.cuda_emu vs _C.kernels, the shapes of tests/test_cuda_emu.py): one line per kernel and shape,
NMSE and max |diff|, then whole tiny models on the emulated backend against the CPU backend.

    python devtools/cuda_emu_report.py [--no-models]    (--dev: the kernels on a GPU instead)
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np
from gguf import GGMLQuantizationType as QT

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from edgenano import _C as C  # noqa: E402
from tests.test_kernels import (  # noqa: E402
    WEIGHT_TYPES,
    cache_rows,
    random_rows,
    rng_for,
    scan_inputs,
)

K = C.kernels


def nmse(got, ref) -> float:
    got, ref = np.asarray(got, np.float64), np.asarray(ref, np.float64)
    den = np.sum(ref**2)
    return float(np.sum((got - ref) ** 2) / den) if den else float(np.sum(got**2))


def line(kernel: str, shape: str, got, ref) -> None:
    got, ref = np.asarray(got), np.asarray(ref)
    exact = np.array_equal(got, ref)
    err = np.max(np.abs(got.astype(np.float64) - ref.astype(np.float64))) if got.size else 0.0
    print(f"{kernel:<34} {shape:<40} nmse {nmse(got, ref):9.2e}  max|d| {err:9.2e}"
          f"{'  (bit-exact)' if exact else ''}")


def cols_for(qtype) -> int:
    return 83 if qtype in (QT.F32, QT.F16, QT.BF16) else (
        768 if qtype in (QT.Q4_K, QT.Q5_K, QT.Q6_K) else 544)


def kernels(E) -> None:
    for qtype in WEIGHT_TYPES:
        cols = cols_for(qtype)
        for T in (1, 3):
            rng = rng_for("cu-mv", qtype, T)
            raw = random_rows(qtype, 37, cols, rng)
            x = rng.standard_normal((T, cols)).astype(np.float32)
            line(f"matvec (dp4a) {qtype.name}", f"T={T} 37x{cols}",
                 E.matmul(raw, int(qtype), cols, x, path="vec"),
                 K.matmul(raw, int(qtype), cols, x, path="vec"))
    for qtype in WEIGHT_TYPES:
        cols = cols_for(qtype)
        rng = rng_for("cu-mm", qtype, 70)
        raw = random_rows(qtype, 70, cols, rng)
        x = rng.standard_normal((70, cols)).astype(np.float32)
        line(f"gemm (TF32 mma) {qtype.name}", f"T=70 70x{cols}",
             E.matmul(raw, int(qtype), cols, x, path="gemm"),
             K.matmul(raw, int(qtype), cols, x, path="gemm"))
    for qtype in WEIGHT_TYPES:
        cols = cols_for(qtype)
        raw = random_rows(qtype, 11, cols, rng_for("cu-emb", qtype))
        ids = np.array([3, 0, 10, 3, 7], np.int32)
        line(f"embed {qtype.name}", f"5 ids of 11x{cols}", E.embed(raw, int(qtype), cols, ids),
             K.dequantize(raw, int(qtype), cols)[ids])
    rng = rng_for("report")
    for n in (70, 1100):
        x, w = (rng.standard_normal((6, n)) * 3).astype(np.float32), rng.standard_normal(n)
        w = w.astype(np.float32)
        line("rmsnorm", f"6x{n}", E.rmsnorm(x, w, 1e-5), K.rmsnorm(x, w, 1e-5))
    for g in (1, 4):
        y, z, w = (rng.standard_normal(s).astype(np.float32) for s in ((5, 600), (5, 600), (600,)))
        line("gated_rmsnorm", f"5x600 G={g}", E.gated_rmsnorm(y, 3 * z, w, g, 1e-5),
             K.gated_rmsnorm(y, 3 * z, w, g, 1e-5))
    x = rng.standard_normal((7, 333)).astype(np.float32)
    line("relu2", "7x333", E.relu2(x), K.relu2(x))
    v, b = (rng.standard_normal((6, 300)) * 12).astype(np.float32), rng.standard_normal(300)
    line("softplus_bias", "6x300", E.softplus(v, b.astype(np.float32)),
         K.softplus(v, b.astype(np.float32)))
    for T in (1, 11):
        args = [rng.standard_normal(s).astype(np.float32)
                for s in ((T, 300), (3, 300), (300, 4), (300,))]
        (y, st), (y_ref, st_ref) = E.causal_conv(*args, silu=True), K.causal_conv(*args, silu=True)
        line("causal_conv (y)", f"T={T} C=300 K=4", y, y_ref)
        line("causal_conv (state)", f"T={T} C=300 K=4", st, st_ref)
    for T, N in ((1, 24), (37, 24), (2, 200)):
        args = scan_inputs(T, H=6, P=10, N=N, G=2)
        (y, st), (y_ref, st_ref) = E.ssm_scan(*args), K.ssm_scan(*args, chunk=0)
        line("ssm_scan recurrent (y)", f"T={T} H=6 P=10 N={N} G=2", y, y_ref)
        line("ssm_scan recurrent (state)", f"T={T} H=6 P=10 N={N} G=2", st, st_ref)
    for T, chunk, H, G, N in ((37, 8, 6, 2, 24), (130, 64, 4, 2, 130), (65, 64, 2, 2, 24)):
        args = scan_inputs(T, H=H, P=10, N=N, G=G, seed=1)
        (y, st), (y_ref, st_ref) = E.ssm_scan(*args, chunk=chunk), K.ssm_scan(*args, chunk=chunk)
        shape = f"T={T} chunk={chunk} H={H} N={N} G={G}"
        line("ssm_scan chunked SSD (y)", shape, y, y_ref)
        line("ssm_scan chunked SSD (state)", shape, st, st_ref)
    for kv in (QT.F32, QT.F16, QT.Q8_0):
        x = rng.standard_normal((9, 192)).astype(np.float32)
        line(f"kv_store {kv.name}", "9x192", E.kv_store(x, int(kv)), K.kv_store(x, int(kv)))
    for kv in (QT.F16, QT.Q8_0):
        for T, n_past, d in ((1, 600, 64), (1, 37, 64), (17, 40, 64), (3, 254, 64), (3, 5, 160)):
            q = rng.standard_normal((T, 6, d)).astype(np.float32)
            k, v = (rng.standard_normal((n_past + T, 2, d)).astype(np.float32) for _ in range(2))
            kc, vc = cache_rows(k, kv), cache_rows(v, kv)
            kind = "split-K" if T < 2 or d > 128 else "tiled"
            line(f"attention {kind} {kv.name}", f"T={T} past={n_past} d={d} 6q/2kv heads",
                 E.attention(q, kc, vc, n_past, 2, int(kv)),
                 K.attention(q, kc, vc, n_past, 2, int(kv)))
    src = rng.standard_normal((9, 300)).astype(np.float32)
    rows = np.array([7, 0, 3, 8], np.int32)
    line("gather_rows", "4 of 9x300", E.gather_rows(src, rows), src[rows])
    y, scale = src[:4] * 2, rng.random(4).astype(np.float32)
    dst = rng.standard_normal((9, 300)).astype(np.float32)
    want = dst.copy()
    want[rows] += scale[:, None] * y
    line("scatter_add_rows", "4 into 9x300", E.scatter_add_rows(y, rows, scale, dst), want)


def models(engine: str) -> None:
    """Tiny models (tests' "kwide" and "moe"): prefill then decode, the emulated backend's logits
    against the CPU backend's; decode graphs against eager steps."""
    from devtools.tiny import make_checkpoint
    from edgenano.convert import convert_checkpoint
    from edgenano.engine import NativeBackend
    from edgenano.gguf_model import load_gguf

    kwide = dict(hybrid_override_pattern="M-*-M-", hidden_size=256, intermediate_size=512,
                 num_attention_heads=4, num_key_value_heads=2, head_dim=64, mamba_num_heads=8,
                 mamba_head_dim=32, n_groups=2, ssm_state_size=16)
    prompt = np.random.default_rng(1).integers(16, 512, size=80).tolist()

    def run(path, eng, split, graphs=1):
        b = NativeBackend(load_gguf(path), path, n_ctx=128, kv_type="f16", engine=eng)
        b.impl.set_graph_mode(graphs)
        s = b.new_state()
        out = [b.eval(s, prompt[:split])] + [b.eval(s, [t]) for t in prompt[split:]]
        return np.array(out)

    with tempfile.TemporaryDirectory() as tmp:
        for name, cfg, over, outtypes in (("kwide", "mix", kwide, ("f32", "q4_k_m")),
                                          ("moe", "moe", {}, ("f32",))):
            ckpt = make_checkpoint(Path(tmp) / f"hf_{name}", cfg, **over)
            for outtype in outtypes:
                path = convert_checkpoint(ckpt, Path(tmp) / f"{name}_{outtype}.gguf", outtype)
                for split, what in ((70, "prefill 70 (chunked SSD) + 10 decode"),
                                    (20, "prefill 20 + 60 decode")):
                    emu, cpu = run(path, engine, split), run(path, "cpu", split)
                    line(f"model {name} {outtype} vs cpu", what, emu, cpu)
                if name != "moe":
                    line(f"model {name} {outtype} graphs vs eager", "prefill 20 + 60 decode",
                         run(path, engine, 20, 1), run(path, engine, 20, 0))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--no-models", action="store_true")
    ap.add_argument("--dev", action="store_true", help="the kernels on a GPU (_C.cuda_dev)")
    a = ap.parse_args()
    E = C.cuda_dev if a.dev else C.cuda_emu
    print(f"CUDA kernels on {E.__name__.split('.')[-1]} vs their CPU twins (_C.kernels)")
    kernels(E)
    if not a.no_models:
        models("cuda" if a.dev else "cuda_emu")


if __name__ == "__main__":
    main()
