#!/bin/sh
# CPU throughput side by side: llama.cpp's llama-bench against our
# `infer-run bench`, same GGUF files, same thread count. Builds nothing: give
# it the two binaries (llama.cpp is built outside this repo, see
# notes/bench-cpu.md for the commit and cmake flags).
#
#   sh contrib/bench/peer_cpu.sh LLAMA_BENCH INFER_RUN MODEL.gguf...
#
# Knobs (environment): THREADS=2 PROMPT=128 GEN=64 ROUNDS=3 WARM=1, and
# LB_ARGS, extra llama-bench options (e.g. "--poll 0": its workers sleep
# instead of spinning at barriers, which matters on a loaded machine).
#
# The two engines run in turns, first one then the other, swapping the order
# each round, one measurement per run, so that load from other processes on a
# shared machine falls on both alike. llama-bench measures prefill (ppN) and
# decode from an empty cache (tgN) as two tests, after its own warm-up run;
# infer-run prefills PROMPT tokens and then decodes GEN tokens after them,
# repeated 1+WARM times in one process, and the last repetition counts.
# Every run prints one line with the 1-minute load average before it; each
# model ends with the median and the best run of each engine and the ratio
# ours / llama.cpp (best is the run least disturbed by others).
set -u
[ $# -ge 3 ] || {
	echo "usage: $0 LLAMA_BENCH INFER_RUN MODEL.gguf..." >&2
	exit 2
}
LB=$1
IR=$2
shift 2
[ -x "$LB" ] || { echo "peer_cpu.sh: $LB is not executable" >&2; exit 1; }
[ -x "$IR" ] || { echo "peer_cpu.sh: $IR is not executable" >&2; exit 1; }
THREADS=${THREADS:-2}
PROMPT=${PROMPT:-128}
GEN=${GEN:-64}
ROUNDS=${ROUNDS:-3}
WARM=${WARM:-1}
LB_ARGS=${LB_ARGS:-}
REPS=$((1 + WARM))

load() { cut -d' ' -f1 /proc/loadavg; }

# llama-bench, one measurement of pp and tg; prints "PREFILL DECODE".
run_llama() {
	"$LB" -m "$1" -t "$THREADS" -p "$PROMPT" -n "$GEN" -r 1 -o csv $LB_ARGS \
		2>/dev/null | awk -F, '
		{ gsub(/"/, "") }
		NR == 1 { for (i = 1; i <= NF; i++) col[$i] = i; next }
		$col["n_prompt"] > 0 { pp = $col["avg_ts"] }
		$col["n_gen"] > 0 { tg = $col["avg_ts"] }
		END { if (pp == "" || tg == "") exit 1; printf "%.1f %.1f\n", pp, tg }'
}

# infer-run bench; prints "PREFILL DECODE" of the last repetition.
run_ours() {
	"$IR" bench "$1" -t "$THREADS" -p "$PROMPT" -n "$GEN" -r "$REPS" \
		--backend cpu 2>/dev/null | sed -n \
		's/^run [0-9]*: prefill [0-9]* tokens \([0-9.]*\) tok\/s, decode [0-9]* tokens \([0-9.]*\) tok\/s$/\1 \2/p' |
		tail -n 1 | grep .
}

echo "threads $THREADS, prompt $PROMPT, gen $GEN, rounds $ROUNDS, llama-bench args '$LB_ARGS'; $(nproc) cores"
status=0
for m in "$@"; do
	[ -r "$m" ] || { echo "peer_cpu.sh: cannot read $m" >&2; status=1; continue; }
	log=$(mktemp) || exit 1
	r=1
	while [ "$r" -le "$ROUNDS" ]; do
		if [ $((r % 2)) -eq 1 ]; then order="llama ours"; else order="ours llama"; fi
		for eng in $order; do
			l=$(load)
			if v=$(run_$eng "$m"); then
				printf '%-30s round %d %-6s prefill %8s decode %8s tok/s  (load %s)\n' \
					"$(basename "$m")" "$r" "$eng" ${v% *} ${v#* } "$l"
				echo "$eng $v" >>"$log"
			else
				echo "peer_cpu.sh: $eng failed on $m" >&2
				status=1
			fi
		done
		r=$((r + 1))
	done
	for eng in llama ours; do
		for k in 2 3; do
			awk -v e="$eng" -v k="$k" '$1 == e { print $k }' "$log" |
				sort -g | awk '{ v[NR] = $1 }
				END { if (!NR) { print "- -"; exit }
				      m = NR % 2 ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2
				      printf "%.2f %.2f\n", m, v[NR] }'
		done | tr '\n' ' ' >"$log.$eng"
	done
	# fields: prefill median, prefill best, decode median, decode best
	read -r lpm lpb ldm ldb <"$log.llama"
	read -r opm opb odm odb <"$log.ours"
	ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a + 0 > 0 && b + 0 > 0) printf "%.2f", a / b; else printf "-" }'; }
	printf '%s: prefill median ours %s llama.cpp %s (x%s), best %s / %s (x%s)\n' \
		"$(basename "$m")" "$opm" "$lpm" "$(ratio "$opm" "$lpm")" "$opb" "$lpb" "$(ratio "$opb" "$lpb")"
	printf '%s: decode  median ours %s llama.cpp %s (x%s), best %s / %s (x%s)\n' \
		"$(basename "$m")" "$odm" "$ldm" "$(ratio "$odm" "$ldm")" "$odb" "$ldb" "$(ratio "$odb" "$ldb")"
	rm -f "$log" "$log.llama" "$log.ours"
done
exit $status
