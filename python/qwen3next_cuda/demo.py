"""Chat with a Qwen3-Next checkpoint and report its speed.

    python -m qwen3next_cuda.demo [--model PATH] [--prompt TEXT] [--max-new-tokens N] [--device cpu|cuda]

Without ``--model`` it uses the embedded default, random weights with the real Qwen3 tokenizer: on a GPU the
published widths with 4 layers (3 DeltaNet + 1 attention), drawn on the device; on a CPU a tiny checkpoint
written once under ``$QWEN3NEXT_CUDA_CACHE`` (default ``~/.cache/qwen3next_cuda``), whose tokenizer files the
GPU default borrows. The weights are random, so the reply is noise; the point is the whole path from chat
template to streamed text, and the speed: prefill and decode tokens per second, decode eager and by CUDA-graph
replay, beside the floor (the bytes a decode step reads at the GPU's measured copy bandwidth).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time

import torch

from . import graphs
from .model import Qwen3NextCUDA
from .tokenizer import Qwen3Tokenizer

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


def full_width_model(device: torch.device) -> Qwen3NextCUDA:
    """The published widths, 4 layers, random weights drawn on ``device``; the embedded tokenizer."""
    from .tools.make_checkpoint import preset_config, random_weights

    config = preset_config("slice", layers=4, mtp=False)
    tokenizer = Qwen3Tokenizer.from_pretrained(embedded_checkpoint())
    return Qwen3NextCUDA(config, random_weights(config, device=device), tokenizer)  # default: the config's eos


def copy_bandwidth(device: torch.device, nbytes: int = 2**30) -> float:
    """Bytes per second of a device-to-device copy (read + write), median of 10."""
    src = torch.empty(nbytes, dtype=torch.uint8, device=device)
    dst = torch.empty_like(src)
    dst.copy_(src)
    times = []
    for _ in range(10):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        dst.copy_(src)
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) / 1e3)
    return 2 * nbytes / sorted(times)[len(times) // 2]


def decode_rate(model: Qwen3NextCUDA, messages, tokens: int, cuda_graphs: bool) -> float:
    """Decode tokens per second (the first token, from the prefill, excluded) of a greedy reply."""
    times = []
    model.generate(messages, tokens, do_sample=False, eos_token_id=[], cuda_graphs=cuda_graphs,
                   streamer=lambda *_: times.append(time.perf_counter()))
    return (len(times) - 1) / (times[-1] - times[0])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m qwen3next_cuda.demo", description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", help="checkpoint directory (default: random weights, see above)")
    parser.add_argument("--prompt", default=DEFAULT_PROMPT)
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--device", help="cpu or cuda (default: cuda when available)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    try:
        if args.model is None and device.type == "cuda":
            model, name = full_width_model(device), "random weights at the published widths, 4 layers"
        else:
            model = Qwen3NextCUDA.from_pretrained(args.model or embedded_checkpoint(), device=device)
            name = args.model or "embedded tiny random checkpoint"
        if model.tokenizer is None:
            raise ValueError(f"{args.model} has no tokenizer files; the demo chats through the chat template")
    except (OSError, ValueError) as error:
        sys.exit(f"error: {error}")
    messages = [{"role": "user", "content": args.prompt}]
    prompt_len = len(model.tokenizer.apply_chat_template(messages, add_generation_prompt=True))
    print(f"model: {name} on {model.device} ({model.dtype}), {model.config.num_hidden_layers} layers, "
          f"hidden {model.config.hidden_size}")
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
    print(f"prefill: {prompt_len} tokens in {prefill_s * 1e3:.1f} ms ({prompt_len / prefill_s:.0f} tok/s)")
    if args.max_new_tokens < 2:
        return
    eager = decode_rate(model, messages, args.max_new_tokens, cuda_graphs=False)
    line = f"decode: {eager:.1f} tok/s eager"
    if graphs.capturable(model):
        replayed = decode_rate(model, messages, args.max_new_tokens, cuda_graphs=True)
        floor = copy_bandwidth(model.device) / model.decode_step_bytes(1, prompt_len + args.max_new_tokens)
        line += f", {replayed:.1f} tok/s by CUDA graph; floor {floor:.0f} tok/s (the bytes a step reads at copy speed)"
    print(line)


if __name__ == "__main__":
    main()
