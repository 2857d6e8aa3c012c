"""Does the installed llama-cpp-python run on this CPU? Exit 0 if it does, 1 if not (and why).

Writes a small random-weight nemotron_h Q4_0 GGUF and evaluates 64 tokens through llama.cpp in a
subprocess (a wheel built for another CPU, or ggml's AMX backend in a VM that does not grant the
tile state, dies there with SIGILL), and refuses a build that reports AMX. Used by
devtools/install_test_env.sh.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

CHILD = """
import sys, llama_cpp
llm = llama_cpp.Llama(sys.argv[1], n_ctx=128, n_batch=64, n_threads=2, verbose=False)
llm.eval(list(range(300, 364)))
print("ok", flush=True)
"""


def system_info() -> str:
    import llama_cpp

    return llama_cpp.llama_print_system_info().decode(errors="replace")


def main() -> int:
    try:
        info = system_info()
    except Exception as e:  # noqa: BLE001 - any failure to import means "does not run"
        print(f"llama-cpp-python does not import: {e}", file=sys.stderr)
        return 1
    if "AMX_INT8 = 1" in info:
        print("llama-cpp-python was built with AMX (it crashes in VMs without tile state)",
              file=sys.stderr)
        return 1
    spec = importlib.util.spec_from_file_location("make_gguf", ROOT / "bench" / "make_gguf.py")
    mk = importlib.util.module_from_spec(spec)
    sys.modules["make_gguf"] = mk  # dataclasses look their module up
    spec.loader.exec_module(mk)
    shape = mk.Shape(n_embd=256, n_ff=512, n_head=4, n_head_kv=2, head_dim=64, ssm_n_head=8,
                     ssm_head_dim=32, ssm_n_group=2, ssm_d_state=16, n_vocab=1024, pattern="M*-")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "check.gguf"
        mk.SHAPES["check"] = shape
        mk.write("check", "q4_0", path, verbose=False)
        res = subprocess.run([sys.executable, "-c", CHILD, str(path)], capture_output=True,
                             text=True, timeout=300)
    if res.returncode != 0 or "ok" not in res.stdout:
        how = f"signal {-res.returncode}" if res.returncode < 0 else f"exit {res.returncode}"
        print(f"llama-cpp-python failed a Q4_0 prefill on this CPU ({how}): "
              f"{res.stderr.strip().splitlines()[-1:] or ''}", file=sys.stderr)
        return 1
    print("llama-cpp-python runs on this CPU")
    return 0


if __name__ == "__main__":
    sys.exit(main())
