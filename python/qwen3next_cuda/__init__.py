"""Qwen3-Next from Python on handwritten CUDA kernels (PyTorch reference where a kernel is not built)."""

from .config import Qwen3NextConfig
from .model import Qwen3NextCUDA
from .sampling import GenerationConfig, SamplingParams
from .tokenizer import Qwen3Tokenizer

__version__ = "0.1.0"
__all__ = ["GenerationConfig", "Qwen3NextConfig", "Qwen3NextCUDA", "Qwen3Tokenizer", "SamplingParams"]
