#!/usr/bin/env bash
# The CUDA backend on a lent GPU (H100/H200, sm_90), in about 8 minutes: build for sm_90 only,
# run the GPU tests (every emulated kernel and model test again on the device), compute-sanitizer
# memcheck and racecheck on a few kernel tests where it is installed, then time decode (16 and
# 4096 tokens of context) and prefill (512, 4096) on a 9B-v2-shaped random-weight Q4_K_M file
# (llama.cpp's quantizer where llama-cpp-python is installed, else our converter's per-tensor
# types; bench/make_gguf.py prints which) and compare decode's achieved GB/s with the device's
# measured copy bandwidth. Decode runs as CUDA graph replays (EDGENANO_CUDA_GRAPHS=0: eagerly).
#   bash bench/gpu_check.sh [workdir]      (PYTHON=... to pick the interpreter)
# The lent machines' image has nvcc, CMake, nanobind, scikit-build-core, numpy, torch and pytest
# but not gguf (nor any network): carry its wheel in .whl/ (pip download --no-deps gguf, see the
# device notes) and this script installs what it finds there.
set -euo pipefail
cd "$(dirname "$0")/.."
W=${1:-/tmp/edgenano-gpu}
PY=${PYTHON:-python3}
mkdir -p "$W"
if ls .whl/*.whl >/dev/null 2>&1; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --target "$W/site" .whl/*.whl
  export PYTHONPATH="$W/site${PYTHONPATH:+:$PYTHONPATH}"
fi
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.memory --format=csv

t0=$(date +%s)
EDGENANO_CUDA=on CMAKE_BUILD_PARALLEL_LEVEL=$(nproc) "$PY" -m pip install -q --no-deps \
  --no-build-isolation -C cmake.define.CMAKE_CUDA_ARCHITECTURES=90 -C build-dir="$W/build" -e .
echo "== build (sm_90): $(($(date +%s) - t0)) s"
"$PY" -c "import edgenano._C as C; assert C.cuda_dev.available(), C.cuda_dev.reason()"

echo "== GPU tests"
"$PY" -m pytest -q -p no:cacheprovider -m gpu tests/test_cuda_gpu.py

SAN=$(command -v compute-sanitizer || ls /usr/local/cuda*/bin/compute-sanitizer 2>/dev/null | head -1 || true)
if [ -n "$SAN" ]; then
  for tool in memcheck racecheck; do
    echo "== compute-sanitizer $tool"
    "$SAN" --tool "$tool" --error-exitcode 9 "$PY" -m pytest -q -p no:cacheprovider -m gpu \
      tests/test_cuda_gpu.py -k "(test_matvec and Q4_K-1) or (test_gemm and Q6_K-70) or \
      (test_attention and Q8_0-3-254) or test_ssm_scan or test_rmsnorm or test_causal_conv or \
      test_gather_scatter"
  done
else
  echo "== compute-sanitizer not found: skipped"
fi

MODEL="$W/9b-v2-q4_k_m.gguf"
if [ -f "$MODEL" ]; then
  echo "== model: $MODEL (made earlier)"
else
  echo "== model: 9B-v2 shapes, q4_k_m"
  "$PY" bench/make_gguf.py 9b-v2 q4_k_m "$MODEL"
fi

echo "== timing"
"$PY" - "$MODEL" <<'EOF'
import sys
import time

import numpy as np

import edgenano._C as C
from edgenano.engine import NativeBackend
from edgenano.gguf_model import load_gguf

sys.path.insert(0, "bench")
from bench_engine import step_bytes  # noqa: E402

path = sys.argv[1]
g = load_gguf(path)
dev = C.cuda_dev
copy_bw = dev.copy_bandwidth(1 << 30, 10)  # bytes read + written per second
print(f"device copy bandwidth: {copy_bw / 1e9:.0f} GB/s (read + write)")
ids = np.random.default_rng(0).integers(16, g.config.n_vocab, size=4096 + 64).tolist()
for kv, kv_bytes in (("f16", 2.0), ("q8_0", 34 / 32)):
    free0 = dev.mem_info()[0]
    b = NativeBackend(g, path, n_ctx=4096 + 64, kv_type=kv, n_batch=512, engine="cuda")
    loaded = free0 - dev.mem_info()[0]
    for n_prompt in (512, 4096):
        s = b.new_state()
        t = time.perf_counter()
        b.eval(s, ids[:n_prompt])
        dt = time.perf_counter() - t
        print(f"[{kv}] prefill {n_prompt}: {n_prompt / dt:.0f} tok/s")
    for ctx in (16, 4096):
        s = b.new_state()
        b.eval(s, ids[:ctx])
        b.eval(s, ids[ctx:ctx + 2])  # warm
        n = 32
        t = time.perf_counter()
        for i in range(n):
            b.eval(s, [ids[ctx + 2 + i]])
        dt = (time.perf_counter() - t) / n
        nbytes = sum(step_bytes(path, ctx, kv_bytes).values())
        print(f"[{kv}] decode at {ctx}: {1 / dt:.1f} tok/s, {nbytes / dt / 1e9:.0f} GB/s "
              f"= {nbytes / dt / copy_bw:.0%} of copy bandwidth")
    print(f"[{kv}] decode graphs: {b.impl.graph_stats()}")
    used = free0 - dev.mem_info()[0]
    per_tok = (step_bytes(path, 1, kv_bytes)["kv"] - step_bytes(path, 0, kv_bytes)["kv"])
    proj = used + (131072 - (4096 + 64)) * per_tok
    print(f"[{kv}] device memory: {loaded / 2**30:.2f} GiB after load, {used / 2**30:.2f} GiB at "
          f"4160 tokens; at 128k context (KV grows {per_tok / 1024:.1f} KiB a token): "
          f"{proj / 2**30:.2f} GiB (projected)")
    del b, s
EOF
