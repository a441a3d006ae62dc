#!/usr/bin/env bash
# test.sh — the whole test suite: the release build's tests, the same tests
# under AddressSanitizer + UndefinedBehaviorSanitizer, and a short fuzz run
# of every fuzz target.  Ends with one summary line "N passed, M failed".
#
#   scripts/test.sh                 # everything (about 15 minutes on 2 cores)
#   LLMC_FUZZ_SECONDS=0 scripts/test.sh   # skip the fuzz run
set -uo pipefail
cd "$(dirname "$0")/.."
FUZZ_SECONDS="${LLMC_FUZZ_SECONDS:-30}"
JOBS="$(nproc)"
passed=0; failed=0; skipped=0
log=$(mktemp)

count() {   # parse ctest's output
  local out="$1"
  local total fail skip
  total=$(grep -Eo 'tests failed out of [0-9]+' "$out" | grep -Eo '[0-9]+$' | tail -1)
  fail=$(grep -Eo '[0-9]+ tests failed out of' "$out" | grep -Eo '^[0-9]+' | tail -1)
  skip=$(grep -c '\*\*\*Skipped\|Not Run.*Skipped\| Skipped ' "$out" || true)
  total=${total:-0}; fail=${fail:-0}
  passed=$((passed + total - fail - skip)); failed=$((failed + fail)); skipped=$((skipped + skip))
}

echo "== release build =="
scripts/bootstrap.sh || { echo "0 passed, 1 failed"; exit 1; }
ctest --test-dir build -j"$JOBS" --output-on-failure 2>&1 | tee "$log"
count "$log"

echo "== sanitizer build (ASan + UBSan) =="
cmake -S . -B build-asan -DCMAKE_BUILD_TYPE=Debug -DLLMC_SANITIZE=ON -DLLMC_CUDA=OFF >/dev/null &&
  cmake --build build-asan -j"$JOBS" >/dev/null || { echo "sanitizer build failed"; failed=$((failed + 1)); }
if [ -x build-asan/llmc ]; then
  # Leaks are checked (LeakSanitizer); OpenBLAS's thread pool and readline keep
  # process-lifetime allocations, suppressed by tests/asan.supp.
  ASAN_OPTIONS="detect_leaks=1:abort_on_error=1" LSAN_OPTIONS="suppressions=$PWD/tests/asan.supp:print_suppressions=0" \
  UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1" LLMC_SANITIZED=1 \
    ctest --test-dir build-asan -j"$JOBS" --output-on-failure -LE slow 2>&1 | tee "$log"
  count "$log"
fi

if [ "$FUZZ_SECONDS" -gt 0 ] && command -v clang >/dev/null; then
  echo "== fuzzing (${FUZZ_SECONDS}s per target) =="
  cmake -S . -B build-fuzz -DCMAKE_C_COMPILER=clang -DCMAKE_BUILD_TYPE=Debug -DLLMC_FUZZ=ON -DLLMC_CUDA=OFF >/dev/null &&
    cmake --build build-fuzz -j"$JOBS" >/dev/null || { echo "fuzz build failed"; failed=$((failed + 1)); }
  for f in build-fuzz/fuzz_*; do
    case "$f" in *_replay) continue;; esac
    [ -x "$f" ] || continue
    name=$(basename "$f")
    work=$(mktemp -d)
    cp -r "tests/fuzz/corpus/$name/." "$work/" 2>/dev/null || true
    if "$f" -max_total_time="$FUZZ_SECONDS" -rss_limit_mb=2048 -print_final_stats=1 "$work" >"$log" 2>&1; then
      echo "$name: $(grep -E 'stat::number_of_executed_units' "$log" | awk '{print $2}') executions, no crash"
      passed=$((passed + 1))
    else
      echo "$name: CRASH"; tail -40 "$log"; failed=$((failed + 1))
    fi
    rm -rf "$work"
  done
fi
rm -f "$log"
echo "total: $passed passed, $failed failed, $skipped skipped"
[ "$failed" -eq 0 ]
