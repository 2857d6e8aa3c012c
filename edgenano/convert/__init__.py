"""Hugging Face Nemotron-H checkpoint -> GGUF that llama.cpp loads as `nemotron_h`."""

from .errors import ConversionError, OutputError
from .writer import convert_checkpoint, plan_conversion

__all__ = ["ConversionError", "OutputError", "convert_checkpoint", "plan_conversion"]
