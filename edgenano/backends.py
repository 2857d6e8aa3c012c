"""Backends behind `edgenano.Model`: each gives new_state(), eval(state, ids) -> last logits,
export_state / import_state, and states with copy(). "native" is our C++ engine (engine.py),
"reference" the NumPy oracle, "llama.cpp" llama-cpp-python on the same file (so users can switch
engines and we can compare them). `make_backend` picks one by name."""

from __future__ import annotations

import threading

import numpy as np

from .backend_base import check_context, check_threads, default_threads
from .errors import BackendUnavailable, ContextOverflow  # noqa: F401  (re-exported)
from .layers import KINDS

BACKENDS = ("native", "reference", "llama.cpp")
STATE_ARRAYS = tuple(a.name for k in KINDS.values() for a in k.state)  # conv, ssm, k, v


class ReferenceBackend:
    """The NumPy reference (edgenano.reference): slow, exact, portable."""

    name = "reference"

    def __init__(self, gguf_model, n_ctx: int = 8192, dtype=np.float32):
        from .reference import ReferenceModel

        self.impl = ReferenceModel(gguf_model, dtype=dtype)
        self.n_ctx = n_ctx

    def new_state(self):
        return self.impl.new_state()

    def eval(self, state, ids) -> np.ndarray:
        check_context(state.n_past, len(ids), self.n_ctx)
        run = self.impl.step if len(ids) == 1 else self.impl.eval  # decode is the recurrence
        return np.asarray(run(state, ids[0] if len(ids) == 1 else list(ids)), dtype=np.float32)

    def eval_batch(self, states, ids) -> np.ndarray:
        """One decode step per sequence, as a loop (the oracle batched decode is checked
        against)."""
        return np.stack([self.eval(st, [int(t)]) for st, t in zip(states, ids, strict=True)])

    def logits(self, ids) -> np.ndarray:
        check_context(0, len(ids), self.n_ctx)
        return np.asarray(self.impl.logits(list(ids)), dtype=np.float32)

    def export_state(self, state) -> dict[str, np.ndarray]:
        out = {}
        for name in STATE_ARRAYS:
            for i, a in getattr(state, name).items():
                out[f"{name}.{i}"] = np.ascontiguousarray(a, dtype=np.float32)
        return out

    def import_state(self, tensors: dict[str, np.ndarray], tokens: list[int]):
        n_past = len(tokens)
        st = self.impl.new_state()
        for name, a in tensors.items():
            kind, i = name.split(".")
            getattr(st, kind)[int(i)] = np.array(a, dtype=self.impl.dtype)
        st.n_past = n_past
        return st


class _LlamaState:
    def __init__(self, backend, tokens=(), saved=None):
        self.backend, self.tokens, self.saved = backend, list(tokens), saved

    @property
    def n_past(self) -> int:
        return len(self.tokens)

    def copy(self) -> _LlamaState:
        with self.backend.lock:
            if self.backend._current is self:
                self.saved = self.backend.llm.save_state()
            return _LlamaState(self.backend, self.tokens, self.saved)


_llama_log = None  # the ctypes callback llama_cpp_log installed (kept alive here)


def llama_cpp_log(verbose: bool) -> None:
    """llama.cpp logs through one process-wide callback. llama-cpp-python's own lets ggml's
    warnings through even with verbose=False (it reads ggml's WARN level 3 as ERROR), so this one
    replaces it: every line when verbose, written to a copy of the stderr descriptor (which the
    redirect Llama() puts around loading does not reach), and none otherwise."""
    global _llama_log
    import ctypes
    import os

    import llama_cpp

    fd = os.dup(2) if verbose else None

    @llama_cpp.llama_log_callback
    def log(level, text, user_data):
        if fd is not None:
            os.write(fd, text)

    llama_cpp.llama_log_set(log, ctypes.c_void_p(0))
    _llama_log = log


