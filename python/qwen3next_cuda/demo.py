"""Chat with a Qwen3-Next checkpoint and report its speed.

    python -m qwen3next_cuda.demo [--model PATH] [--prompt TEXT] [--max-new-tokens N] [--device cpu|cuda]

Without ``--model`` it uses the embedded default: a tiny random-weight checkpoint with the real Qwen3
tokenizer, written once under ``$QWEN3NEXT_CUDA_CACHE`` (default ``~/.cache/qwen3next_cuda``). Its weights
are random, so the reply is noise; the point is the whole path from chat template to streamed text.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time

import torch

from .model import Qwen3NextCUDA

DEFAULT_PROMPT = "Give me a short introduction to large language models."


def cache_dir() -> str:
    return os.environ.get("QWEN3NEXT_CUDA_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "qwen3next_cuda")


def embedded_checkpoint() -> str:
    """The tiny default checkpoint, written on first use (to a temporary folder, then renamed into place)."""
    from .tools.make_checkpoint import make_checkpoint

    path = os.path.join(cache_dir(), "tiny-random")
    if not os.path.isfile(os.path.join(path, "config.json")):
        os.makedirs(cache_dir(), exist_ok=True)
        staging = tempfile.mkdtemp(dir=cache_dir(), prefix=".tiny-random-")
        try:
            make_checkpoint(staging, preset="tiny", progress=False)
            os.replace(staging, path)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return path


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m qwen3next_cuda.demo", description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", help="checkpoint directory (default: the embedded tiny random checkpoint)")
    parser.add_argument("--prompt", default=DEFAULT_PROMPT)
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--device", help="cpu or cuda (default: cuda when available)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    try:
        model = Qwen3NextCUDA.from_pretrained(args.model or embedded_checkpoint(), device=args.device)
        if model.tokenizer is None:
            raise ValueError(f"{args.model} has no tokenizer files; the demo chats through the chat template")
    except (OSError, ValueError) as error:
        sys.exit(f"error: {error}")
    messages = [{"role": "user", "content": args.prompt}]
    prompt_len = len(model.tokenizer.apply_chat_template(messages, add_generation_prompt=True))
    print(f"model: {args.model or 'embedded tiny random checkpoint'} on {model.device} ({model.dtype}), "
          f"{model.config.num_hidden_layers} layers, hidden {model.config.hidden_size}")
    print(f"user: {args.prompt}\nassistant: ", end="", flush=True)

    decoder = model.tokenizer.incremental_decoder(skip_special_tokens=True)
    token_times = []

    def stream(_, token):
        token_times.append(time.perf_counter())
        print(decoder.push(token), end="", flush=True)

    start = time.perf_counter()
    model.generate(messages, args.max_new_tokens, seed=args.seed, streamer=stream)
    print(decoder.finish())
    prefill_s = token_times[0] - start
    line = f"prefill: {prompt_len} tokens in {prefill_s * 1e3:.1f} ms ({prompt_len / prefill_s:.0f} tok/s)"
    if len(token_times) > 1:
        decode_s = token_times[-1] - token_times[0]
        line += f"; decode: {len(token_times) - 1} tokens at {(len(token_times) - 1) / decode_s:.1f} tok/s (eager)"
    print(line)


if __name__ == "__main__":
    main()
