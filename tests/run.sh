#!/bin/sh
# Run every Check test binary, then print one closing line summing them:
# "N passed, N failed, N skipped". Skips are tests that print a line
# starting with "SKIP:" (no GPU, no demo model) and count as passed checks
# in Check's own figures, so they are reported separately here.
BUILD=${1:-build}
export INFERD_TEST_DATA=${INFERD_TEST_DATA:-$(cd "$BUILD" && pwd)/testdata}
export INFERD_BUILD=$(cd "$BUILD" && pwd)
# The test binaries live in $BUILD/tests, not beside the CUDA backend.
if [ -z "$INFERD_CUDA_LIB" ] && [ -f "$INFERD_BUILD/libinferd-cuda.so" ]; then
	export INFERD_CUDA_LIB="$INFERD_BUILD/libinferd-cuda.so"
fi
: "${CK_DEFAULT_TIMEOUT:=300}"; export CK_DEFAULT_TIMEOUT
pass=0; fail=0; skip=0; bad=0
log=$(mktemp)
for t in "$BUILD"/tests/check_*; do
	[ -x "$t" ] || continue
	echo "== $(basename "$t")"
	"$t" >"$log" 2>&1; rc=$?
	cat "$log"
	line=$(grep -E '^[0-9]+%: Checks: ' "$log" | tail -1)
	if [ -z "$line" ]; then
		echo "!! $(basename "$t") printed no Check summary (exit $rc)"
		bad=$((bad + 1)); fail=$((fail + 1)); continue
	fi
	n=$(echo "$line" | sed -E 's/.*Checks: ([0-9]+).*/\1/')
	f=$(echo "$line" | sed -E 's/.*Failures: ([0-9]+).*/\1/')
	e=$(echo "$line" | sed -E 's/.*Errors: ([0-9]+).*/\1/')
	s=$(grep -c '^SKIP:' "$log")
	pass=$((pass + n - f - e - s)); fail=$((fail + f + e)); skip=$((skip + s))
	[ "$rc" -ne 0 ] && [ $((f + e)) -eq 0 ] && { echo "!! exit $rc"; fail=$((fail + 1)); }
done
rm -f "$log"
echo "$pass passed, $fail failed, $skip skipped"
[ "$fail" -eq 0 ]
