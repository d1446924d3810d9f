#!/usr/bin/env bash
# `make gpu-bundle-check` (scripts/gpu_bundle_check.sh TEST_BINARY BENCH_BINARY BUILD_DIR): the GPU bundle's run.sh (scripts/gpu_run.sh), assembled from this
# machine's emulator build and driven with toy sizes, so that its control flow is tested where no
# GPU is. A stand-in compute-sanitizer hangs under memcheck (the step must time out and the next
# still run) and reports one finding under racecheck (it must read FINDING, not FAILED). Prints one
# line per check and "N passed, N failed".
set -uo pipefail
tests=$(realpath "$1")
bench=$(realpath "$2")
dir="$3/gpu-bundle-check"
rm -rf "$dir"
mkdir -p "$dir"
scripts/make_gpu_bundle.sh "$tests" "$bench" "$dir/bundle" || { echo "0 passed, 1 failed"; exit 1; }

cat > "$dir/fake-sanitizer" <<'SH'
#!/usr/bin/env bash
# Stands in for compute-sanitizer: --tool memcheck hangs; --tool racecheck runs the program, then
# reports one error with the exit code run.sh asks for.
tool=""; code=1
while [ $# -gt 0 ] && [ "${1#-}" != "$1" ]; do
  case $1 in
    --tool) tool=$2; shift 2 ;;
    --error-exitcode) code=$2; shift 2 ;;
    *) if [ "${2:-}" != "" ] && [ "${2#-}" = "$2" ] && [ "${2#./}" = "$2" ]; then shift 2; else shift; fi ;;
  esac
done
[ "$tool" = memcheck ] && exec sleep 600
"$@" --list-tests > /dev/null
echo "========= Race reported (stand-in)"
echo "========= ERROR SUMMARY: 1 error"
exit "$code"
SH
chmod +x "$dir/fake-sanitizer"

out="$PWD/$dir/out"
t0=$SECONDS
OUT="$out" BUNDLE_TOY=1 BUNDLE_LIMITS="memcheck=3" SANITIZER="$PWD/$dir/fake-sanitizer" "$dir/bundle/run.sh" \
  > "$dir/run.log" 2>&1
echo "bundle run.sh (toy sizes, emulator): $((SECONDS - t0)) s; summary:"
sed 's/^/  | /' "$out/summary.txt"

passed=0
failed=0
check() {  # check DESCRIPTION COMMAND...: one test
  if "${@:2}" > /dev/null 2>&1; then
    passed=$((passed + 1)); echo "ok:     $1"
  else
    failed=$((failed + 1)); echo "FAILED: $1"
  fi
}
verdict() { grep -E "^$1 " "$out/summary.txt" | head -n 1 | awk '{print $2}'; }
s="$out/summary.txt"
worst=$(grep -oE "worst case [0-9]+ s" "$s" | grep -oE "[0-9]+")
check "the step limits sum to at most 420 s (${worst:-?} s)" test "${worst:-999}" -le 420
check "every step has a verdict, in the bundle's order" \
  bash -c "grep -oE '^(machine|tests|8b|ops|generate|llama|memcheck|racecheck) ' '$s' | tr -d ' ' | tr '\n' ' ' |
           grep -qx 'machine tests 8b ops generate llama memcheck racecheck '"
for step in machine tests 8b ops generate llama; do
  check "step $step: ok" test "$(verdict $step)" = ok
done
check "tests: the summary has the tests' count, none failed" grep -qE "^    [0-9]+ passed, 0 failed" "$s"
check "8b: a row per op kind and stage, with its floor" \
  bash -c "[ \$(grep -cE 'linearize-8b stage[12] .* ms/step +floor' '$s') -ge 16 ]"
check "8b: the card's memory beside the plan's" grep -qE "card lost [0-9]+ MiB \(plan [0-9]+ MiB\)" "$s"
check "generate: rows for both models" \
  bash -c "grep -q 'generate toy ' '$s' && grep -q 'generate toy linearized' '$s'"
check "ops: kernel rows" grep -qE "GB/s|TFLOP/s" "$s"
check "memcheck: past its limit it reads TIMEOUT" bash -c "grep -qE '^memcheck +TIMEOUT' '$s'"
check "racecheck: runs after a timed-out step; its report reads FINDING" bash -c "grep -qE '^racecheck +FINDING' '$s'"
check "the logs are one archive with every step's log" \
  bash -c "[ \$(tar -tzf '$out/logs.tar.gz' | grep -cE '(machine|tests|8b|ops|generate|llama|memcheck|racecheck)\.log$') -eq 8 ]"
check "at most 8 files come back from \$OUT" bash -c "[ \$(find '$out' -type f | wc -l) -le 8 ]"
check "the [sanitize] selection names a case per kernel family" \
  bash -c "[ \$('$tests' --list-test-names-only '[sanitize]' | grep -c 'cuda') -ge 14 ]"
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
