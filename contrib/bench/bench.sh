#!/bin/sh
# Prefill/decode throughput of infer-run over a list of models, one table
# row per model (the mean over REPS runs of `infer-run bench`).
#
#   sh contrib/bench/bench.sh [BUILD] [MODEL...]
#
# MODEL is a GGUF file or an HF directory; with none given, the tiny test
# models under BUILD/testdata (run `make tests` first). Knobs (environment):
#   PROMPT=512 GEN=128 REPS=3 THREADS=(all cores) BACKEND=auto
BUILD=${1:-build}
[ $# -gt 0 ] && shift
RUN="$BUILD/infer-run"
[ -x "$RUN" ] || { echo "bench.sh: $RUN not built (run make)" >&2; exit 1; }
PROMPT=${PROMPT:-512}
GEN=${GEN:-128}
REPS=${REPS:-3}
BACKEND=${BACKEND:-auto}
if [ $# -eq 0 ]; then
	T="$BUILD/testdata/models"
	set -- "$T/tiny-llama2" "$T/tiny-llama2-f16.gguf" "$T/tiny-llama2-q8_0.gguf" \
		"$T/tiny-llama3" "$T/tiny-llama3-f16.gguf" "$T/tiny-llama3-q8_0.gguf"
fi
threads=""
[ -n "$THREADS" ] && threads="--threads $THREADS"

printf '%-40s %-8s %6s %6s %14s %14s\n' model quant prompt gen "prefill tok/s" "decode tok/s"
status=0
backend=""
for m in "$@"; do
	out=$("$RUN" bench "$m" -p "$PROMPT" -n "$GEN" -r "$REPS" --backend "$BACKEND" $threads 2>&1)
	if [ $? -ne 0 ]; then
		echo "bench.sh: $m: $out" >&2
		status=1
		continue
	fi
	quant=$(echo "$out" | sed -n 's/^model .* (\(.*\)), backend.*/\1/p')
	pre=$(echo "$out" | sed -n 's/^mean: prefill \([0-9.]*\) tok\/s.*/\1/p')
	dec=$(echo "$out" | sed -n 's/^mean: .*decode \([0-9.]*\) tok\/s.*/\1/p')
	printf '%-40s %-8s %6s %6s %14s %14s\n' "$(basename "$m")" "$quant" "$PROMPT" "$GEN" "$pre" "$dec"
	[ -n "$backend" ] || backend=$(echo "$out" | sed -n 's/^model .*, backend \(.*\)/\1/p' | head -1)
done
[ -n "$backend" ] && echo "backend: $backend; $REPS runs each, mean"
exit $status