class LlamaCppBackend:
    """llama-cpp-python on the same GGUF. One llama.cpp context; a state is loaded into it when
    used (llama.cpp's own save_state/load_state), so several states can share it."""

    def __init__(self, path: str, n_ctx: int, n_threads: int | None, verbose: bool = False,
                 use_mmap: bool = True):
        try:
            import llama_cpp
        except ImportError as e:
            raise ImportError("backend='llama.cpp' needs llama-cpp-python: "
                              "pip install llama-cpp-python==0.3.36") from e

        if _llama_log is None or not verbose:
            llama_cpp_log(verbose)
        self.llm = llama_cpp.Llama(model_path=str(path), n_ctx=n_ctx,
                                   n_threads=n_threads or default_threads(), n_batch=512,
                                   use_mmap=use_mmap, verbose=False)
        self.n_ctx = n_ctx
        self._current: _LlamaState | None = None
        self.lock = threading.RLock()  # one llama.cpp context, shared by every state

    def new_state(self) -> _LlamaState:
        return _LlamaState(self)

    def _activate(self, state: _LlamaState) -> None:
        if self._current is state:
            return
        if self._current is not None:
            self._current.saved = self.llm.save_state()
        if state.saved is None:
            self.llm.reset()
            self.llm._ctx.memory_clear(True) if hasattr(self.llm._ctx, "memory_clear") else None
        else:
            self.llm.load_state(state.saved)
        self._current = state

    def eval(self, state: _LlamaState, ids) -> np.ndarray:
        check_context(state.n_past, len(ids), self.n_ctx)
        with self.lock:
            self._activate(state)
            self.llm.eval(list(ids))
            state.tokens.extend(ids)
            state.saved = None
            n_vocab = self.llm.n_vocab()
            return np.ctypeslib.as_array(self.llm._ctx.get_logits(), shape=(n_vocab,)).copy()

    def export_state(self, state: _LlamaState) -> dict[str, np.ndarray]:
        saved = state.copy().saved if state.n_past else None
        blob = b"" if saved is None else bytes(saved.llama_state)
        return {"llama_cpp.state": np.frombuffer(blob, dtype=np.int8).copy()}  # GGUF has I8, not U8

    def import_state(self, tensors: dict[str, np.ndarray], tokens: list[int]) -> _LlamaState:
        import llama_cpp

        blob = tensors["llama_cpp.state"].tobytes()
        if not tokens:
            return self.new_state()
        ids = np.zeros(self.n_ctx, dtype=np.intc)
        ids[: len(tokens)] = tokens
        saved = llama_cpp.LlamaState(input_ids=ids,
                                     scores=np.zeros((1, self.llm.n_vocab()), dtype=np.single),
                                     n_tokens=len(tokens), llama_state=blob,
                                     llama_state_size=len(blob), seed=0)
        return _LlamaState(self, tokens, saved)


def native_registry() -> dict[str, tuple[bool, str]]:
    """The C++ engine's own backends, {name: (available, reason)}, as the extension reports them
    (`_C.backend_registry()`); empty without the extension or where it does not report them."""
    try:
        from . import _C
    except ImportError:
        return {}
    registry = getattr(_C, "backend_registry", None)
    return {} if registry is None else {k: (bool(v[0]), str(v[1])) for k, v in registry().items()}


def check_available(kind: str) -> None:
    """BackendUnavailable, with the reason, for a backend this machine or build cannot run;
    ValueError for a name no backend has."""
    if kind in BACKENDS:
        return
    registry = native_registry()
    if kind != "cuda" and kind not in registry:
        raise ValueError(f"unknown backend {kind!r}: use 'native', 'reference' or 'llama.cpp'")
    ok, reason = registry.get(kind, (False, "this build of edgenano has no CUDA backend"))
    if not ok:
        raise BackendUnavailable(f"backend {kind!r} is not available: {reason}")
    raise BackendUnavailable(f"backend {kind!r} is built into the native engine, but edgenano "
                             "cannot select it by name yet; open the model with backend='native'")


def make_backend(kind: str, gguf_model, path: str, *, n_ctx: int, n_threads: int | None,
                 verbose: bool = False, **native_options):
    """native_options (n_batch, kv_type) tune the native engine; other backends refuse them;
    use_mmap False (native, llama.cpp) reads the weights into memory instead of mapping them.
    verbose lets llama.cpp's own log through (backend "llama.cpp")."""
    check_available(kind)
    n_threads = check_threads(n_threads)
    use_mmap = native_options.pop("use_mmap", True)
    if native_options and kind != "native":
        raise ValueError(f"{sorted(native_options)} only apply to backend='native'")
    if kind == "reference":
        return ReferenceBackend(gguf_model, n_ctx)
    if kind == "llama.cpp":
        return LlamaCppBackend(path, n_ctx, n_threads, verbose, use_mmap=use_mmap)
    if kind == "native":
        from .engine import NativeBackend

        return NativeBackend(gguf_model, path, n_ctx=n_ctx, n_threads=n_threads,
                             use_mmap=use_mmap, **native_options)
    raise AssertionError(kind)
