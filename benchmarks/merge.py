"""Merge result files that device calls brought back into benchmarks/results/<gpu>.json and .md: from each file
only the rows measured at <commit> (a call's file also carries the rows it started from, which would undo an
earlier call's new ones).

    python -m benchmarks.merge <commit> OUT_A/h200.json OUT_B/h200.json ...
"""

from __future__ import annotations

import argparse
import json
import pathlib

from benchmarks.run import RESULTS, markdown, merge


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("commit", help="the commit the new rows were measured at")
    parser.add_argument("files", nargs="+", type=pathlib.Path, help="result files of one GPU, in call order")
    args = parser.parse_args(argv)
    path = RESULTS / args.files[0].name
    doc = json.loads(path.read_text()) if path.exists() else {"results": []}
    commands = []
    for file in args.files:
        new = json.loads(file.read_text())
        if file.name != path.name:
            raise SystemExit(f"{file}: not a result file of {path.stem} (all files must be of one GPU)")
        rows = [r for r in new["results"] if r.get("commit") == args.commit]  # rows of old runs may have none
        print(f"{file}: {len(rows)} rows at {args.commit} ({new['command']})")
        doc["results"] = merge(doc["results"], rows)
        commands.append(new["command"])
        doc.update(gpu=new["gpu"], torch=new["torch"], ceilings=new["ceilings"])
    doc.update(commit=args.commit, command="; ".join(commands))
    doc = {k: doc[k] for k in ("gpu", "torch", "commit", "command", "ceilings", "results")}
    path.write_text(json.dumps(doc, indent=1) + "\n")
    path.with_suffix(".md").write_text(markdown(doc))
    print(f"wrote {path} and {path.with_suffix('.md')}")


if __name__ == "__main__":
    main()
