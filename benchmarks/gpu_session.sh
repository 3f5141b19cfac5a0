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
# An A/B of builds in one call: benchmarks/variants.sh.
source "$(dirname "$0")/gpu_env.sh"
step() { echo "== $* ($(date +%T))"; }

step build
export QWEN3NEXT_MAX_JOBS=16
timeout 1200 python3 -m pip install --no-build-isolation --no-deps -q . >"$OUT/build.log" 2>&1 || {
  tail -50 "$OUT/build.log"; exit 1; }
python3 -c "import qwen3next_cuda.ops as o; print('kernels:', o.HAS_KERNELS, o.build_info())"

if [ "${TESTS:-all}" != 0 ]; then
  step "tests (${TESTS:-all})"
  [ "${TESTS:-all}" = cuda ] && marker=(-m cuda) || marker=()
  timeout "${TEST_TIMEOUT:-900}" python3 -m pytest -q -n 8 "${marker[@]}" ${TEST_FILES:-tests} 2>&1 | tee "$OUT/tests.log" | tail -25
fi

step benchmarks
python3 -m benchmarks.run "$@" 2>&1 | tee "$OUT/bench.log"
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
