#!/usr/bin/env bash
# Checks that the system libraries the build needs are present. As root, installs the missing
# Debian packages; otherwise prints the exact command to run and fails.
# Called by `make` before compiling anything (the result is cached in build/.deps-ok).
set -euo pipefail

# header that proves the package is installed : Debian package
need=(
  "/usr/include/eigen3/Eigen/Core:libeigen3-dev"
  "/usr/include/zstd.h:libzstd-dev"
  "/usr/include/catch2/catch.hpp:catch2"
  "/usr/include/nlohmann/json.hpp:nlohmann-json3-dev"
  "/usr/include/pcre2.h:libpcre2-dev"
  "/usr/include/CLI/CLI.hpp:libcli11-dev"
)
missing=()
for item in "${need[@]}"; do
  [ -e "${item%%:*}" ] || missing+=("${item##*:}")
done
[ ${#missing[@]} -eq 0 ] && exit 0

if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null; then
  echo "installing missing build dependencies: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq "${missing[@]}" >/dev/null
else
  echo "error: missing build dependencies. Install them with:" >&2
  echo "  sudo apt-get install -y ${missing[*]}" >&2
  exit 1
fi
