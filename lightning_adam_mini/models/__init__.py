"""Small reference models for examples, benchmarks and tests."""

from .llama import Llama, LlamaConfig

__all__ = ["Llama", "LlamaConfig"]
