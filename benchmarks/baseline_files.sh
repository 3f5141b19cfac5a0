#!/usr/bin/env bash
# Writes into DIR the files of REV that the work tree changes (the extension's sources and the package), so that
# `BASELINE=DIR bash benchmarks/gpu_session.sh` can build REV beside the tree on the GPU machine, whose copy of
# .git may be stale. Files that REV lacks are reported and stay as the tree has them.
#
#   bash benchmarks/baseline_files.sh REV DIR
set -euo pipefail
[ $# = 2 ] || { echo "usage: bash benchmarks/baseline_files.sh REV DIR" >&2; exit 2; }
rev=$1 dir=$2
cd "$(dirname "$0")/.."
git rev-parse --verify -q "$rev^{commit}" >/dev/null || { echo "baseline_files: no commit '$rev'" >&2; exit 1; }
[ -e "$dir" ] && { echo "baseline_files: $dir exists; give a new directory" >&2; exit 1; }
mkdir -p "$dir"
git diff --name-only "$rev" -- csrc python setup.py pyproject.toml CMakeLists.txt | while read -r path; do
  if git cat-file -e "$rev:$path" 2>/dev/null; then
    mkdir -p "$dir/$(dirname "$path")"
    git show "$rev:$path" >"$dir/$path"
    echo "$path"
  else
    echo "$path: not in $rev (stays as the tree has it)" >&2
  fi
done
