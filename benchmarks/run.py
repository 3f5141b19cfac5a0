"""Runs the benchmarks and merges their rows into benchmarks/results/<gpu>.json and .md.

    python -m benchmarks.run [--only rmsnorm_add rmsnorm_gated ...]

Rows from several invocations merge by (bench, impl, params); the measured copy bandwidth and
matmul rate of this GPU head the files and every row's percentage refers to them.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import torch

from benchmarks import ceilings

RESULTS = Path(__file__).resolve().parent / "results"
# module -> the benches it records
SUITES = {"benchmarks.bench_norm": ("rmsnorm_add", "rmsnorm_gated"), "benchmarks.bench_linear": ("linear_decode",),
          "benchmarks.bench_gdn_decode": ("gdn_decode",),
          "benchmarks.bench_gdn_prefill": ("gdn_prefill",),
          "benchmarks.bench_conv1d": ("conv1d_fwd",), "benchmarks.bench_moe": ("moe_decode", "moe_prefill"),
          "benchmarks.bench_attention": ("attn_decode", "attn_prefill"),
          "benchmarks.bench_e2e": ("e2e_decode", "e2e_prefill")}


def gpu_key(name: str) -> str:
    """'NVIDIA H100 80GB HBM3' -> 'h100'."""
    match = re.search(r"\b([A-Z]+\d{2,4}[A-Z]?)\b", name)
    return match.group(1).lower() if match else re.sub(r"\W+", "_", name.lower()).strip("_")


def commit() -> str:
    """QWEN3NEXT_COMMIT when set (a copied work tree may carry a stale .git), else the checkout's HEAD."""
    if os.environ.get("QWEN3NEXT_COMMIT"):
        return os.environ["QWEN3NEXT_COMMIT"]
    try:
        return subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], capture_output=True, text=True,
                              check=True, cwd=Path(__file__).parent).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


class Recorder:
    def __init__(self, ceiling: dict, commit: str):
        self.ceiling, self.commit = ceiling, commit
        self.rows: list[dict] = []

    def __call__(self, bench: str, impl: str, params: dict, median_us: float, *, nbytes: float = 0,
                 flops: float = 0) -> None:
        """Memory-bound rows give nbytes, compute-bound rows flops (both when both matter)."""
        gbps = nbytes / median_us / 1e3 if nbytes else None
        tflops = flops / median_us / 1e6 if flops else None
        floor_us = max(nbytes / self.ceiling["copy_GBps"] / 1e3, flops / self.ceiling["bf16_mm_TFLOPs"] / 1e6)
        bytes_bound = nbytes / self.ceiling["copy_GBps"] >= flops / self.ceiling["bf16_mm_TFLOPs"] / 1e3
        pct = 100 * (gbps / self.ceiling["copy_GBps"] if bytes_bound else tflops / self.ceiling["bf16_mm_TFLOPs"])
        row = {"bench": bench, "impl": impl, "params": params, "median_us": round(median_us, 3),
               "GBps": _round(gbps), "TFLOPs": _round(tflops), "pct_of_ceiling": round(pct, 1),
               "floor_us": round(floor_us, 3), "commit": self.commit}
        self.rows.append(row)
        print(f"{bench:16s} {impl:18s} {json.dumps(params):40s} {median_us:10.2f} us  {pct:5.1f}% of ceiling",
              flush=True)


def _round(x):
    return None if x is None else round(x, 1)


def merge(old: list[dict], new: list[dict]) -> list[dict]:
    key = lambda r: (r["bench"], r["impl"], json.dumps(r["params"], sort_keys=True))  # noqa: E731
    merged = {key(r): r for r in old}
    merged.update({key(r): r for r in new})
    return sorted(merged.values(), key=lambda r: (r["bench"], sorted(r["params"].items()), r["impl"]))


def markdown(doc: dict) -> str:
    c = doc["ceilings"]
    lines = [f"# {doc['gpu']}", "",
             f"torch {doc['torch']}. Last run: commit {doc['commit']}, `{doc['command']}`; rows merged from earlier "
             "runs keep theirs (the `commit` column).", "",
             f"Measured ceilings: copy {c['copy_GBps']:.0f} GB/s (read + write), "
             f"bf16 matmul {c['bf16_mm_TFLOPs']:.0f} TFLOP/s.", "",
             "`pct` is achieved GB/s over the copy ceiling for memory-bound rows, achieved TFLOP/s over the "
             "matmul ceiling for compute-bound ones; `vs peer` is the best peer's time over ours (rows named `*_only` "
             "time a part of the work and are not peers).", "",
             "| bench | params | impl | median µs | GB/s | TFLOP/s | pct | floor µs | vs peer | commit |",
             "|---|---|---|---:|---:|---:|---:|---:|---:|---|"]
    for r in doc["results"]:
        peers = [p["median_us"] for p in doc["results"] if p["bench"] == r["bench"] and p["params"] == r["params"]
                 and not p["impl"].startswith("ours") and not p["impl"].endswith("_only")]
        vs = f"{min(peers) / r['median_us']:.2f}x" if r["impl"].startswith("ours") and peers else ""
        params = ", ".join(f"{k}={v}" for k, v in r["params"].items())
        lines.append(f"| {r['bench']} | {params} | {r['impl']} | {r['median_us']:.2f} | {_fmt(r['GBps'])} | "
                     f"{_fmt(r['TFLOPs'])} | {r['pct_of_ceiling']:.1f}% | {r['floor_us']:.2f} | {vs} | "
                     f"{r.get('commit', '')} |")
    return "\n".join(lines) + "\n"


def _fmt(x):
    return "" if x is None else f"{x:.0f}"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    all_benches = [b for benches in SUITES.values() for b in benches]
    parser.add_argument("--only", nargs="+", choices=all_benches, metavar="NAME",
                        help=f"benches to run (default all): {', '.join(all_benches)}")
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        sys.exit("benchmarks need a CUDA GPU")
    from qwen3next_cuda import ops

    if not ops.HAS_KERNELS:
        sys.exit("qwen3next_cuda._C is not built: install the package with its CUDA extension first")

    torch.manual_seed(0)
    ceiling = {"copy_GBps": round(ceilings.copy_GBps(), 1), "bf16_mm_TFLOPs": round(ceilings.bf16_mm_TFLOPs(), 1)}
    print(f"ceilings: {ceiling}", flush=True)
    recorder = Recorder(ceiling, commit())
    for module, benches in SUITES.items():
        if args.only is None or set(args.only) & set(benches):
            importlib.import_module(module).run(recorder)
    if args.only:
        recorder.rows = [r for r in recorder.rows if r["bench"] in args.only]

    name = torch.cuda.get_device_name()
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"{gpu_key(name)}.json"
    old = json.loads(path.read_text())["results"] if path.exists() else []
    doc = {"gpu": name, "torch": torch.__version__, "commit": recorder.commit,
           "command": " ".join(["python -m benchmarks.run", *(argv if argv is not None else sys.argv[1:])]),
           "ceilings": ceiling, "results": merge(old, recorder.rows)}
    path.write_text(json.dumps(doc, indent=1) + "\n")
    path.with_suffix(".md").write_text(markdown(doc))
    print(f"wrote {path} and {path.with_suffix('.md')}")


if __name__ == "__main__":
    main()
