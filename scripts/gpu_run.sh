#!/usr/bin/env bash
# The GPU bundle's one command (gpu-bundle/run.sh, built by `make gpu-bundle`). A GPU is lent
# rarely, for about 15 minutes of machine time, at most 10 minutes per command; this script spends
# at most 420 s in the worst case (the sum of the step limits below, checked by
# `make gpu-bundle-check`), in the order of what each step teaches:
#
#   tests      the [cuda] and [gpu] tests: every kernel against its CPU twin, on the hardware
#   8b         ./bench linearize-8b: both LoLCATs stages at Llama 3 8B's shape, per op kind
#   ops        ./bench gpu-ops: each kernel's bandwidth or FLOP rate against the card's ceilings
#   generate   ./bench generate: the 8B-shape decode, softmax (KV cache) and linearized, sized to
#              the card's free memory
#   llama      ./bench llama: SmolLM2's forward and backward
#   memcheck   compute-sanitizer memcheck on the [sanitize] tests (one small case per kernel)
#   racecheck  compute-sanitizer racecheck on the same
#
# Each step's verdict (ok, FAILED, TIMEOUT, FINDING: a sanitizer's report, apart from test
# failures) and its result rows are appended to $OUT/summary.txt as the step ends, and every log
# is packed again into $OUT/logs.tar.gz, so a run cut short keeps what it did. A failed or timed
# out step never stops the next. Two files in $OUT, well under the 8 that come back.
#
# The [apps] tests are left out: they run the ./linearize and ./eval programs, which the bundle
# does not carry (the library tests beside them cover the same code paths on the device). Every
# other selected test finds its fixtures in the bundle (scripts/make_gpu_bundle.sh).
#
# BUNDLE_TOY=1 (make gpu-bundle-check): the same steps with toy sizes, for the SIMT emulator; the
# sanitizer is $SANITIZER (default compute-sanitizer), so the check can stand in a fake one, and
# BUNDLE_LIMITS="step=seconds ..." may shorten a step's limit.
set -uo pipefail
cd "$(dirname "$0")"
out=${OUT:-$PWD/out}
mkdir -p "$out"
logs=$(mktemp -d)
summary="$out/summary.txt"
: > "$summary"
toy=${BUNDLE_TOY:-0}
sanitizer=${SANITIZER:-compute-sanitizer}
export LD_LIBRARY_PATH="$PWD/lib:${LD_LIBRARY_PATH:-}"
export LOLCATS_FIXTURES="$PWD/fixtures"
for d in /usr/local/cuda/lib64 /usr/local/cuda-13*/lib64 /usr/local/cuda/targets/x86_64-linux/lib \
         $(python3 -c 'import nvidia.cublas, os; print(os.path.join(os.path.dirname(nvidia.cublas.__file__), "lib"))' 2>/dev/null); do
  if [ -e "$d/libcublasLt.so.13" ]; then
    export LD_LIBRARY_PATH="$d:$LD_LIBRARY_PATH"
    break
  fi
done

# The step limits in seconds; their sum is the worst case (at most 420).
declare -A limit=([machine]=10 [tests]=75 [8b]=90 [ops]=55 [generate]=60 [llama]=30 [memcheck]=50 [racecheck]=50)
total=0
for s in "${!limit[@]}"; do total=$((total + limit[$s])); done
echo "bundle: worst case ${total} s (limits: $(for s in machine tests 8b ops generate llama memcheck racecheck; do printf '%s %s ' $s ${limit[$s]}; done))" | tee -a "$summary"
if [ "$toy" = 1 ]; then  # the check's own limits, e.g. BUNDLE_LIMITS="memcheck=3"
  for kv in ${BUNDLE_LIMITS:-}; do limit[${kv%%=*}]=${kv#*=}; done
  [ -n "${BUNDLE_LIMITS:-}" ] && echo "bundle: toy limits $BUNDLE_LIMITS" | tee -a "$summary"
fi

# The test selection and the bench sizes, real or toy.
tests_sel="[cuda]~[slow]~[apps],[gpu]~[slow]"
sanitize_sel="[sanitize]"
bench_8b=(--config llama3-8b --seq 1024 --train-steps 2)
bench_ops=()
bench_gen=(--config llama3-8b --batches 1 64 512 2048 --contexts 1024 8192 32768 --steps 8)
bench_llama=()
if [ "$toy" = 1 ]; then
  tests_sel="[cuda][gemm]~[slow]"
  bench_8b=(--config toy --seq 64 --train-steps 1)
  bench_ops=(--smoke)
  bench_gen=(--config toy --batches 1 2 --contexts 16 64 --steps 2)
  bench_llama=(--config toy --seq 32 --reps 1)
fi

# step NAME KIND COMMAND...: runs COMMAND under its limit, its output in $logs/NAME.log, then appends
# the verdict and the rows of the log that KIND says matter to the summary, and repacks the logs.
step() {
  local name=$1 kind=$2
  shift 2
  local t0=$SECONDS log="$logs/$name.log"
  echo "=== $name (limit ${limit[$name]} s): $*"
  timeout -k 5 "${limit[$name]}" bash -c '"$@"' step "$@" > "$log" 2>&1
  local rc=$?
  local verdict="ok"
  if [ $rc -eq 124 ] || [ $rc -eq 137 ]; then
    verdict="TIMEOUT (${limit[$name]} s)"
  elif [ "$kind" = sanitizer ] && { [ $rc -eq 86 ] || grep -qE "ERROR SUMMARY: [1-9]" "$log"; }; then
    verdict="FINDING ($(grep -oE "ERROR SUMMARY: [0-9]+ errors?" "$log" | tail -n 1), exit $rc)"
  elif [ $rc -ne 0 ]; then
    verdict="FAILED (exit $rc)"
  fi
  printf '%-10s %-40s %4d s\n' "$name" "$verdict" $((SECONDS - t0)) | tee -a "$summary"
  rows "$kind" "$log" | sed 's/^/    /' | tee -a "$summary"
  [ "$verdict" = ok ] || tail -n 3 "$log" | sed 's/^/    | /' | tee -a "$summary"  # why, in brief
  tar -czf "$out/logs.tar.gz.tmp" -C "$logs" . && mv "$out/logs.tar.gz.tmp" "$out/logs.tar.gz"
}

# The lines of a step's log that go into the summary.
rows() {
  local kind=$1 log=$2
  case $kind in
    info) cat "$log" ;;
    tests | sanitizer)
      grep -E "^[0-9]+ passed, [0-9]+ failed" "$log" | tail -n 1
      grep -E "ERROR SUMMARY" "$log" | tail -n 1
      # Catch2 names a failing test between two rules of dashes, the line after the first.
      grep -A 1 -E "^-{20,}$" "$log" | grep -vE "^(-{20,}|--)$" | sort -u | head -n 10 | sed 's/^/FAILED: /'
      ;;
    json) python3 - "$log" <<'PY' ;;
