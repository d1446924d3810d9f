#!/usr/bin/env bash
# Assembles the GPU bundle (called by `make gpu-bundle` and `make gpu-bundle-check`):
#   scripts/make_gpu_bundle.sh TEST_BINARY BENCH_BINARY OUT_DIR
# the test binary and bench, the OpenMP runtime they load, the run script and the fixtures of the
# [cuda] tests, in OUT_DIR; refuses a bundle that would not fit in one call to the GPU machine.
set -euo pipefail
tests=$1
bench=$2
out=$3
rm -rf "$out"
mkdir -p "$out/lib"
cp "$tests" "$out/run_tests"
cp "$bench" "$out/bench"
cp "$(g++ -print-file-name=libgomp.so.1)" "$out/lib/"
cp scripts/gpu_run.sh "$out/run.sh"
# The reference tensors the [cuda] Llama tests compare with (transformers' tiny models).
mkdir -p "$out/fixtures"
cp -r build/fixtures/ref_llama.safetensors build/fixtures/tiny_llama build/fixtures/tiny_llama_tied "$out/fixtures/"
chmod +x "$out/run.sh"
size=$(du -sm "$out" | cut -f1)
echo "gpu bundle: $out ($size MiB): carry it to the GPU machine and run $out/run.sh there"
if [ "$size" -gt 50 ]; then
  echo "error: the bundle is $size MiB, over the 50 MiB a GPU call can carry with the tree" >&2
  exit 1
fi
