"""Command-line tools (``python -m qwen3next_cuda.tools.<name>``)."""
