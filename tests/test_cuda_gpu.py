"""The CUDA kernels and backend on a GPU: every kernel test and model test of test_cuda_emu.py,
rerun on the device (_C.cuda_dev, Model(backend="cuda")). Marked gpu; skipped where this build
has no CUDA or the machine no usable device (bench/gpu_check.sh runs them on a lent GPU)."""

from __future__ import annotations

import pytest

from . import test_cuda_emu as emu_tests
from .test_cuda_emu import (  # noqa: F401  (rerun here, on the device)
    kwide,
    moe_file,
    test_attention,
    test_causal_conv,
    test_decode_graph_off_while_profiling,
    test_decode_graph_replays_the_eager_bits,
    test_decode_graph_steps_eagerly_while_scratch_grows,
    test_embed,
    test_gated_rmsnorm,
    test_gather_scatter_rows_exact,
    test_gemm,
    test_kv_store_exact,
    test_matmul_auto_switches_at_gemm_min_tokens,
    test_matvec,
    test_model_api_selects_the_backend,
    test_model_batched_decode_matches_solo,
    test_model_chunked_prefill_against_cpu_backend,
    test_model_emulated_against_cpu_backend,
    test_model_prefill_decode_vs_reference,
    test_model_snapshots_and_state_export,
    test_moe_model_on_the_device,
    test_relu2_softplus,
    test_rmsnorm,
    test_ssm_scan,
    test_ssm_scan_chunked,
    test_stale_decode_graph_is_caught,
)

C = pytest.importorskip("edgenano._C")
DEV = getattr(C, "cuda_dev", None)

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(DEV is None, reason="this edgenano was built without CUDA"),
    pytest.mark.skipif(DEV is not None and not DEV.available(),
                       reason=f"no usable CUDA device: {DEV.reason() if DEV else ''}"),
]


@pytest.fixture(autouse=True)
def on_device(monkeypatch):
    monkeypatch.setattr(emu_tests, "E", DEV)
    monkeypatch.setattr(emu_tests, "ENGINE", "cuda")
