#!/usr/bin/env bash
# Builds the libFuzzer targets of the core with clang and runs one of them.
#
# Usage: scripts/fuzz.sh [seconds] [target] [-- extra libFuzzer flags]
#   seconds  how long to fuzz (default 60)
#   target   frame_assembler (default); append _fast for the build without
#            ASan/UBSan (more executions per second, only invariant checks)
# Env: FUZZ_JOBS=N  run N fuzzing processes in parallel (libFuzzer -fork=N)
#      FUZZ_MAX_LEN  largest input in bytes (default 4096: slabs as small as 16 B
#                    reach every path with small inputs, and small inputs run fast)
#      FUZZ_BUILD   build directory (default build-fuzz)
#
# Needs clang with the compiler-rt fuzzer runtime (Debian/Ubuntu:
#   apt-get install -y clang libclang-rt-14-dev   -- or the version of your clang).
# New interesting inputs go to $FUZZ_BUILD/corpus/<target> (not committed);
# the committed seeds in native/fuzz/corpus/<target> are read, never written.
# A crash leaves its reproducer in $FUZZ_BUILD/artifacts/ and the script fails;
# replay it with: $FUZZ_BUILD/native/fuzz/fuzz_<target> <file>
set -euo pipefail
cd "$(dirname "$0")/.."

secs="${1:-60}"
target="${2:-frame_assembler}"
shift $(( $# > 2 ? 2 : $# ))
[[ "${1:-}" == "--" ]] && shift
extra=("$@")
[[ "$secs" =~ ^[0-9]+$ ]] || { echo "fuzz.sh: seconds must be an integer, got '$secs'" >&2; exit 2; }

dir="${FUZZ_BUILD:-build-fuzz}"
base="${target%_fast}"
seeds="native/fuzz/corpus/$base"
[[ -d "$seeds" ]] || { echo "fuzz.sh: no seed corpus $seeds" >&2; exit 2; }

CC="${CC:-clang}"
CXX="${CXX:-clang++}"
if ! command -v "$CXX" >/dev/null; then
  echo "fuzz.sh: $CXX not found. Install clang (Debian: apt-get install -y clang libclang-rt-14-dev)." >&2
  exit 2
fi

CC="$CC" CXX="$CXX" cmake -S . -B "$dir" -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
if ! grep -q '^UDS_HAVE_LIBFUZZER:INTERNAL=1' "$dir/CMakeCache.txt"; then
  echo "fuzz.sh: $CXX cannot link -fsanitize=fuzzer (missing compiler-rt fuzzer runtime?)." >&2
  echo "         Debian: apt-get install -y libclang-rt-\$(clang -dumpversion | cut -d. -f1)-dev; then rm -rf $dir" >&2
  exit 2
fi
cmake --build "$dir" -j "$(nproc)" --target "fuzz_$target" >/dev/null

bin="$dir/native/fuzz/fuzz_$target"
work="$dir/corpus/$base"
art="$dir/artifacts/"
log="$dir/fuzz-$target.log"
mkdir -p "$work" "$art"

flags=(-max_total_time="$secs" -print_final_stats=1 -max_len="${FUZZ_MAX_LEN:-4096}" -timeout=10 -rss_limit_mb=4096 -artifact_prefix="$art")
if [[ -n "${FUZZ_JOBS:-}" && "${FUZZ_JOBS}" != 1 ]]; then flags+=(-fork="$FUZZ_JOBS"); fi

echo "== fuzz_$target for ${secs}s (corpus $work + seeds $seeds; log $log)"
start=$(date +%s)
set +e
ASAN_OPTIONS="${ASAN_OPTIONS:-abort_on_error=1:detect_leaks=1}" \
UBSAN_OPTIONS="${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}" \
  "$bin" "${flags[@]}" "${extra[@]}" "$work" "$seeds" >"$log" 2>&1
rc=$?
set -e
took=$(( $(date +%s) - start ))

# Total executions: the final stats of a single process, or the last status
# line of the fork-mode supervisor.
execs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | tail -1 | grep -o '[0-9]*$' || true)
if [[ -z "$execs" ]]; then
  execs=$(grep -oE '#[0-9]+' "$log" | tail -1 | tr -d '#' || true)
fi
rate=$(grep -o 'stat::average_exec_per_sec: *[0-9]*' "$log" | tail -1 | grep -o '[0-9]*$' || true)
units=$(find "$work" -type f | wc -l)
echo "fuzz_$target: ${execs:-?} executions in ${took}s (${rate:-?} exec/s), corpus $units inputs, exit $rc"
if (( rc != 0 )) || grep -qE '^==[0-9]+==ERROR|runtime error:|invariant violated|deadly signal' "$log"; then
  echo "fuzz.sh: FAILURE -- see $log; reproducer(s):" >&2
  ls -1 "$art" >&2 || true
  grep -E 'ERROR|runtime error|invariant violated|SUMMARY|Test unit written' "$log" | head -20 >&2 || true
  exit 1
fi
