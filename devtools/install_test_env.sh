#!/usr/bin/env bash
# Installs edgenano with its test extra: torch's CPU build first (pinned: a bare `torch` pulls a
# multi-GB CUDA build), then the package, then a check that the llama-cpp-python it got runs on
# this CPU.
#
# llama-cpp-python builds llama.cpp from source with -march=native. On Intel CPUs with AMX
# (Sapphire/Emerald Rapids) ggml then compiles its AMX matmul backend, and in virtual machines
# whose kernel does not hand the tile state to the process that backend dies with SIGILL on its
# first `tilezero` (measured on this project's CI machines: every llama.cpp test then crashes).
# We build it without AMX (AVX-512 and VNNI stay). pip caches the built wheel by version only,
# so a wheel built earlier with other flags, or on another CPU, is reused silently: the check at
# the end evaluates a quantized matmul through llama.cpp in a subprocess and rebuilds from source
# when that dies or when the build reports AMX.
set -euo pipefail
cd "$(dirname "$0")/.."

export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_INPUT=1
if [ "$(uname -m)" = x86_64 ]; then  # the flags exist on x86 compilers only
  NO_AMX="-mno-amx-tile -mno-amx-int8 -mno-amx-bf16"
  export CMAKE_ARGS="${CMAKE_ARGS:-} -DCMAKE_C_FLAGS='${NO_AMX}' -DCMAKE_CXX_FLAGS='${NO_AMX}'"
fi

python3 -m pip install -q torch==2.13.0
python3 -m pip install -q -e ".[test]"

if ! python3 devtools/check_llama_cpp.py; then
  echo "llama-cpp-python does not run on this CPU: rebuilding it from source (about 10 min)" >&2
  # Out of pip's wheel cache too, so the next install takes the rebuilt wheel, not the bad one.
  python3 -m pip cache remove 'llama_cpp_python*' >/dev/null 2>&1 || true
  python3 -m pip install -q --force-reinstall --no-deps --no-binary llama-cpp-python \
    llama-cpp-python==0.3.36
  python3 devtools/check_llama_cpp.py
fi
