#!/usr/bin/env bash
# Builds the prebuilt binaries that ship in the npm package:
#   prebuilds/linux-x64/uds-ipc.glibc.node
#   prebuilds/linux-arm64/uds-ipc.glibc.node   (cross-compiled: g++-aarch64-linux-gnu)
# with prebuildify: N-API (one binary for every Node >= 20), stripped, tagged
# with the C library (glibc / musl) so node-gyp-build never loads a glibc build
# on musl or the other way round.
#
# Both are portable builds (UDS_IPC_PORTABLE=1, see binding.gyp and
# native/addon/glibc_compat.cc): they need glibc >= 2.28 and libgcc_s only,
# like Node 20's official binaries, with libstdc++ linked in statically.
# scripts/check-glibc.mjs checks each one and fails the build otherwise.
#
# It compiles against LOCAL Node headers only and never downloads anything:
# the headers directory is npm's `nodedir` setting (npm_config_nodedir when run
# through npm), else $PREBUILD_NODEDIR, else the prefix Node was built with
# (/usr for Debian's nodejs, when it has include/node/node_api.h). node-gyp is
# told to build for the running Node version, so it has no reason to fetch
# headers for another one.
#
# Note: prebuildify runs `node-gyp rebuild`, so build/Release is rebuilt and its
# uds_ipc.node moved into prebuilds/ (node-gyp-build then loads the prebuild).
# `npm run build:native` puts a development build back.
#
# Usage: npm run prebuild   (or: bash scripts/prebuild.sh)
# Env:   PREBUILD_ARCHS="arm64 x64" (default; x64 last, so
#        build/Release is left with the x64 build)
set -euo pipefail
cd "$(dirname "$0")/.."

node_version="$(node -p process.versions.node)"

nodedir="${npm_config_nodedir:-${PREBUILD_NODEDIR:-}}"
if [[ -z "$nodedir" ]]; then
  nodedir="$(npm config get nodedir 2>/dev/null || true)"
fi
if [[ -z "$nodedir" || "$nodedir" == undefined || "$nodedir" == null ]]; then
  nodedir="$(node -p 'process.config.variables.node_prefix || ""')"
fi
if [[ -z "$nodedir" || ! -f "$nodedir/include/node/node_api.h" ]]; then
  echo "prebuild.sh: no local Node headers (looked for ${nodedir:-<none>}/include/node/node_api.h)." >&2
  echo "  Point npm at them, e.g. \`npm config set nodedir /usr\` (Debian: apt-get install -y libnode-dev)," >&2
  echo "  or set PREBUILD_NODEDIR. This script never downloads headers." >&2
  exit 2
fi
command -v strip >/dev/null || { echo "prebuild.sh: strip not found (Debian: apt-get install -y binutils)" >&2; exit 2; }

archs="${PREBUILD_ARCHS:-arm64 x64}"
for a in $archs; do
  case "$a" in
    x64) [[ "$(uname -m)" == x86_64 ]] || { echo "prebuild.sh: the x64 build expects an x86_64 host" >&2; exit 2; } ;;
    arm64)
      for t in aarch64-linux-gnu-g++ aarch64-linux-gnu-gcc aarch64-linux-gnu-strip aarch64-linux-gnu-ar; do
        command -v "$t" >/dev/null || {
          echo "prebuild.sh: $t not found (Debian: apt-get install -y g++-aarch64-linux-gnu)" >&2
          exit 2
        }
      done ;;
    *) echo "prebuild.sh: unknown arch $a (x64, arm64)" >&2; exit 2 ;;
  esac
done

export npm_config_nodedir="$nodedir"
export UDS_IPC_PORTABLE=1
for a in $archs; do rm -rf "prebuilds/linux-$a"; done
total_start=$(date +%s)
for a in $archs; do
  start=$(date +%s)
  if [[ "$a" == arm64 ]]; then
    echo "== prebuildify --napi --strip --tag-libc --arch arm64 (Node $node_version, headers from $nodedir, aarch64-linux-gnu-g++)"
    CC=aarch64-linux-gnu-gcc CXX=aarch64-linux-gnu-g++ LINK=aarch64-linux-gnu-g++ AR=aarch64-linux-gnu-ar \
      PREBUILD_STRIP_BIN=aarch64-linux-gnu-strip \
      node_modules/.bin/prebuildify --napi --strip --tag-libc --arch arm64 --target "node@$node_version"
  else
    echo "== prebuildify --napi --strip --tag-libc (Node $node_version, headers from $nodedir)"
    node_modules/.bin/prebuildify --napi --strip --tag-libc --target "node@$node_version"
  fi
  took=$(( $(date +%s) - start ))
  shopt -s nullglob
  built=(prebuilds/linux-"$a"/*.node)
  shopt -u nullglob
  if (( ${#built[@]} != 1 )); then
    echo "prebuild.sh: expected one .node file under prebuilds/linux-$a/, found ${#built[@]}" >&2
    exit 1
  fi
  f="${built[0]}"
  echo "prebuild.sh: $f ($(stat -c %s "$f") bytes, built in ${took}s)"
  node scripts/check-glibc.mjs --arch "$a" "$f"
done
echo "prebuild.sh: done in $(( $(date +%s) - total_start ))s"