import json, sys
for line in open(sys.argv[1], errors="replace"):
    try:
        j = json.loads(line)
    except ValueError:
        continue
    if not isinstance(j, dict):
        continue
    b = j.get("bench") or ("gpu-ops" if "kernel" in j or "ceiling" in j or "device" in j else "?")
    if "skipped" in j:
        print(f"{b} {j.get('model','')} batch {j.get('batch')} context {j.get('context')}: skipped ({j['skipped']})")
    elif b == "linearize-8b" and "op_kind" in j:
        print(f"{b} {j['stage']} {j['op_kind']:<22} {j['ms_per_step']:9.2f} ms/step  floor {j['floor_ms']:8.2f} ms"
              f"  ({j['share']*100:4.1f}% of the step)")
    elif b == "linearize-8b" and j.get("stage") == "both":
        print(f"{b}: 20M + 20M tokens in {j['hours_for_20m_plus_20m_tokens']:.2f} h (paper: 6.5 h, one A100-40GB)")
    elif b == "linearize-8b":
        print(f"{b} {j['stage']} T={j['seq']}: {j['tokens_per_s']:.0f} tokens/s, MFU {100*j['mfu']:.1f}%, "
              f"card lost {j.get('card_used_mib', 0):.0f} MiB (plan {j.get('plan_mib', 0):.0f} MiB)")
    elif b == "generate":
        print(f"{b} {j['model']:<24} batch {j['batch']:>5} context {j['context']:>6}: {j['tokens_per_s']:10.1f} tokens/s"
              f" {j['ms_per_step']:8.2f} ms/step")
    elif b == "llama":
        print(f"{b} {j['model']} {j['what']} T={j['seq']} {j.get('dtype','')}: {j['tokens_per_s']:.0f} tokens/s")
    elif "ceiling" in j:
        v, unit = (j["gb_per_s"], "GB/s") if "gb_per_s" in j else (j["tflop_per_s"], "TFLOP/s")
        print(f"ceiling {j['ceiling']:<28} {v:10.1f} {unit}")
    elif "kernel" in j:
        v = f"{j['tflop_per_s']:.1f} TFLOP/s" if "tflop_per_s" in j else f"{j['gb_per_s']:.0f} GB/s"
        print(f"{j['kernel'][:44]:<44} {j['shape'][:30]:<30} {v:>14} {j['seconds']*1e3:9.3f} ms")
    elif "device" in j:
        print("device:", j["device"])
PY
  esac
}

machine_info() {
  nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv 2>&1 || echo "no nvidia-smi"
  nvcc --version 2>/dev/null | tail -n 1
  ldd ./run_tests | grep -E "cublas|gomp|not found"
}
sanitize() {  # sanitize TOOL: the [sanitize] tests under compute-sanitizer's TOOL
  local extra=()
  # API errors are not findings: tests provoke some on purpose (e.g. a launch over the shared-memory
  # limit must fail).
  [ "$1" = memcheck ] && extra=(--leak-check no --report-api-errors no)
  "$sanitizer" --tool "$1" "${extra[@]}" --error-exitcode 86 ./run_tests "$sanitize_sel"
}

export -f machine_info sanitize
export sanitizer sanitize_sel
step machine info machine_info
step tests tests ./run_tests "$tests_sel"
step 8b json ./bench linearize-8b --device cuda "${bench_8b[@]}"
step ops json ./bench gpu-ops "${bench_ops[@]}"
step generate json ./bench generate --device cuda "${bench_gen[@]}"
step llama json ./bench llama --device cuda "${bench_llama[@]}"
if command -v "$sanitizer" > /dev/null; then
  step memcheck sanitizer sanitize memcheck
  step racecheck sanitizer sanitize racecheck
else
  for s in memcheck racecheck; do printf '%-10s %-40s\n' $s "skipped ($sanitizer not found)" | tee -a "$summary"; done
fi
rm -rf "$logs"
echo "=== summary ($summary; logs in $out/logs.tar.gz)"
cat "$summary"
