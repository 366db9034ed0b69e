#!/bin/sh
# CPU throughput side by side: llama.cpp against our `infer-run bench`, same
# GGUF files, same thread count. Builds nothing: give it the binaries
# (llama.cpp is built outside this repo, see notes/bench-cpu.md for the
# commit and cmake flags).
#
#   sh contrib/bench/peer_cpu.sh LLAMA_BENCH INFER_RUN MODEL.gguf...
#
# Knobs (environment): THREADS=2 PROMPT=128 GEN=64 ROUNDS=3 WARM=1;
# LB_ARGS, extra llama-bench options (e.g. "--poll 0": its workers sleep
# instead of spinning at barriers, which matters on a loaded machine);
# LBB, llama-batched-bench (default: beside LLAMA_BENCH; "none" skips it).
#
# Three figures per engine and run, each measured the same way for both:
#   prefill  PROMPT tokens in one batch (llama-bench ppN; ours -p PROMPT);
#   tg0      GEN tokens decoded from an empty cache (llama-bench tgN; ours
#            -p 1 -n GEN, one prompt token then GEN decode steps);
#   tgP      GEN tokens decoded after the PROMPT-token prompt, attention
#            over PROMPT..PROMPT+GEN keys (llama-batched-bench -npp PROMPT
#            -ntg GEN -npl 1, its S_TG; ours the decode of the -p PROMPT run).
# The engines run in turns, swapping the order each round, so that load from
# other processes on a shared machine falls on both alike. infer-run repeats
# each measurement 1+WARM times in one process and the last one counts;
# llama-bench does its own warm-up run. Every run prints one line with the
# 1-minute load average before it; each model ends with the median and the
# best run of each engine and the ratio ours / llama.cpp.
set -u
[ $# -ge 3 ] || {
	echo "usage: $0 LLAMA_BENCH INFER_RUN MODEL.gguf..." >&2
	exit 2
}
LB=$1
IR=$2
shift 2
LBB=${LBB:-$(dirname "$LB")/llama-batched-bench}
[ -x "$LB" ] || { echo "peer_cpu.sh: $LB is not executable" >&2; exit 1; }
[ -x "$IR" ] || { echo "peer_cpu.sh: $IR is not executable" >&2; exit 1; }
[ "$LBB" = none ] || [ -x "$LBB" ] || {
	echo "peer_cpu.sh: $LBB is not executable (LBB=none skips tgP)" >&2
	exit 1
}
THREADS=${THREADS:-2}
PROMPT=${PROMPT:-128}
GEN=${GEN:-64}
ROUNDS=${ROUNDS:-3}
WARM=${WARM:-1}
LB_ARGS=${LB_ARGS:-}
REPS=$((1 + WARM))

load() { cut -d' ' -f1 /proc/loadavg; }

# llama.cpp, one measurement of each; prints "PREFILL TG0 TGP".
run_llama() {
	v=$("$LB" -m "$1" -t "$THREADS" -p "$PROMPT" -n "$GEN" -r 1 -o csv $LB_ARGS \
		2>/dev/null | awk -F, '
		{ gsub(/"/, "") }
		NR == 1 { for (i = 1; i <= NF; i++) col[$i] = i; next }
		$col["n_prompt"] > 0 { pp = $col["avg_ts"] }
		$col["n_gen"] > 0 { tg = $col["avg_ts"] }
		END { if (pp == "" || tg == "") exit 1; printf "%.1f %.1f\n", pp, tg }') ||
		return 1
	tgp=-
	if [ "$LBB" != none ]; then
		# table row: | PP | TG | B | N_KV | T_PP | S_PP | T_TG | S_TG | ...
		tgp=$("$LBB" -m "$1" -t "$THREADS" -c $((PROMPT + GEN + 16)) \
			-npp "$PROMPT" -ntg "$GEN" -npl 1 2>/dev/null | awk -F'|' -v p="$PROMPT" '
			$2 + 0 == p && NF > 9 { gsub(/ /, "", $9); printf "%.1f", $9; ok = 1 }
			END { if (!ok) exit 1 }') || return 1
	fi
	echo "$v $tgp"
}

# infer-run bench; prints "PREFILL DECODE" of the last repetition.
ours_bench() {
	"$IR" bench "$1" -t "$THREADS" -p "$2" -n "$GEN" -r "$REPS" \
		--backend cpu 2>/dev/null | sed -n \
		's/^run [0-9]*: prefill [0-9]* tokens \([0-9.]*\) tok\/s, decode [0-9]* tokens \([0-9.]*\) tok\/s$/\1 \2/p' |
		tail -n 1 | grep .
}

# ours, one measurement of each; prints "PREFILL TG0 TGP".
run_ours() {
	a=$(ours_bench "$1" "$PROMPT") || return 1
	b=$(ours_bench "$1" 1) || return 1
	echo "${a% *} ${b#* } ${a#* }"
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
				pf=${v%% *} t0=${v#* }
				tp=${t0#* } t0=${t0%% *}
				printf '%-30s round %d %-6s prefill %8s tg0 %7s tgP %7s tok/s  (load %s)\n' \
					"$(basename "$m")" "$r" "$eng" "$pf" "$t0" "$tp" "$l"
				echo "$eng $v" >>"$log"
			else
				echo "peer_cpu.sh: $eng failed on $m" >&2
				status=1
			fi
		done
		r=$((r + 1))
	done
	ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a + 0 > 0 && b + 0 > 0) printf "%.2f", a / b; else printf "-" }'; }
	k=2
	for what in prefill tg0 tgP; do
		for eng in llama ours; do
			awk -v e="$eng" -v k="$k" '$1 == e && $k != "-" { print $k }' "$log" |
				sort -g | awk '{ v[NR] = $1 }
				END { if (!NR) { print "- -"; exit }
				      m = NR % 2 ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2
				      printf "%.2f %.2f\n", m, v[NR] }' >"$log.$eng"
		done
		read -r lm lb <"$log.llama"
		read -r om ob <"$log.ours"
		printf '%s: %-7s median ours %s llama.cpp %s (x%s), best %s / %s (x%s)\n' \
			"$(basename "$m")" "$what" "$om" "$lm" "$(ratio "$om" "$lm")" \
			"$ob" "$lb" "$(ratio "$ob" "$lb")"
		k=$((k + 1))
	done
	rm -f "$log" "$log.llama" "$log.ours"
done
exit $status
