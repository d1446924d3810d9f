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
# Stripped of their symbol tables (3 MiB; a sanitizer report still names the kernel, and its host
# frames resolve against the unstripped binaries kept here).
strip -o "$out/run_tests" "$tests"
strip -o "$out/bench" "$bench"
cp "$(g++ -print-file-name=libgomp.so.1)" "$out/lib/"
cp scripts/gpu_run.sh "$out/run.sh"
# What the selected tests read: the tiny models (tiny_app_llama is the trained one that the device
# scoring and passkey tests use) and the reference tensors the [cuda] Llama tests compare with
# (transformers' tiny models): of
# ref_llama.safetensors only the tiny models' tensors (1.8 of its 20 MiB); the rest are SmolLM2's,
# for CPU tests that need the model file, which the bundle does not carry.
mkdir -p "$out/fixtures"
cp -r build/fixtures/tiny_llama build/fixtures/tiny_llama_tied build/fixtures/tiny_app_llama "$out/fixtures/"
.venv/bin/python - build/fixtures/ref_llama.safetensors "$out/fixtures/ref_llama.safetensors" <<'PY'
import sys
from safetensors import safe_open
from safetensors.numpy import save_file
src, dst = sys.argv[1], sys.argv[2]
with safe_open(src, "np") as f:
    keep = {k: f.get_tensor(k) for k in f.keys() if k.startswith(("tiny_llama.", "tiny_llama_tied."))}
    meta = f.metadata() or {}  # the tests read each tensor's original dtype from it
if not keep:
    sys.exit(f"error: {src} holds no tiny_llama tensors")
save_file(keep, dst, metadata={k: v for k, v in meta.items() if not k.startswith("smol.")})
PY
chmod +x "$out/run.sh"
size=$(du -sm "$out" | cut -f1)
echo "gpu bundle: $out ($size MiB): carry it to the GPU machine and run $out/run.sh there"
if [ "$size" -gt 50 ]; then
  echo "error: the bundle is $size MiB, over the 50 MiB a GPU call can carry with the tree" >&2
  exit 1
fi
