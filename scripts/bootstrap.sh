#!/usr/bin/env bash
# bootstrap.sh — install what a fresh Debian 12 machine lacks, configure and
# build llmc into ./build.  Idempotent: installs nothing already present and
# rebuilds only what changed.
#
#   scripts/bootstrap.sh && build/llmc recipes/fp8_block.lua
#
# Environment: LLMC_BUILD_DIR (default build), LLMC_CUDA (AUTO|ON|OFF).
set -euo pipefail
cd "$(dirname "$0")/.."

PKGS="build-essential cmake pkg-config liblua5.4-dev lua5.4 lua-cjson libopenblas-dev liblapacke-dev
      libreadline-dev libjansson-dev libpcre2-dev clang libclang-rt-14-dev util-linux"
missing=""
for p in $PKGS; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
if [ -n "$missing" ]; then
  echo "bootstrap: installing$missing"
  SUDO=""
  [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq $missing >/dev/null
fi

BUILD="${LLMC_BUILD_DIR:-build}"
cmake -S . -B "$BUILD" -DCMAKE_BUILD_TYPE=Release -DLLMC_CUDA="${LLMC_CUDA:-AUTO}" >/dev/null
cmake --build "$BUILD" -j"$(nproc)"
echo "bootstrap: built $BUILD/llmc"
