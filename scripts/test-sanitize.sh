#!/usr/bin/env bash
# The C++ core tests (ctest: unit tests, engines over socketpairs, and the fuzz
# corpus replay) under AddressSanitizer + UndefinedBehaviorSanitizer, then
# under ThreadSanitizer. Separate build dirs: build-native-address-undefined,
# build-native-thread (scripts/test-native.sh).
# Fails on any test failure and on any sanitizer report, even one that did not
# change a test's exit status.
# Usage: scripts/test-sanitize.sh
set -uo pipefail
cd "$(dirname "$0")/.."

# Every report is fatal (UBSan: the builds also use -fno-sanitize-recover=all).
export ASAN_OPTIONS="${ASAN_OPTIONS:-halt_on_error=1:abort_on_error=1:detect_leaks=1:detect_stack_use_after_return=1:strict_init_order=1:check_initialization_order=1}"
export UBSAN_OPTIONS="${UBSAN_OPTIONS:-halt_on_error=1:print_stacktrace=1}"
export TSAN_OPTIONS="${TSAN_OPTIONS:-halt_on_error=1:second_deadlock_stack=1}"

report='ERROR: (Address|Leak)Sanitizer|WARNING: ThreadSanitizer|runtime error:|SUMMARY: [A-Za-z]*Sanitizer'
failed=()
for san in address,undefined thread; do
  echo "== core tests under -fsanitize=$san"
  log="$(mktemp)"
  start=$(date +%s)
  # ctest prints only failing tests' output; with halt_on_error every report
  # fails its test, and the log is searched for reports all the same.
  bash scripts/test-native.sh "$san" >"$log" 2>&1
  rc=$?
  took=$(( $(date +%s) - start ))
  grep -E '^[0-9]+/[0-9]+ Test|tests passed|tests failed|Errors while' "$log" || true
  if (( rc != 0 )); then
    echo "!! $san: test-native.sh exited $rc after ${took}s; output:" >&2
    tail -n 200 "$log" >&2
    failed+=("$san")
  elif grep -qE "$report" "$log"; then
    echo "!! $san: sanitizer report:" >&2
    grep -E -A 30 "$report" "$log" | head -n 200 >&2
    failed+=("$san")
  else
    echo "-- $san: clean (${took}s)"
  fi
  rm -f "$log"
done

if (( ${#failed[@]} )); then
  echo "test-sanitize: FAILED: ${failed[*]}" >&2
  exit 1
fi
echo "test-sanitize: all clean"
