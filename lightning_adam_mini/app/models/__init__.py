"""Small reference models for examples, benchmarks and tests."""

from .convnet import ConvNet, ConvNetConfig
from .gpt import GPT, GPTConfig
from .llama import Llama, LlamaConfig

__all__ = ["GPT", "ConvNet", "ConvNetConfig", "GPTConfig", "Llama", "LlamaConfig"]
