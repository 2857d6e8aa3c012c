#!/usr/bin/env bash
# Builds llama.cpp's own `llama-server` from the llama.cpp source vendored in llama-cpp-python's
# sdist (the same llama.cpp our tests load), for bench/bench_server.py only: never in CI.
#   bash bench/build_llama_server.sh [OUT_DIR]    # prints the binary's path; ~10 min on 2 cores
set -euo pipefail
VER=0.3.36
OUT=${1:-${EDGENANO_CACHE:-$HOME/.cache/edgenano}/llama-server-$VER}
BIN=$OUT/build/bin/llama-server
if [[ -x $BIN ]]; then echo "$BIN"; exit 0; fi
mkdir -p "$OUT"
SDIST=${EDGENANO_LLAMA_SDIST:-}
if [[ -z $SDIST ]]; then
  pip download -q --no-deps --no-binary llama-cpp-python "llama-cpp-python==$VER" -d "$OUT" >&2
  SDIST=$OUT/llama_cpp_python-$VER.tar.gz
fi
tar -xzf "$SDIST" -C "$OUT"
SRC=$OUT/llama_cpp_python-$VER/vendor/llama.cpp
# AMX off as in devtools/install_test_env.sh (it dies with SIGILL in some VMs that report it).
cmake -S "$SRC" -B "$OUT/build" -DCMAKE_BUILD_TYPE=Release -DLLAMA_BUILD_SERVER=ON \
  -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_CURL=OFF -DLLAMA_OPENSSL=OFF \
  -DGGML_NATIVE=ON -DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF >&2
cmake --build "$OUT/build" --target llama-server -j "$(nproc)" >&2
echo "$BIN"
