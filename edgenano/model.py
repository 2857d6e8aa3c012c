"""`edgenano.Model`: a GGUF, its tokenizer and chat template, and an engine to run it.

The model layer: file, tokenizer, backend and a public state API (new, copy, export, import).
Chat, generation and sessions sit above it and use only that API; the chat-shaped methods here
(generate, chat, create_*completion) import them when called. The names follow what users know:
llama-cpp-python's (`create_chat_completion`, OpenAI dicts) and Hugging Face's
(`apply_chat_template`, `enable_thinking`).
"""

from __future__ import annotations

import threading
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .backends import make_backend
from .errors import TokenizerError
from .tokenizer import Tokenizer

DEFAULT_N_CTX = 8192  # the default context: the model's trained one, at most this


@dataclass
class ModelState:
    """What `Model.save_state()` returns: the completion state and the tokens it holds
    (llama-cpp-python's LlamaState)."""

    state: object
    tokens: list[int]


class Model:
    """Load a nemotron_h GGUF. `path=None` opens the built-in tiny reasoner.

    backend: "native" (edgenano's C++ engine), "reference" (NumPy, slow and exact) or "llama.cpp"
    (llama-cpp-python on the same file); "cuda" (the C++ engine on a GPU) or "cuda_emu" (its CUDA
    code emulated on the CPU, for tests). n_ctx defaults to the trained context, at most 8192;
    more than the trained context warns. n_batch (prefill chunk, default 512) and kv_type ("f16",
    "q8_0" or "f32") tune the native engine. use_mmap (default True) maps the weights from the
    file, shared with the page cache; False reads them into memory (as llama.cpp's --no-mmap), so
    the file may then change or go away. With AVX-512 VNNI the native engine copies its Q4_0 /
    Q5_0 / Q8_0 / Q4_K matrices into its kernels' layout at load (EDGENANO_REPACK=0: not). With a mapping, a file changed on disk after loading is
    a GGUFError at the next evaluation. chat_template replaces the GGUF's own; verbose lets
    llama.cpp's log through.

    >>> m = Model("model.gguf", n_threads=2, n_ctx=8192)
    >>> s = m.new_state(); last = m.eval(s, ids); s2 = s.copy(); every = m.logits(ids)
    """

    def __init__(self, path: str | Path | None = None, backend: str = "native", *,
                 n_ctx: int | None = None, n_threads: int | None = None,
                 chat_template: str | None = None, verbose: bool = False,
                 use_mmap: bool = True, **native_options):
        from .backend_base import check_threads
        from .gguf_model import load_gguf

        check_threads(n_threads)  # before the load, which can take a while
        if path is None:
            from .models import default_model_path

            path = default_model_path()
        self.path = str(path)
        self._stamp = _stamp(self.path)  # before reading: a change during the load shows too
        self.gguf = load_gguf(self.path)
        self.config = self.gguf.config
        try:
            self.tokenizer = Tokenizer(self.gguf.metadata)
        except TokenizerError as e:
            raise TokenizerError(f"{self.path}: {e}") from None
        self.chat_template = chat_template or self.tokenizer.chat_template
        self.backend_name = backend
        if not isinstance(use_mmap, bool):
            raise TypeError(f"use_mmap must be True or False, not {use_mmap!r}")
        if not use_mmap and backend == "reference":
            raise ValueError("use_mmap=False applies to backend='native' and 'llama.cpp'; the "
                             "reference reads the mapped file")
        self.use_mmap = use_mmap
        trained = getattr(self.config, "n_ctx_train", 0) or 0
        if n_ctx is None:
            n_ctx = min(trained or DEFAULT_N_CTX, DEFAULT_N_CTX)
        if isinstance(n_ctx, bool) or not isinstance(n_ctx, int) or not 1 <= n_ctx <= 1 << 24:
            raise ValueError(f"n_ctx must be an int between 1 and {1 << 24}, got {n_ctx!r}")
        self.n_ctx = n_ctx
        if trained and n_ctx > trained:
            warnings.warn(f"n_ctx={n_ctx} is more than the {trained} tokens {Path(self.path).name}"
                          " was trained on; quality past that is not known", stacklevel=2)
        if not use_mmap:
            native_options["use_mmap"] = False
        self.backend = make_backend(backend, self.gguf, self.path, n_ctx=n_ctx,
                                    n_threads=n_threads, verbose=verbose, **native_options)
        if not use_mmap:
            _ = self.fingerprint  # reads the file (a KiB per tensor): now, while it is as loaded
        self.stop_ids = self._stop_ids()
        # Weights are shared and every state is its own, but a backend runs one forward at a time
        # (the native engine's thread pool already uses every core; llama.cpp has one context).
        self._lock = threading.Lock()
        self._ctx: ModelState | None = None  # create_completion's state (llama-cpp-python's)

    @classmethod
    def from_pretrained(cls, path: str | Path, *, outtype: str = "q8_0", **kwargs) -> Model:
        """A GGUF file, or a Hugging Face checkpoint directory converted (once, with a progress
        bar) into the cache as `outtype`, the same way as the built-in model."""
        from .models import resolve_model

        return cls(resolve_model(path, outtype=outtype), **kwargs)

    @property
    def name(self) -> str:
        return Path(self.path).name
    def _stop_ids(self) -> frozenset[int]:
        """End of turn: eos, </s> and the turn markers <SPECIAL_11>/<SPECIAL_12> (9B-v2 stops
        on 2, 11 and 12), looked up by text so other vocabularies work too."""
        ids = {self.tokenizer.eos_id} if self.tokenizer.eos_id is not None else set()
        for name in ("</s>", "<SPECIAL_11>", "<SPECIAL_12>"):
            if name in self.tokenizer.tokens:
                ids.add(self.tokenizer.tokens.index(name))
        return frozenset(ids)

    @property
    def fingerprint(self) -> str:
        """Identity of this model's weights, stamped into saved chat states."""
        if not hasattr(self, "_fingerprint"):
            from .state_file import model_fingerprint

            self._fingerprint = model_fingerprint(self.gguf)
        return self._fingerprint

    # -- the engine surface and its states --------------------------------------------------
    def new_state(self):
        """An empty sequence: recurrent state per Mamba layer, KV cache per attention layer."""
        return self.backend.new_state()

    def copy_state(self, state):
        """An independent snapshot of `state` (continuing both gives identical results)."""
        return state.copy()

    def export_state(self, state) -> dict[str, np.ndarray]:
        """`state` as named arrays (what a chat state file holds; the names are the backend's:
        conv.i, ssm.i, k.i, v.i for ours)."""
        return self.backend.export_state(state)

    def import_state(self, tensors: dict[str, np.ndarray], tokens: Sequence[int]):
        """A state rebuilt from `export_state`'s arrays and the tokens it holds; arrays that do
        not fit this model (names, dtypes, shapes; another model's, or damaged) and tokens out
        of the vocabulary or past n_ctx are refused (ValueError saying which)."""
        tokens = self.check_ids(tokens)
        if len(tokens) > self.n_ctx:
            raise ValueError(f"the state holds {len(tokens)} tokens, more than n_ctx="
                             f"{self.n_ctx}; open the model with a larger n_ctx")
        self._check_state_arrays(tensors, len(tokens))
        return self.backend.import_state(tensors, tokens)

    def _check_state_arrays(self, tensors, n_past: int) -> None:
        """The arrays are exactly those this model's states export, with the same dtypes and
        shapes (per-token ones with n_past rows); None in a shape is checked by the backend (the
        native KV row width in bytes, the inside of llama.cpp's blob)."""
        if not isinstance(tensors, dict):
            raise TypeError(f"state arrays must be a dict of name -> array, got "
                            f"{type(tensors).__name__}")
        want = self._state_layout(n_past)
        if set(tensors) != set(want):
            missing, extra = sorted(set(want) - set(tensors)), sorted(set(tensors) - set(want))
            raise ValueError(f"the state's arrays are not this model's: missing {missing[:4]}, "
                             f"unexpected {extra[:4]}: the state is another model's, or damaged")
        for name, (dtype, shape) in sorted(want.items()):
            a = tensors[name]
            if not isinstance(a, np.ndarray):
                raise TypeError(f"state array {name!r} is a {type(a).__name__}, not an ndarray")
            if a.dtype != dtype or a.ndim != len(shape) or any(
                    d is not None and d != n for d, n in zip(shape, a.shape)):
                show = "(" + ", ".join("*" if d is None else str(d) for d in shape) + \
                    ("," if len(shape) == 1 else "") + ")"
                raise ValueError(f"state array {name!r} is {a.dtype} {a.shape}; this model keeps "
                                 f"{np.dtype(dtype)} {show} for {n_past} tokens: the state is "
                                 "another model's, or damaged")

    def _state_layout(self, n_past: int) -> dict[str, tuple[np.dtype, tuple]]:
        """name -> (dtype, shape) of the arrays a state of n_past tokens exports."""
        empty = self.export_state(self.new_state())
        if "llama_cpp.state" in empty:
            return {"llama_cpp.state": (np.dtype(np.int8), (None,))}
        out = {n: (a.dtype, ((n_past,) + a.shape[1:]) if n.split(".")[0] in ("k", "v")
                   else a.shape) for n, a in empty.items()}
        if n_past:  # the native engine exports KV caches only once they hold tokens
            for i, kind in enumerate(self.config.layer_kinds):
                for n in (f"k.{i}", f"v.{i}"):
                    if kind == "attention" and n not in out:
                        out[n] = (np.dtype(np.int8), (n_past, None))
        return out

    def eval(self, state, token_ids: Sequence[int]) -> np.ndarray:
        """Feed tokens into `state`; the logits after the last one (float32, n_vocab)."""
        ids = self.check_ids(token_ids)
        self.check_file()
        with self._lock:
            return self.backend.eval(state, ids)

    def eval_batch(self, states: Sequence, token_ids: Sequence[int]) -> np.ndarray:
        """One decode step for several sequences: token_ids[b] fed into states[b] (distinct
        states); their logits (B, n_vocab) float32. The native engine runs the matrix products
        over the batch, so the weights stream once per step for all B; other backends loop."""
        states = list(states)
        ids = self.check_ids(token_ids)
        if len(ids) != len(states) or not states:
            raise ValueError(f"eval_batch: {len(ids)} token ids for {len(states)} states")
        self.check_file()
        with self._lock:
            if hasattr(self.backend, "eval_batch"):
                return self.backend.eval_batch(states, ids)
            return np.stack([self.backend.eval(st, [t]) for st, t in zip(states, ids)])

    def check_file(self) -> None:
        """GGUFError if the model file changed on disk since it was loaded (size or modification
        time): its weights are read from a mapping of the file, so a truncated file would crash
        the process (SIGBUS) and a rewritten one give wrong logits."""
        from .errors import GGUFError

        if not self.use_mmap:  # the weights were read into memory: the file no longer matters
            return
        if _stamp(self.path) != self._stamp:
            raise GGUFError(f"{self.path}: the model file changed on disk since it was loaded; "
                            "reopen it")

    def logits(self, token_ids: Sequence[int]) -> np.ndarray:
        """Logits at every position of `token_ids`, from an empty state: (T, n_vocab)."""
        if hasattr(self.backend, "logits"):
            with self._lock:
                return self.backend.logits(list(token_ids))
        st = self.new_state()
        return np.stack([self.eval(st, [t]) for t in token_ids])

    # -- text ------------------------------------------------------------------------------
    def tokenize(self, text: str, *, add_bos: bool = False, special: bool = True) -> list[int]:
        if not isinstance(text, str):
            raise TypeError(f"tokenize() takes a str, got {type(text).__name__}")
        return self.tokenizer.encode(text, add_bos=add_bos, special=special)

    def detokenize(self, ids: Sequence[int]) -> str:
        return self.tokenizer.decode(self.check_ids(ids))

    def apply_chat_template(self, messages: list[dict], *, add_generation_prompt: bool = True,
                            enable_thinking: bool | None = None, tools: list | None = None,
                            tokenize: bool = False, **template_kwargs):
        """Render messages with the model's template, as transformers does, except that the
        reasoning mode is edgenano's: a `/think` or `/no_think` word in the last user message,
        else `enable_thinking`, else the last such word earlier, else on; it is enforced
        whatever the template reads (edgenano.template)."""
        from . import chat as chatfmt
        from .template import probe, render, render_prompt

        msgs = chatfmt.normalize_messages(messages)
        on = chatfmt.requested_thinking(msgs, explicit=enable_thinking)
        view = msgs if probe(self.chat_template).reads_switches else chatfmt.strip_switches(msgs)
        if add_generation_prompt:
            text = render_prompt(self.chat_template, view, thinking=on, tools=tools,
                                 **template_kwargs).text
        else:
            text = render(self.chat_template, view, add_generation_prompt=False,
                          enable_thinking=on, tools=tools, **template_kwargs)
        return self.tokenize(text) if tokenize else text

    # -- generation ------------------------------------------------------------------------
    def generate(self, prompt: str | Sequence[int], max_tokens: int = 256, *,
                 temperature: float = 0.0, top_p: float = 1.0, top_k: int = 0,
                 min_p: float = 0.0, repeat_penalty: float = 1.0, seed: int | None = None,
                 stop: Sequence[str] = (), stream: bool = False):
        """Continue a prompt (text or ids). Returns the text, or with stream=True a generator
        of text pieces; generation ends at a stop string, which is not part of the text."""
        from .generation import StopCutter, generate_steps
        from .sampling import SamplingParams

        ids = self.tokenize(prompt) if isinstance(prompt, str) else list(prompt)
        params = SamplingParams(temperature, top_p, top_k, min_p, repeat_penalty, seed=seed)
        state = self.new_state()
        logits = self.eval(state, ids)
        steps = generate_steps(self, state, logits, max_tokens=max_tokens, sampling=params,
                               stop_ids=self.stop_ids, history=ids)

        def pieces():
            cutter = StopCutter(stop)
            for s in steps:
                if text := cutter.feed(s.text):
                    yield text
                if cutter.hit:
                    return
            if rest := cutter.flush():
                yield rest

        return pieces() if stream else "".join(pieces())

    def chat(self, system: str | None = None, *, thinking: bool = True,
             thinking_budget: int = -1, tools: list | None = None, **settings):
        """A stateful chat session (see edgenano.session.ChatSession: grace, sampling,
        template_kwargs)."""
        from .session import ChatSession

        return ChatSession(self, system=system, thinking=thinking,
                           thinking_budget=thinking_budget, tools=tools, **settings)

    def create_chat_completion(self, messages: list[dict], **kwargs):
        """llama-cpp-python / OpenAI-shaped chat completion, with `reasoning_content` (and its
        alias `reasoning`). Arguments as llama-cpp-python 0.3.36 and OpenAI name them: tools,
        tool_choice (none, auto, required, {"type": "function", "function": {"name": ...}}),
        temperature, top_p, top_k, min_p, repeat_penalty, presence_penalty, frequency_penalty,
        logit_bias, seed, stop (removed from the answer), max_tokens / max_completion_tokens
        (None: to the end of the context), response_format (json_object, json_schema: enforced
        on the answer by constrained decoding), logprobs / top_logprobs, stream,
        stream_options={"include_usage": True}; and edgenano's: thinking_budget (or
        max_thinking_tokens), enable_thinking, chat_template_kwargs, grace. Sampling defaults
        are NVIDIA's: temperature 0.6 and top_p 0.95 with reasoning on, greedy with it off.
        Unknown arguments raise TypeError naming them."""
        from . import completions

        return completions.create_chat_completion(self, messages, **kwargs)

    def create_completion(self, prompt: str | Sequence[int], **kwargs):
        """Plain completion in OpenAI's `text_completion` shape, with llama-cpp-python's
        arguments and defaults (max_tokens 16, temperature 0.8, top_p 0.95, top_k 40, min_p
        0.05; echo, stop, logprobs, stream, penalties, logit_bias, seed). A prompt that extends
        the previous call's text continues from its state instead of starting over."""
        from . import completions

        return completions.create_completion(self, prompt, **kwargs)

    __call__ = create_completion

    # -- the completion state (llama-cpp-python's save_state / load_state) -----------------
    def save_state(self) -> ModelState:
        """A copy of the state create_completion continues from (tokens and recurrent/KV)."""
        if self._ctx is None:
            return ModelState(self.new_state(), [])
        return ModelState(self._ctx.state.copy(), list(self._ctx.tokens))

    def load_state(self, state: ModelState) -> None:
        if not isinstance(state, ModelState):
            raise TypeError(f"load_state takes what save_state returned, got "
                            f"{type(state).__name__}")
        if hasattr(state.state, "backend"):  # native and llama.cpp states know their backend
            if state.state.backend is not self.backend:
                raise ValueError("this state was saved from another Model; load it into that one")
        else:  # the reference's plain arrays: they must have this model's shapes
            self._check_state_arrays(self.export_state(state.state), state.state.n_past)
        self._ctx = ModelState(state.state.copy(), list(state.tokens))

    def reset(self) -> None:
        """Forget create_completion's state."""
        self._ctx = None

    def _completion_state(self, ids: list[int]):
        """(a state to continue from, how many of `ids` it already holds)."""
        c = self._ctx
        if c is not None and c.tokens and len(c.tokens) < len(ids) and \
                ids[: len(c.tokens)] == c.tokens:
            return c.state.copy(), len(c.tokens)
        return self.new_state(), 0

    def _keep_completion_state(self, state, tokens: list[int]) -> None:
        self._ctx = ModelState(state, list(tokens))

    def check_ids(self, ids: Sequence[int]) -> list[int]:
        """Token ids as ints in [0, n_vocab); anything else is refused (never cast)."""
        n = self.tokenizer.n_vocab
        out = []
        for t in ids:
            if isinstance(t, bool) or not isinstance(t, (int, np.integer)):
                raise TypeError(f"token ids must be ints, got {t!r}")
            if not 0 <= t < n:
                raise ValueError(f"token id {t} is out of range [0, {n})")
            out.append(int(t))
        return out


def _stamp(path: str) -> tuple[int, int] | None:
    import os

    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_size, st.st_mtime_ns

