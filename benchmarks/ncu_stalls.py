"""The hottest instructions of an ncu source page: `ncu ... --page source --print-source sass > page.txt`, then

    python -m benchmarks.ncu_stalls page.txt [--share 0.006]

prints each SASS line holding more than `share` of the warp-stall samples (its row's first four counters as ncu
prints them, the first being all stall samples; the instruction), in program order, so that a kernel's stalls can
be read against its code.
"""

from __future__ import annotations

import argparse
import re

# address, instruction (two or more spaces end it), then ncu's counters, all warp-stall samples first
ROW = re.compile(r"\s*(0x\w+)\s+(.*?)\s{2,}(\d+)\s+(\d+)\s+(\d+)\s+(\d+)\s")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("page")
    parser.add_argument("--share", type=float, default=0.006)
    args = parser.parse_args(argv)
    rows = []
    with open(args.page, encoding="utf-8", errors="replace") as f:
        for line in f:
            m = ROW.match(line)
            if m:
                rows.append(([int(m.group(i)) for i in range(3, 7)], m.group(2).strip()))
    total = sum(counters[0] for counters, _ in rows)
    print(f"stall samples {total}, instructions {len(rows)}")
    for index, (counters, text) in enumerate(rows):
        if counters[0] > total * args.share:
            print(f"{index:5d} " + " ".join(f"{c:9d}" for c in counters) + f"  {text[:100]}")


if __name__ == "__main__":
    main()
