#!/bin/sh
# Run each libFuzzer target for a set time: sh tests/fuzz/run.sh BUILD SECONDS TARGET...
# Working corpora grow in BUILD/corpus/<target> (seeded from the committed
# tests/fuzz/corpus/<target>); crashes go to BUILD/crashes/<target>/, logs
# to BUILD/logs/<target>.log. Prints one line per target: executions run,
# seconds, corpus size, crashes; exits 1 when any target crashed.
# FUZZ_JOBS=N runs N targets at once (default 1; the machine is shared).
build=$1
secs=$2
shift 2
root=$(cd "$(dirname "$0")/../.." && pwd)
export INFERD_TEST_DATA="$root/$build/testdata"
# leaks found at exit would hide real crashes behind noise from the
# targets' static tokenizers: ASan's leak check stays on per input
export ASAN_OPTIONS="${ASAN_OPTIONS:-abort_on_error=1:detect_leaks=1}"
export UBSAN_OPTIONS="${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}"
mkdir -p "$build/logs"
status=0
for t in "$@"; do
	seeds="$root/tests/fuzz/corpus/$t"
	work="$build/corpus/$t"
	crashes="$build/crashes/$t"
	mkdir -p "$work" "$crashes" "$seeds"
	log="$build/logs/$t.log"
	nice -n 5 "$build/fuzz/$t" -max_total_time="$secs" -timeout=25 \
		-rss_limit_mb=2560 -malloc_limit_mb=1024 -max_len=65536 \
		-print_final_stats=1 -artifact_prefix="$crashes/" \
		"$work" "$seeds" >"$log" 2>&1
	rc=$?
	runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
	took=$(sed -n 's/^Done [0-9]* runs in \([0-9]*\) second.*/\1/p' "$log" | tail -1)
	ncrash=$(find "$crashes" -type f | wc -l)
	ncorp=$(find "$work" -type f | wc -l)
	echo "$t: ${runs:-?} executions in ${took:-$secs} s, corpus $ncorp, crashes $ncrash (rc $rc)"
	if [ "$rc" != 0 ] || [ "$ncrash" != 0 ]; then
		status=1
		grep -m3 -E 'ERROR|SUMMARY|runtime error' "$log"
	fi
done
exit $status
