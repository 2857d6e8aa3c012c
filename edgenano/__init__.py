"""edgenano: a quantized edge runtime for NVIDIA Nemotron-H hybrid models."""

__version__ = "0.1.0"

from .errors import (  # noqa: E402
    BackendUnavailable,
    ChatTemplateError,
    ContextOverflow,
    EdgenanoError,
    GGUFError,
    StateFileError,
    TokenizerError,
)
from .model import Model  # noqa: E402
from .session import ChatSession  # noqa: E402

__all__ = ["BackendUnavailable", "ChatSession", "ChatTemplateError", "ContextOverflow",
           "EdgenanoError", "GGUFError", "Model", "StateFileError", "TokenizerError",
           "__version__"]
