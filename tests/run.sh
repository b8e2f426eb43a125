#!/bin/sh
# Runs every test binary given, from the repository root, and sums their PASS/FAIL/SKIP lines.
# A binary that exits non-zero without printing a FAIL line (a crash, a sanitizer report)
# counts as one failure. Last line: "N passed, N failed, N skipped".
pass=0 fail=0 skip=0
log=build/test-logs
mkdir -p "$log"
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=0}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
for t in "$@"; do
    name=$(basename "$t")
    out="$log/$name.out"
    start=$(date +%s)
    "$t" >"$out" 2>"$log/$name.err"
    rc=$?
    p=$(grep -c '^PASS ' "$out")
    f=$(grep -c '^FAIL ' "$out")
    s=$(grep -c '^SKIP ' "$out")
    if [ "$rc" -ne 0 ] && [ "$f" -eq 0 ]; then f=1; echo "FAIL $name: exited with status $rc" >>"$out"; fi
    pass=$((pass + p)) fail=$((fail + f)) skip=$((skip + s))
    printf '%-28s %3d passed %3d failed %3d skipped  (%ss)\n' "$name" "$p" "$f" "$s" "$(($(date +%s) - start))"
    grep '^SKIP ' "$out" | sed 's/^/    /'
    if [ "$f" -ne 0 ]; then
        grep '^FAIL ' "$out" | sed 's/^/    /'
        tail -n 30 "$log/$name.err" | sed 's/^/    | /'
    fi
done
echo "$pass passed, $fail failed, $skip skipped"
[ "$fail" -eq 0 ]
