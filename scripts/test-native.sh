#!/usr/bin/env bash
# Builds the C++ core with CMake (no Node) and runs its tests with ctest.
# Usage: scripts/test-native.sh [sanitizers]   e.g. address,undefined | thread
set -euo pipefail
cd "$(dirname "$0")/.."
san="${1:-}"
dir="build-native${san:+-${san//,/-}}"
cmake -S . -B "$dir" -DUDS_SANITIZE="$san" >/dev/null
cmake --build "$dir" -j "$(nproc)"
ctest --test-dir "$dir" --output-on-failure
