"""Every error edgenano raises on purpose, in one place. Each derives from `EdgenanoError` and
from the builtin a caller would catch without knowing us (most are `ValueError`s), and its message
says what is wrong and what to do."""

from __future__ import annotations


class EdgenanoError(Exception):
    """Base of every error edgenano raises on purpose."""


class GGUFError(EdgenanoError, ValueError):
    """A GGUF file edgenano cannot run; the message names the file and what is wrong."""


class TokenizerError(GGUFError):
    """The GGUF's vocabulary cannot be turned into a tokenizer (the message names the key)."""


class StateFileError(EdgenanoError, ValueError):
    """A state file that cannot be loaded here; the message says why."""


class ContextOverflow(EdgenanoError, ValueError):
    """More tokens than the context the model was opened with."""


class ChatTemplateError(EdgenanoError, ValueError):
    """The chat template is missing, or cannot render these messages."""


class BackendUnavailable(EdgenanoError, RuntimeError):
    """The requested backend cannot run on this machine; the message says why."""
