"""The native C++ engine (`edgenano._C`) behind the backend interface of edgenano.backends:
new_state, eval, logits, state.copy, export_state / import_state. `edgenano.Model(path,
backend="native")` is the way in; this module is the thin layer over the extension."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import numpy as np
from gguf import GGMLQuantizationType as QT

from .backend_base import as_ids, check_context, default_threads
from .gguf_model import GGUFError, GGUFModel

KV_TYPES = {"f16": QT.F16, "q8_0": QT.Q8_0, "f32": QT.F32}  # f32: exact comparisons
CONFIG_KEYS = ("n_vocab", "n_embd", "n_layer", "layer_kinds", "n_ff", "n_head", "n_head_kv",
               "head_dim", "ssm_d_conv", "ssm_d_state", "ssm_n_group", "ssm_d_inner",
               "ssm_n_head", "eps", "n_expert", "n_expert_used", "n_ff_shexp", "moe_latent",
               "expert_weights_norm")


class NativeState:
    """A sequence on the native engine: conv + SSM state per Mamba layer, KV per attention layer."""

    def __init__(self, backend: NativeBackend, impl):
        self.backend, self.impl = backend, impl

    @property
    def n_past(self) -> int:
        return self.impl.n_past

    @property
    def nbytes(self) -> int:
        return self.impl.nbytes

    def copy(self) -> NativeState:
        """An independent snapshot: continuing both gives identical results."""
        return NativeState(self.backend, self.backend.impl.copy_state(self.impl))


class NativeBackend:
    """nemotron_h on edgenano's C++ engine: weights mmapped from the GGUF, never copied (or read
    into memory with use_mmap=False)."""

    name = "native"

    def __init__(self, gguf_model: GGUFModel, path: str | Path | None = None, *,
                 n_ctx: int = 8192, n_threads: int | None = None, n_batch: int = 512,
                 kv_type: str = "f16", use_mmap: bool = True, engine: str = "cpu"):
        """engine: the C++ backend the model runs on (_C.backend_registry(): "cpu", "cuda",
        "cuda_emu" the CUDA backend on the SIMT emulator, for tests)."""
        from . import _C

        if engine != "cpu":
            self.name = engine

        if kv_type not in KV_TYPES:
            raise ValueError(f"kv_type must be one of {sorted(KV_TYPES)}, not {kv_type!r}")
        self.gguf, self.path = gguf_model, str(path or gguf_model.path)
        self.n_ctx, self.n_vocab = n_ctx, gguf_model.config.n_vocab
        cfg = {k: v for k, v in asdict(gguf_model.config).items() if k in CONFIG_KEYS}
        cfg["expert_scale"] = gguf_model.config.expert_scale
        tensors = [(t.name, int(t.type), list(t.ne), int(t.offset), int(t.nbytes))
                   for t in gguf_model.tensors.values()]
        try:
            self.impl = _C.Model(self.path, cfg, tensors, n_ctx, n_threads or default_threads(),
                                 n_batch, int(KV_TYPES[kv_type]), engine, use_mmap)
        except (ValueError, RuntimeError) as e:  # the file's content, or reading it
            raise GGUFError(f"{self.path}: {e}") from None

    def new_state(self) -> NativeState:
        return NativeState(self, self.impl.new_state())

    def eval(self, state: NativeState, ids) -> np.ndarray:
        """Feed ids (prefill in n_batch chunks); the last token's logits (n_vocab,) float32."""
        ids = as_ids(ids)
        check_context(state.n_past, ids.size, self.n_ctx)
        if state.backend is not self:
            raise ValueError("this state was made by another model")
        return self.impl.eval(state.impl, ids, False)

    def eval_batch(self, states: list[NativeState], ids) -> np.ndarray:
        """One decode step for several sequences: ids[b] fed into states[b]; logits (B,
        n_vocab). The matmuls run over the B rows at once (weights read once per step)."""
        ids = as_ids(ids)
        if len(states) != ids.size or not states:
            raise ValueError(f"eval_batch: {ids.size} ids for {len(states)} states")
        for st in states:
            check_context(st.n_past, 1, self.n_ctx)
            if st.backend is not self:
                raise ValueError("this state was made by another model")
        if len({id(st) for st in states}) != len(states):
            raise ValueError("eval_batch: the same state twice in one batch")
        return self.impl.eval_batch([st.impl for st in states], ids)

    def logits(self, ids) -> np.ndarray:
        """Logits (T, n_vocab) of every position of ids, from an empty state."""
        ids = as_ids(ids)
        check_context(0, ids.size, self.n_ctx)
        return self.impl.eval(self.impl.new_state(), ids, True)

    def export_state(self, state: NativeState) -> dict[str, np.ndarray]:
        """The state as named arrays for a state file (conv.i, ssm.i, k.i, v.i, kv_type)."""
        if state.backend is not self:
            raise ValueError("this state was made by another model")
        return dict(self.impl.export_state(state.impl))

    def import_state(self, tensors: dict[str, np.ndarray], tokens: list[int]) -> NativeState:
        """A state rebuilt from export_state's arrays; misshapen or missing ones are refused."""
        arrays = {k: np.ascontiguousarray(v) for k, v in tensors.items()}
        try:
            impl = self.impl.import_state(arrays, [int(t) for t in tokens])
        except ValueError as e:
            raise ValueError(f"cannot restore this state: {e}") from None
        return NativeState(self, impl)

    @property
    def profiling(self) -> bool:
        """Whether every engine operation is timed (also on with EDGENANO_PROFILE=1)."""
        return self.impl.profiling

    @profiling.setter
    def profiling(self, on: bool) -> None:
        self.impl.profiling = bool(on)

    def profile(self, reset: bool = False) -> list[dict]:
        """Time per operation since the last reset, longest first: op, calls, seconds, share
        of the total, and for matmuls the weight bytes read with their rate in GB/s (what bounds
        decode) and the arithmetic rate in GFLOP/s (what bounds prefill)."""
        rows = [dict(op=op, calls=n, seconds=s, bytes=b, flops=f)
                for op, n, s, b, f in self.impl.profile(reset)]
        total = sum(r["seconds"] for r in rows) or 1.0
        for r in rows:
            r["share"] = r["seconds"] / total
            for key, rate in (("bytes", "gb_per_s"), ("flops", "gflop_per_s")):
                r[rate] = r[key] / r["seconds"] / 1e9 if r[key] and r["seconds"] else None
        return sorted(rows, key=lambda r: -r["seconds"])


def format_profile(rows: list[dict]) -> str:
    """The profile as a table."""
    lines = [f"{'op':28s}{'calls':>8s}{'seconds':>10s}{'share':>8s}{'GB/s':>8s}{'GFLOP/s':>9s}"]
    for r in rows:
        bw = f"{r['gb_per_s']:8.1f}" if r["gb_per_s"] else f"{'':8s}"
        fl = f"{r['gflop_per_s']:9.1f}" if r["gflop_per_s"] else ""
        lines.append(f"{r['op']:28s}{r['calls']:8d}{r['seconds']:10.3f}{r['share']:8.1%}{bw}{fl}")
    return "\n".join(lines)
