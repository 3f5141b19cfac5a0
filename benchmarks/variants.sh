#!/usr/bin/env bash
# One GPU call comparing variants of the extension against the tree: each variant is a patch (`git diff main BRANCH --
# csrc python`), built in turn in the tree's own build folder, so only the files it touches recompile, and installed
# beside the tree's build. Then, in this order, each step only while LIMIT leaves time for it:
#   1. a round of `python -m benchmarks.run --only $BENCH` per build (the tree's first, CHECK's last, whose results
#      file is the one kept),
#   2. $PROFILE (a module, e.g. benchmarks.profile_prefill) per build,
#   3. CHECK's `cuda` tests ($TEST_FILES) (if they fail, the other variants', last first, until one passes), then
#      compute-sanitizer memcheck and racecheck of CHECK's $SANITIZE_K cases (of $SANITIZE_FILES, default $TEST_FILES),
#   4. more bench rounds, up to $ROUNDS.
#
#   LIMIT=560 CHECK=name BENCH=gdn_prefill bash benchmarks/variants.sh name=path/to.patch ...
#
# Variants are labelled by name in the results (QWEN3NEXT_COMMIT labels the tree's). Wheels of missing packages in
# .whl/ are installed first (gpu_env.sh).
source "$(dirname "$0")/gpu_env.sh"
limit=${LIMIT:-560} bench=${BENCH:-gdn_prefill} start=$(date +%s)
left() { echo $((limit - ($(date +%s) - start))); }
step() { echo "== $* ($(($(date +%s) - start)) s)"; }
apply() {  # apply [-R] PATCH
  if command -v patch >/dev/null; then patch -p1 -s "${@:1:$#-1}" <"${!#}"; else git apply "$@"; fi
}

names=(tree) && declare -A pkg=([tree]="")
step build tree
QWEN3NEXT_MAX_JOBS=16 python3 -m pip install --no-build-isolation --no-deps -q . >"$OUT/build.log" 2>&1 || {
  tail -40 "$OUT/build.log"; exit 1; }
for variant in "$@"; do
  name=${variant%%=*} patch=${variant#*=}
  step build "$name"
  apply "$patch" || exit 1
  QWEN3NEXT_MAX_JOBS=16 python3 -m pip install --no-build-isolation --no-deps -q --target "/tmp/variants/$name" . \
    >>"$OUT/build.log" 2>&1
  built=$?
  apply -R "$patch" || exit 1
  [ $built = 0 ] || { tail -40 "$OUT/build.log"; exit 1; }
  names+=("$name") && pkg[$name]=/tmp/variants/$name:
done
check=${CHECK:-${names[-1]}}
order=()  # CHECK's last
for name in "${names[@]}"; do [ "$name" != "$check" ] && order+=("$name"); done
order+=("$check")
in_build() {  # in_build NAME COMMAND...: run with NAME's package first on the path
  local name=$1 && shift
  local label=${QWEN3NEXT_COMMIT:-tree} && [ "$name" != tree ] && label=$name
  PYTHONPATH=${pkg[$name]}${PYTHONPATH:-} QWEN3NEXT_COMMIT=$label "$@"
}

: >"$OUT/bench.log"
bench_round() {
  for name in "${order[@]}"; do
    echo "-- $name, round $1" | tee -a "$OUT/bench.log"
    in_build "$name" python3 -m benchmarks.run --only $bench 2>&1 | tee -a "$OUT/bench.log" | grep -E "^$bench "
  done
  results=$(ls -t benchmarks/results/*.json | head -1)  # this GPU's, CHECK's rows last
  cp "$results" "${results%.json}.md" "$OUT/"
}
step bench round 1
bench_round 1
for module in ${PROFILE:-}; do
  for name in "${order[@]}"; do
    [ "$(left)" -gt 60 ] || break
    step "profile $module, $name" | tee -a "$OUT/profile.log"
    PYTHONPATH=${pkg[$name]}${PYTHONPATH:-}:. timeout 120 python3 -m "$module" 2>&1 | grep -v Warn |
      tee -a "$OUT/profile.log"
  done
done
tests_of() {  # tests_of NAME: its cuda tests, appended to tests.log; fails if any failed
  step "cuda tests of $1" | tee -a "$OUT/tests.log"
  in_build "$1" timeout $(($(left) - 30)) python3 -m pytest -q -n 8 -m cuda $TEST_FILES 2>&1 | tee -a "$OUT/tests.log" |
    tail -8
}
if [ -n "${TEST_FILES:-}" ] && [ "$(left)" -gt 90 ] && ! tests_of "$check"; then
  for ((i = ${#order[@]} - 2; i > 0; i--)); do  # CHECK failed: the variants before it, last first, until one passes
    [ "$(left)" -gt 90 ] || break
    tests_of "${order[i]}" && break
  done
fi
if [ -n "${SANITIZE_K:-}" ]; then
  for tool in memcheck racecheck; do
    [ "$(left)" -gt 60 ] || break
    step "compute-sanitizer $tool, $check"
    in_build "$check" timeout $(($(left) - 20)) compute-sanitizer --tool $tool --error-exitcode 1 python3 -m pytest -q \
      -m cuda ${SANITIZE_FILES:-$TEST_FILES} -k "$SANITIZE_K" >"$OUT/sanitizer_$tool.log" 2>&1
    echo "$tool exit $?"; tail -3 "$OUT/sanitizer_$tool.log"
  done
fi
for round in $(seq 2 "${ROUNDS:-1}"); do
  [ "$(left)" -gt $((40 * ${#names[@]})) ] || break
  step bench round "$round"
  bench_round "$round"
done
step done
