"""edgenano: a quantized edge runtime for NVIDIA Nemotron-H hybrid models."""

__version__ = "0.1.0"
