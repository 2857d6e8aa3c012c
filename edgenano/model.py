"""`edgenano.Model`: a GGUF, its tokenizer and chat template, and an engine to run it.

The names follow what users know: llama-cpp-python's (`create_chat_completion`, OpenAI dicts)
and Hugging Face's (`apply_chat_template`, `enable_thinking`).
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from . import chat as chatfmt
from .backends import make_backend
from .generation import Outcome, generate_steps
from .sampling import SamplingParams
from .tokenizer import Tokenizer


class Model:
    """Load a nemotron_h GGUF. `path=None` opens the built-in tiny reasoner.

    backend: "native" (edgenano's C++ engine), "reference" (NumPy, slow and exact) or "llama.cpp"
    (llama-cpp-python on the same file). n_batch (prefill chunk, default 512) and kv_type ("f16",
    "q8_0" or "f32") tune the native engine.

    >>> m = Model("model.gguf", n_threads=2, n_ctx=8192)
    >>> s = m.new_state(); last = m.eval(s, ids); s2 = s.copy(); every = m.logits(ids)
    """

    def __init__(self, path: str | Path | None = None, backend: str = "native", *,
                 n_ctx: int = 8192, n_threads: int | None = None, **native_options):
        from .gguf_model import load_gguf

        if path is None:
            from .models import default_model_path

            path = default_model_path()
        self.path = str(path)
        self.gguf = load_gguf(self.path)
        self.config = self.gguf.config
        self.tokenizer = Tokenizer(self.gguf.metadata)
        self.chat_template = self.tokenizer.chat_template
        self.backend_name = backend
        self.n_ctx = n_ctx
        self.backend = make_backend(backend, self.gguf, self.path, n_ctx=n_ctx,
                                    n_threads=n_threads, **native_options)
        self.stop_ids = self._stop_ids()
        # Weights are shared and every state is its own, but a backend runs one forward at a time
        # (the native engine's thread pool already uses every core; llama.cpp has one context).
        self._lock = threading.Lock()

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

    # -- the engine surface ---------------------------------------------------------------
    def new_state(self):
        return self.backend.new_state()

    def eval(self, state, token_ids: Sequence[int]) -> np.ndarray:
        """Feed tokens into `state`; the logits after the last one (float32, n_vocab)."""
        with self._lock:
            return self.backend.eval(state, list(token_ids))

    def logits(self, token_ids: Sequence[int]) -> np.ndarray:
        """Logits at every position of `token_ids`, from an empty state: (T, n_vocab)."""
        if hasattr(self.backend, "logits"):
            with self._lock:
                return self.backend.logits(list(token_ids))
        st = self.new_state()
        return np.stack([self.eval(st, [t]) for t in token_ids])

    # -- text ------------------------------------------------------------------------------
    def tokenize(self, text: str, *, add_bos: bool = False, special: bool = True) -> list[int]:
        return self.tokenizer.encode(text, add_bos=add_bos, special=special)

    def detokenize(self, ids: Sequence[int]) -> str:
        return self.tokenizer.decode(ids)

    def apply_chat_template(self, messages: list[dict], *, add_generation_prompt: bool = True,
                            enable_thinking: bool | None = None, tools: list | None = None,
                            tokenize: bool = False):
        """Render messages with the GGUF's own template, as transformers does. `/think` and
        `/no_think` in system/user text are resolved by edgenano's word-boundary rule (so a
        `</think>` in a user's text is not a switch) and override `enable_thinking`."""
        if not self.chat_template:
            raise ValueError(f"{self.path} has no tokenizer.chat_template")
        default = True if enable_thinking is None else enable_thinking
        thinking, msgs = chatfmt.resolve_thinking(messages, default)
        text = chatfmt.render(self.chat_template, msgs, add_generation_prompt=add_generation_prompt,
                              enable_thinking=thinking, tools=tools)
        return self.tokenize(text) if tokenize else text

    # -- generation ------------------------------------------------------------------------
    def generate(self, prompt: str | Sequence[int], max_tokens: int = 256, *,
                 temperature: float = 0.0, top_p: float = 1.0, top_k: int = 0,
                 min_p: float = 0.0, repeat_penalty: float = 1.0, seed: int | None = None,
                 stop: Sequence[str] = (), stream: bool = False):
        """Continue a prompt (text or ids). Returns the text, or with stream=True a generator
        of text pieces."""
        ids = self.tokenize(prompt) if isinstance(prompt, str) else list(prompt)
        params = SamplingParams(temperature, top_p, top_k, min_p, repeat_penalty, seed=seed)
        state = self.new_state()
        logits = self.eval(state, ids)
        steps = generate_steps(self, state, logits, max_tokens=max_tokens, sampling=params,
                               stop_ids=self.stop_ids, stop=stop, history=ids)
        pieces = (s.text for s in steps)
        return pieces if stream else _cut_stop("".join(pieces), stop)

    def chat(self, system: str | None = None, *, thinking: bool = True,
             thinking_budget: int = -1, tools: list | None = None, **sampling):
        """A stateful chat session (see edgenano.session.ChatSession)."""
        from .session import ChatSession

        return ChatSession(self, system=system, thinking=thinking,
                           thinking_budget=thinking_budget, tools=tools, **sampling)

    def create_chat_completion(self, messages: list[dict], *, max_tokens: int = 1024,
                               temperature: float | None = None, top_p: float | None = None,
                               top_k: int = 0, min_p: float = 0.0, repeat_penalty: float = 1.0,
                               seed: int | None = None, stop: Sequence[str] = (),
                               thinking_budget: int = -1, enable_thinking: bool | None = None,
                               tools: list | None = None, stream: bool = False):
        """llama-cpp-python / OpenAI-shaped chat completion, with `reasoning_content`."""
        from .session import ChatSession

        sess = ChatSession(self, thinking=True if enable_thinking is None else enable_thinking,
                           thinking_budget=thinking_budget, tools=tools)
        history, last = messages[:-1], messages[-1]
        if last.get("role") != "user":
            raise ValueError("the last message must be the user's")
        sess.messages = [dict(m) for m in history]
        sampling = dict(temperature=temperature, top_p=top_p, top_k=top_k, min_p=min_p,
                        repeat_penalty=repeat_penalty, seed=seed)
        cid, created = f"chatcmpl-{uuid.uuid4().hex[:24]}", int(time.time())
        if stream:
            return _completion_chunks(sess, last["content"], max_tokens, stop, sampling, cid,
                                      created, Path(self.path).name)
        reply = sess.send(last["content"], max_tokens=max_tokens, stop=stop, **sampling)
        return _completion(reply, cid, created, Path(self.path).name)


def _cut_stop(text: str, stop: Sequence[str]) -> str:
    for s in stop:
        if s in text:
            text = text[: text.index(s)]
    return text


def _completion(reply, cid: str, created: int, model: str) -> dict:
    msg = {"role": "assistant", "content": reply.content, "reasoning_content": reply.reasoning}
    if reply.tool_calls:
        msg["tool_calls"] = reply.tool_calls
    return {
        "id": cid, "object": "chat.completion", "created": created, "model": model,
        "choices": [{"index": 0, "message": msg, "logprobs": None,
                     "finish_reason": reply.finish_reason}],
        "usage": dict(reply.usage),
    }


def _completion_chunks(sess, text, max_tokens, stop, sampling, cid, created,
                       model) -> Iterator[dict]:
    def chunk(delta: dict, finish=None) -> dict:
        return {"id": cid, "object": "chat.completion.chunk", "created": created, "model": model,
                "choices": [{"index": 0, "delta": delta, "logprobs": None,
                             "finish_reason": finish}]}

    yield chunk({"role": "assistant"})
    outcome = Outcome()
    for ev in sess.send(text, max_tokens=max_tokens, stop=stop, stream=True, outcome=outcome,
                        **sampling):
        key = "reasoning_content" if ev.reasoning else "content"
        if ev.text:
            yield chunk({key: ev.text})
    yield chunk({}, finish=outcome.finish_reason)
