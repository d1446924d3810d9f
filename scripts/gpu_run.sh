#!/usr/bin/env bash
# Runs on a lent GPU machine, from the folder `make gpu-bundle` built (as gpu-bundle/run.sh): the
# [cuda] tests (every kernel against its CPU twin, on the hardware), compute-sanitizer's memcheck
# on them and racecheck on all but the [slow] ones (API errors are not reported: tests provoke
# some on purpose, e.g. a launch over the shared-memory limit), `bench gpu-ops`, `bench llama` and
# the Llama 3 8B-shape decode (`bench generate --device cuda`) and both LoLCATs stages at that shape
# (`bench linearize-8b --device cuda`); logs go to $OUT (or ./out), and a short table is
# printed last. Needs nothing from a package registry: cuBLASLt comes from the machine's CUDA
# toolkit or PyTorch's wheels. Each step has a time limit so that the whole run ends in ~7 minutes.
set -uo pipefail
cd "$(dirname "$0")"
out=${OUT:-$PWD/out}
mkdir -p "$out"
export LD_LIBRARY_PATH="$PWD/lib:${LD_LIBRARY_PATH:-}"
export LOLCATS_FIXTURES="$PWD/fixtures"
for d in /usr/local/cuda/lib64 /usr/local/cuda-13*/lib64 /usr/local/cuda/targets/x86_64-linux/lib \
         $(python3 -c 'import nvidia.cublas, os; print(os.path.join(os.path.dirname(nvidia.cublas.__file__), "lib"))' 2>/dev/null); do
  if [ -e "$d/libcublasLt.so.13" ]; then
    export LD_LIBRARY_PATH="$d:$LD_LIBRARY_PATH"
    break
  fi
done

summary=()
# step NAME LIMIT_SECONDS LOGFILE COMMAND...: runs it, keeps its output, notes pass/fail and time.
step() {
  local name=$1 limit=$2 log=$3
  shift 3
  local t0=$SECONDS
  echo "=== $name: $*"
  timeout "$limit" "$@" > "$out/$log" 2>&1
  local rc=$?
  tail -n 15 "$out/$log"
  local verdict="ok"
  [ $rc -eq 124 ] && verdict="TIMEOUT (${limit}s)"
  [ $rc -ne 0 ] && [ $rc -ne 124 ] && verdict="FAILED (exit $rc)"
  summary+=("$(printf '%-34s %-20s %4ds  %s' "$name" "$verdict" $((SECONDS - t0)) "$log")")
}

{
  nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv
  nvcc --version 2>/dev/null | tail -n 1
  ldd ./run_tests | grep -E "cublas|gomp|not found"
} > "$out/machine.txt" 2>&1
cat "$out/machine.txt"

step "tests [cuda],[gpu]" 90 tests.log ./run_tests "[cuda],[gpu]"
step "compute-sanitizer memcheck" 100 memcheck.log \
  compute-sanitizer --tool memcheck --leak-check no --report-api-errors no --error-exitcode 9 \
  ./run_tests "[cuda]"
step "compute-sanitizer racecheck" 120 racecheck.log \
  compute-sanitizer --tool racecheck --error-exitcode 9 ./run_tests "[cuda]~[slow]"
step "bench gpu-ops" 100 bench.jsonl ./bench gpu-ops
step "bench llama --device cuda" 60 bench_llama.jsonl ./bench llama --device cuda
step "bench linearize-8b --device cuda" 120 bench_linearize_8b.jsonl ./bench linearize-8b --device cuda \
  --config llama3-8b --seq 1024 --train-steps 3
step "bench generate --device cuda" 90 bench_generate.jsonl ./bench generate --device cuda --config llama3-8b \
  --batches 1 64 512 2048 --contexts 1024 8192 32768 --steps 8 --max-cache-gib 100

echo
echo "=== bench gpu-ops"
python3 - "$out/bench.jsonl" "$out/bench_llama.jsonl" "$out/bench_generate.jsonl" "$out/bench_linearize_8b.jsonl" <<'PY'
import json, sys
rows = []
for line in open(sys.argv[4]) if len(sys.argv) > 4 else []:
    try:
        j = json.loads(line)
        if j["stage"] == "both":
            print(f"linearize {j['model']} T={j['seq']}: 20M + 20M tokens in {j['hours_for_20m_plus_20m_tokens']:.2f} h (paper: 6.5 h, A100-40GB)")
        else:
            print(f"linearize {j['model']} {j['stage']} T={j['seq']}: {j['tokens_per_s']:9.0f} tokens/s  MFU {100*j['mfu']:.1f}%  peak {j['peak_device_mib']:.0f} MiB")
    except (ValueError, KeyError):
        pass
for line in open(sys.argv[3]) if len(sys.argv) > 3 else []:
    try:
        j = json.loads(line)
        what = j.get("skipped") or f"{j['tokens_per_s']:10.1f} tokens/s  {j['ms_per_step']:8.2f} ms/step  peak {j['peak_device_mib']:.0f} MiB"
        print(f"generate {j['model']:<24} batch {j['batch']:>5} context {j['context']:>6}: {what}")
    except (ValueError, KeyError):
        pass
for line in open(sys.argv[2]) if len(sys.argv) > 2 else []:
    try:
        j = json.loads(line)
        print(f"llama {j['model']} {j['what']:<17} T={j['seq']} {j['dtype']} cuda: {j['tokens_per_s']:10.0f} tokens/s  peak {j['peak_device_mib']:.0f} MiB")
    except (ValueError, KeyError):
        pass
for line in open(sys.argv[1]):
    try:
        j = json.loads(line)
    except ValueError:
        continue
    if "device" in j:
        print("device:", j["device"])
    elif "ceiling" in j:
        v = j.get("gb_per_s") or j.get("tflop_per_s")
        unit = "GB/s" if "gb_per_s" in j else "TFLOP/s"
        print(f"ceiling {j['ceiling']:<28} {v:10.1f} {unit}")
    else:
        if "tflop_per_s" in j:
            rows.append((j["kernel"], j["shape"], f"{j['tflop_per_s']:.1f} TFLOP/s", f"{100*j.get('fraction_of_gemm',0):.0f}% of GEMM", j["seconds"]))
        else:
            rows.append((j["kernel"], j["shape"], f"{j['gb_per_s']:.0f} GB/s", f"{100*j.get('fraction_of_copy',0):.0f}% of copy", j["seconds"]))
for k, s, v, f, sec in rows:
    print(f"{k[:44]:<44} {s[:34]:<34} {v:>15} {f:>13} {sec*1e3:9.3f} ms")
PY
echo
echo "=== summary"
printf '%s\n' "${summary[@]}"
grep -E "^[0-9]+ passed" "$out/tests.log" | tail -n 1
