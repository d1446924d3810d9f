#!/usr/bin/env bash
# Creates .venv with the packages of tests/reference/requirements.txt. Idempotent: make calls it
# only when requirements.txt is newer than .venv/.stamp. The torch wheel is large (it pulls the
# CUDA libraries), so the first run takes a few minutes; later runs reuse the cached venv.
set -euo pipefail
cd "$(dirname "$0")/../.."
py=python3
if ! $py -c "import venv, ensurepip" 2>/dev/null; then
  if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null
  else
    echo "error: python3 venv support is missing: sudo apt-get install -y python3-venv" >&2
    exit 1
  fi
fi
[ -x .venv/bin/python ] || $py -m venv .venv
echo "installing reference packages into .venv (torch, transformers; first time only)"
.venv/bin/pip install -q --disable-pip-version-check -r tests/reference/requirements.txt
.venv/bin/python -c "import torch, transformers, safetensors; print('reference venv: torch', torch.__version__, 'transformers', transformers.__version__)"
touch .venv/.stamp
