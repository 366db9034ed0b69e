#!/bin/sh
# Run the Check tests under valgrind memcheck: sh tests/valgrind.sh [BUILD] [test...]
# Each test binary runs with CK_FORK=no (one process, so valgrind sees
# every test) and --trace-children=yes, so the inferd and infer-run
# processes the integration tests start are checked too. Any memcheck
# error or definite leak makes that process exit 99, which fails its test
# or the binary. Timeouts are raised: valgrind runs code ~20-50x slower
# (Check's by CK_TIMEOUT_MULTIPLIER, the integration tests' own waits and
# upper time bounds by INFERD_TEST_SLOW, read by tests/daemon_util.h).
# Prints one line per binary and exits 1 when any had errors.
BUILD=${1:-build}
[ $# -gt 0 ] && shift
export INFERD_TEST_DATA=${INFERD_TEST_DATA:-$(cd "$BUILD" && pwd)/testdata}
export INFERD_BUILD=$(cd "$BUILD" && pwd)
export CK_FORK=no
export CK_DEFAULT_TIMEOUT=${CK_DEFAULT_TIMEOUT:-3000}
export CK_TIMEOUT_MULTIPLIER=${CK_TIMEOUT_MULTIPLIER:-20}
export INFERD_TEST_SLOW=${INFERD_TEST_SLOW:-20}
logs="$BUILD/valgrind"
mkdir -p "$logs"
tests=${*:-$(ls "$BUILD"/tests/ | grep '^check_')}
status=0
for t in $tests; do
	t=$(basename "$t")
	rm -f "$logs/$t".*.log
	valgrind -q --error-exitcode=99 --leak-check=full \
		--errors-for-leak-kinds=definite --show-leak-kinds=definite \
		--trace-children=yes --child-silent-after-fork=yes \
		--suppressions="$(dirname "$0")/valgrind.supp" \
		--log-file="$logs/$t.%p.log" "$BUILD/tests/$t" >"$logs/$t.out" 2>&1
	rc=$?
	errs=$(cat "$logs/$t".*.log 2>/dev/null | grep -c 'ERROR SUMMARY: [1-9]\|definitely lost: [1-9]\|^==[0-9]*== [A-Z]')
	summary=$(grep -E '^[0-9]+%: Checks' "$logs/$t.out" | tail -1)
	echo "$t: exit $rc, ${summary:-no summary}, valgrind reports $errs"
	if [ "$rc" != 0 ] || [ "$errs" != 0 ]; then
		status=1
	fi
done
exit $status
