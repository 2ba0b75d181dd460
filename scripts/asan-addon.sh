#!/usr/bin/env bash
# Builds the addon with AddressSanitizer (+ UndefinedBehaviorSanitizer) into
# build-asan-addon/ -- build/Release is left alone -- and runs the vitest suite
# against it: the ASan runtime is preloaded into every Node process
# (LD_PRELOAD=$(gcc -print-file-name=libasan.so)) and UDS_IPC_ADDON_PATH points
# src/binding.ts at the instrumented build. Both variables are in the
# environment of vitest's forked workers and of every child process the tests
# spawn (they pass process.env on).
#
# Usage: scripts/asan-addon.sh [vitest args...]   e.g. test/roundtrip.test.ts
# Env:   ASAN_ADDON_DIR   build directory (default build-asan-addon)
#        ASAN_ADDON_LEAKS=1  also run LeakSanitizer at every process exit and fail
#                         on leaks allocated by the addon's own code (Node's
#                         leaks at exit are filtered out; exit codes unchanged)
#        ASAN_ADDON_QUARANTINE_MB  ASan quarantine size (default 16)
#
# Every process writes its sanitizer reports to $dir/reports/asan.<pid>; the
# script fails if vitest fails or if any report was written, and prints them.
set -euo pipefail
cd "$(dirname "$0")/.."
root="$PWD"
dir="${ASAN_ADDON_DIR:-build-asan-addon}"
mkdir -p "$dir"
dir="$(cd "$dir" && pwd)"
src="$dir/src"

libasan="$(gcc -print-file-name=libasan.so)"
[[ -f "$libasan" ]] || { echo "asan-addon: gcc has no libasan.so (Debian: apt-get install -y libasan8)" >&2; exit 2; }

# 1. A copy of what binding.gyp compiles (cp -p keeps mtimes: rebuilds are incremental).
mkdir -p "$src/native"
cp -p binding.gyp "$src/"
rm -rf "$src/native/core.new" "$src/native/addon.new"
cp -rp native/core "$src/native/core.new"
cp -rp native/addon "$src/native/addon.new"
for d in core addon; do
  if [[ -d "$src/native/$d" ]] && diff -rq "$src/native/$d" "$src/native/$d.new" >/dev/null; then
    rm -rf "$src/native/$d.new"
  else
    rm -rf "$src/native/$d"
    mv "$src/native/$d.new" "$src/native/$d"
  fi
done
ln -sfn "$root/node_modules" "$src/node_modules"

# 2. Build. -O1 -g: readable stacks; later flags override binding.gyp's -O3.
nodedir="${npm_config_nodedir:-$(npm config get nodedir 2>/dev/null || true)}"
gyp_args=(--directory "$src" --release --jobs "$(nproc)")
[[ -n "$nodedir" && "$nodedir" != undefined && "$nodedir" != null ]] && gyp_args+=(--nodedir "$nodedir")
san="-fsanitize=address,undefined -fno-sanitize=vptr -fno-sanitize-recover=undefined -fno-omit-frame-pointer"
export CFLAGS="$san -O1 -g" CXXFLAGS="$san -O1 -g" LDFLAGS="-fsanitize=address,undefined"
echo "== building the addon with ASan+UBSan in $src"
t0=$(date +%s)
gyp="$root/node_modules/.bin/node-gyp"
if [[ ! -f "$src/build/Makefile" || binding.gyp -nt "$src/build/Makefile" ]]; then
  "$gyp" configure "${gyp_args[@]}" >"$dir/build.log" 2>&1 || { cat "$dir/build.log" >&2; exit 1; }
fi
"$gyp" build "${gyp_args[@]}" >>"$dir/build.log" 2>&1 || { tail -50 "$dir/build.log" >&2; exit 1; }
unset CFLAGS CXXFLAGS LDFLAGS
addon="$src/build/Release/uds_ipc.node"
readelf -d "$addon" | grep -q 'libasan' || { echo "asan-addon: $addon is not linked against libasan" >&2; exit 1; }
echo "   built in $(( $(date +%s) - t0 ))s: $addon"

# 3. dist/ must match src/ (the child-process fixtures load dist/index.js).
npm run --silent build:ts

# 4. The suite, instrumented.
reports="$dir/reports"
rm -rf "$reports"
mkdir -p "$reports"
leaks=0
[[ "${ASAN_ADDON_LEAKS:-0}" == 1 ]] && leaks=1
# A 16 MiB quarantine (default 256 MiB) keeps freed memory poisoned long enough
# to catch a use-after-free of recently freed slabs, without inflating RSS so
# much that the suite's memory-bound assertions measure ASan instead of us.
asan_opts="log_path=$reports/asan:halt_on_error=1:abort_on_error=1:detect_leaks=$leaks"
asan_opts+=":quarantine_size_mb=${ASAN_ADDON_QUARANTINE_MB:-16}"
echo "== vitest with LD_PRELOAD=$libasan"
t0=$(date +%s)
set +e
LD_PRELOAD="$libasan" \
UDS_IPC_ADDON_PATH="$addon" \
ASAN_OPTIONS="$asan_opts" \
LSAN_OPTIONS="exitcode=0" \
UBSAN_OPTIONS="log_path=$reports/ubsan:halt_on_error=1:print_stacktrace=1" \
  "$root/node_modules/.bin/vitest" run "$@"
rc=$?
set -e
echo "   vitest exited $rc after $(( $(date +%s) - t0 ))s"

# 5. Reports. With leak checking on, only leaks allocated by the addon count.
# A LeakSanitizer report is a list of blocks ("Direct leak of N byte(s)..."
# then the allocation stack); a block is ours when, walking up from the
# allocator, a frame in the addon's sources comes before any frame of Node
# itself (V8 memory allocated on our behalf and never freed at process.exit()
# is Node's business).
addon_leaks() {
  awk 'BEGIN { RS = ""; ORS = "\n\n" }
    /(Direct|Indirect) leak of/ {
      n = split($0, L, "\n")
      for (i = 1; i <= n; i++) {
        if (L[i] !~ /^ *#[0-9]+ / || L[i] ~ /^ *#0 /) continue
        if (L[i] ~ /\/bin\/node|libnode|<unknown module>/) break
        if (L[i] ~ /native\/(core|addon)\/|napi-inl\.h|uds_ipc\.node/) { print; break }
      }
    }' "$1"
}
bad=0
shopt -s nullglob
for f in "$reports"/*; do
  if grep -q 'ERROR: LeakSanitizer' "$f" && ! grep -qE 'ERROR: AddressSanitizer|runtime error' "$f"; then
    # Leak-only report: only the addon's leaks count.
    found="$(addon_leaks "$f")"
    [[ -z "$found" ]] && continue
    echo "!! leaks in the addon ($f):" >&2
    echo "$found" >&2
    bad=1
    continue
  fi
  echo "!! sanitizer report $f:" >&2
  cat "$f" >&2
  bad=1
done
if (( rc != 0 || bad )); then
  echo "asan-addon: FAILED (vitest exit $rc, reports: $bad)" >&2
  exit 1
fi
echo "asan-addon: vitest passed under ASan with no sanitizer report"
