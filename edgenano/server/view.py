"""What one server request's generation code sees of the model: the same model, except that every
evaluation goes through the batching scheduler and every prompt starts from the longest cached
state it extends. Completions and sessions (edgenano.completions, session.py) run unchanged on it.
"""

from __future__ import annotations

from ..errors import ContextOverflow
from ..session import ChatSession
from .cache import StateCache
from .scheduler import Handle, Scheduler


class ServerSession(ChatSession):
    """A one-turn chat session whose snapshots live in the server's cache: the prompt starts
    from the longest cached prefix of its tokens, and the end of the part the next turn will
    share (as ChatSession computes it) is stored for the next request of the conversation."""

    def _prefill(self, ids: list[int], n_shared: int):
        view: RequestModel = self.model
        if len(ids) >= view.n_ctx:
            raise ContextOverflow(f"the prompt is {len(ids)} tokens; this server's context is "
                                  f"{view.n_ctx} (prompt and reply together)")
        state, done = view.start(ids)
        # The snapshot goes right after the last control token (the turn marker) before the
        # shared end, not at the end itself: the few tokens between ("Assistant\n") are fed
        # again next turn, but a reply rendered as an empty answer (one cut inside its reasoning)
        # joins "\n" + "\n" into one token there, and a snapshot past that join would never
        # match again; tokens never join across a control token.
        tok = view.tokenizer
        cut = max((i + 1 for i in range(done, n_shared) if tok.is_control(ids[i])),
                  default=n_shared)
        logits = None
        if cut > done:
            logits = view.eval(state, ids[done:cut])
            view.cache.store(ids[:cut], state.copy())
        if len(ids) > max(done, cut):
            logits = view.eval(state, ids[max(done, cut):])
        self.prefill_tokens = len(ids) - done
        return state, logits


class RequestModel:
    """The model as one request uses it (see the module docstring). Counts what its prompt
    reused from the cache and what it prefilled."""

    session_class = ServerSession  # read by completions.create_chat_completion

    def __init__(self, model, scheduler: Scheduler, cache: StateCache, handle: Handle,
                 name: str):
        self._model, self._scheduler, self.cache, self.handle = model, scheduler, cache, handle
        self.tokenizer, self.n_ctx, self.stop_ids = model.tokenizer, model.n_ctx, model.stop_ids
        self.chat_template, self.name = model.chat_template, name
        self.n_prompt = self.n_reused = self.n_prefilled = 0

    def __getattr__(self, name):  # tokenize, detokenize, check_ids, config, ...
        return getattr(self._model, name)

    def new_state(self):
        return self._model.new_state()

    def eval(self, state, ids):
        return self._scheduler.eval(self.handle, state, self._model.check_ids(ids))

    def start(self, ids: list[int]):
        """(a state holding the longest cached proper prefix of ids, its length), counted."""
        state, done = self.cache.lookup(ids)
        if state is None:
            state = self._model.new_state()
        self.n_prompt, self.n_reused, self.n_prefilled = len(ids), done, len(ids) - done
        self.cache.count(done, len(ids) - done)
        return state, done

    # create_completion's prefix reuse (Model._completion_state), served by the cache
    def _completion_state(self, ids: list[int]):
        if len(ids) >= self.n_ctx:
            raise ContextOverflow(f"the prompt is {len(ids)} tokens; this server's context is "
                                  f"{self.n_ctx} (prompt and reply together)")
        return self.start(ids)

    def _keep_completion_state(self, state, tokens: list[int]) -> None:
        if tokens and state.n_past == len(tokens):
            self.cache.store(tokens, state)
