#!/usr/bin/env bash
# Builds the prebuilt binary that ships in the npm package:
#   prebuilds/<platform>-<arch>/uds-ipc.<libc>.node
# with prebuildify: N-API (one binary for every Node >= 20), stripped, tagged
# with the C library (glibc / musl) so node-gyp-build never loads a glibc build
# on musl or the other way round.
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

export npm_config_nodedir="$nodedir"
echo "== prebuildify --napi --strip --tag-libc (Node $node_version, headers from $nodedir)"
rm -rf prebuilds/*/
start=$(date +%s)
node_modules/.bin/prebuildify --napi --strip --tag-libc --target "node@$node_version"
took=$(( $(date +%s) - start ))

shopt -s nullglob
built=(prebuilds/*/*.node)
if (( ${#built[@]} != 1 )); then
  echo "prebuild.sh: expected one .node file under prebuilds/, found ${#built[@]}" >&2
  exit 1
fi
f="${built[0]}"
glibc="$(objdump -T "$f" | grep -o 'GLIBC_[0-9.]*' | sort -uV | tail -1 || true)"
glibcxx="$(objdump -T "$f" | grep -o 'GLIBCXX_[0-9.]*' | sort -uV | tail -1 || true)"
echo "prebuild.sh: $f ($(stat -c %s "$f") bytes, built in ${took}s; needs ${glibc:-no GLIBC symbol versions}${glibcxx:+, $glibcxx})"
