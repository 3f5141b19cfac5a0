#!/usr/bin/env bash
# One call on a lent GPU machine: build the extension for this GPU, run every test (the `cuda`
# ones included) and the benchmarks, and leave logs and results under $OUT.
#
#   bash benchmarks/gpu_session.sh [--only BENCH...]      (wheels of missing packages in .whl/)
#
# Env: QWEN3NEXT_CUDA_ARCHS (default 90a); TESTS=cuda runs only the GPU tests, TESTS=0 none (TEST_FILES:
# which, default tests/; TEST_TIMEOUT: seconds, default 900, so that a hang leaves time for the rest);
# PROFILE="<module>..." runs those profile scripts after the benchmarks (e.g. benchmarks.profile_prefill; the tree's
# build); DEMO=1 runs the demo after the benchmarks; FULL_BUILD=1 also checks the default three-architecture
# build; SANITIZE=1 adds compute-sanitizer runs of the kernel tests (SANITIZE_TESTS: which files, default
# all kernel tests; SANITIZE_K: a pytest -k expression narrowing them; SANITIZE_TIMEOUT: seconds per tool,
# default 1800);
# QWEN3NEXT_COMMIT=<sha> labels the results (write it out: the lent machine's copy of .git can be stale).
# BASELINE=<dir> (an A/B in one call): the tree with <dir>'s files laid over it is built beside it, and the benchmarks
# run ROUNDS times (default 2) for each build, alternating (the tree's rows are the ones kept). Make <dir> with
# `bash benchmarks/baseline_files.sh <rev> <dir>` and carry it (files that only the tree has stay in the baseline).
set -uo pipefail
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1 CUDA_HOME=${CUDA_HOME:-/usr/local/cuda}
# The lent H100's default CXX (/opt/gcc/bin/g++) builds extensions that segfault as soon as a
# TORCH_CHECK message formats a number (torch's own load_inline ones too); the system g++ does not.
if [ -x /usr/bin/g++ ]; then export CXX=/usr/bin/g++ CUDAHOSTCXX=/usr/bin/g++; fi
step() { echo "== $* ($(date +%T))"; }

if compgen -G ".whl/*.whl" >/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site
fi
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.mem --format=csv  # stdout: $OUT returns 8 files at most

step build
export QWEN3NEXT_CUDA_ARCHS=${QWEN3NEXT_CUDA_ARCHS:-90a} QWEN3NEXT_MAX_JOBS=16
if [ -n "${BASELINE:-}" ]; then
  rm -rf /tmp/baseline_src /tmp/baseline_pkg && mkdir /tmp/baseline_src
  tar --exclude=.git --exclude=.whl --exclude=./build -cf - . | tar -xf - -C /tmp/baseline_src
  cp -r "$BASELINE"/. /tmp/baseline_src/
  export QWEN3NEXT_MAX_JOBS=8
  (cd /tmp/baseline_src && timeout 1200 python3 -m pip install --no-build-isolation --no-deps -q \
     --target /tmp/baseline_pkg . >/tmp/build_baseline.log 2>&1) &
  baseline_build=$!  # waited for by its pid: a bare `wait` would also wait for the caller's `| tee`, if any
fi
timeout 1200 python3 -m pip install --no-build-isolation --no-deps -q . >"$OUT/build.log" 2>&1 || {
  tail -50 "$OUT/build.log"; exit 1; }
if [ -n "${BASELINE:-}" ]; then wait "$baseline_build" || { tail -50 /tmp/build_baseline.log; exit 1; }; fi
python3 -c "import qwen3next_cuda.ops as o; print('kernels:', o.HAS_KERNELS, o.build_info())"

if [ "${TESTS:-all}" != 0 ]; then
  step "tests (${TESTS:-all})"
  [ "${TESTS:-all}" = cuda ] && marker=(-m cuda) || marker=()
  timeout "${TEST_TIMEOUT:-900}" python3 -m pytest -q -n 8 "${marker[@]}" ${TEST_FILES:-tests} 2>&1 | tee "$OUT/tests.log" | tail -25
fi

step benchmarks
: >"$OUT/bench.log"
rounds=1 && [ -n "${BASELINE:-}" ] && rounds=${ROUNDS:-2}  # with a baseline: the baseline first in each
for round in $(seq "$rounds"); do
  if [ -n "${BASELINE:-}" ]; then
    echo "-- baseline, round $round" | tee -a "$OUT/bench.log"
    PYTHONPATH=/tmp/baseline_pkg${PYTHONPATH:+:$PYTHONPATH} QWEN3NEXT_COMMIT=baseline \
      python3 -m benchmarks.run "$@" 2>&1 | tee -a "$OUT/bench.log"
    echo "-- tree, round $round" | tee -a "$OUT/bench.log"
  fi
  python3 -m benchmarks.run "$@" 2>&1 | tee -a "$OUT/bench.log"
done
results=$(ls -t benchmarks/results/*.json 2>/dev/null | head -1)  # this GPU's, just written
[ -n "$results" ] && cp "$results" "${results%.json}.md" "$OUT/"

for module in ${PROFILE:-}; do
  step "profile $module"
  PYTHONPATH=${PYTHONPATH:+$PYTHONPATH:}. timeout 300 python3 -m "$module" 2>&1 | grep -v Warn | tee -a "$OUT/profile.log" | tail -20
done

if [ "${DEMO:-0}" = 1 ]; then
  step demo
  timeout 600 python3 -m qwen3next_cuda.demo 2>&1 | tee "$OUT/demo.log" | tail -20
fi

if [ "${FULL_BUILD:-0}" = 1 ]; then
  step "default three-architecture build"
  rm -rf /tmp/fullbuild && mkdir /tmp/fullbuild
  ( time QWEN3NEXT_CUDA_ARCHS="80;90a;100" QWEN3NEXT_MAX_JOBS=16 python3 -m pip wheel --no-build-isolation --no-deps \
      -q -w /tmp/fullbuild . ) >"$OUT/full_build.log" 2>&1
  echo "full build exit $?"; tail -4 "$OUT/full_build.log"
fi
if [ "${SANITIZE:-0}" = 1 ]; then
  SANITIZE_TESTS=${SANITIZE_TESTS:-tests/test_norm.py tests/test_gdn_decode.py tests/test_conv1d.py tests/test_gdn_prefill.py tests/test_moe.py tests/test_attention.py}
  for tool in memcheck racecheck; do
    step "compute-sanitizer $tool"
    timeout "${SANITIZE_TIMEOUT:-1800}" compute-sanitizer --tool $tool --error-exitcode 1 \
      python3 -m pytest -q -m cuda $SANITIZE_TESTS -k "not compile and not opcheck and not 1000_steps and not 4097 and not varlen_batch ${SANITIZE_K:+and ($SANITIZE_K)}" >"$OUT/sanitizer_$tool.log" 2>&1
    echo "$tool exit $?"; tail -3 "$OUT/sanitizer_$tool.log"
    # cuBLAS's own sm90 GEMMs (nvjet_*: the router and projections) draw racecheck reports of their own; ours:
    echo "reports outside cuBLAS: $(grep -E "Race reported|Invalid|Error:" "$OUT/sanitizer_$tool.log" | grep -vc nvjet)"
  done
fi

step done
