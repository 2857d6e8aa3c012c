"""edgenano: a quantized edge runtime for NVIDIA Nemotron-H hybrid models."""

__version__ = "0.1.0"

from .model import Model  # noqa: E402
from .session import ChatSession  # noqa: E402

__all__ = ["ChatSession", "Model", "__version__"]
