"""Hugging Face Nemotron-H checkpoint -> GGUF that llama.cpp loads as `nemotron_h`."""
