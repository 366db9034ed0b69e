#!/bin/sh
# CUDA benchmark: infer-run bench --backend cuda next to llama.cpp's
# llama-bench on the same random-weight GGUF files (contrib/bench/
# make_gguf.py), batch 1: prefill of 512 tokens and decode of 128.
#
#   sh contrib/bench/cuda_bench.sh [BUILD]
#
# Knobs (environment): DIR=/tmp/inferd-bench (GGUFs are written there
# when missing), MODELS="tinyllama-1.1b:f16 llama2-7b:f16 llama2-7b:q4_0",
# LLAMA_BENCH=path/to/llama-bench (side by side when set), REPS=3,
# BW=4.8 (TB/s, the roofline for the decode column), BACKEND=cuda,
# VOCAB=a GGUF whose
# tokenizer the files copy (default: the tiny-llama2 test model).
BUILD=${1:-build}
DIR=${DIR:-/tmp/inferd-bench}
MODELS=${MODELS:-"tinyllama-1.1b:f16 llama2-7b:f16 llama2-7b:q4_0"}
REPS=${REPS:-3}
BW=${BW:-4.8}
VOCAB=${VOCAB:-$BUILD/testdata/models/tiny-llama2-f16.gguf}
HERE=$(dirname "$0")
mkdir -p "$DIR" || exit 1

# Missing GGUFs are generated in parallel (numpy, one core each).
for m in $MODELS; do
	f="$DIR/${m%%:*}-${m##*:}.gguf"
	[ -f "$f" ] || python3 "$HERE/make_gguf.py" "$f" --shape "${m%%:*}" \
		--type "${m##*:}" --vocab-from "$VOCAB" >"$f.log" 2>&1 &
done
wait

printf '%-22s %6s %8s %10s %10s %10s %10s %9s\n' model GB "" \
	"prefill" "decode" "llama pp" "llama tg" "roofline"
for m in $MODELS; do
	f="$DIR/${m%%:*}-${m##*:}.gguf"
	[ -f "$f" ] || { echo "$f: not generated (see $f.log)"; continue; }
	gb=$(python3 -c "import os;print('%.2f'%(os.path.getsize('$f')/1e9))")
	out=$("$BUILD/infer-run" bench "$f" -p 512 -n 128 -r "$REPS" \
		--backend "${BACKEND:-cuda}" 2>&1)
	# mean of the warm runs (the first one pays cuBLAS and graph set-up)
	pp=$(echo "$out" | sed -n 's/^run [0-9]*: prefill 512 tokens \([0-9.]*\) tok\/s.*/\1/p' |
		awk 'NR>1{s+=$1;n++} END{if(n)printf "%.0f", s/n}')
	tg=$(echo "$out" | sed -n 's/^run [0-9]*: .*decode 128 tokens \([0-9.]*\) tok\/s.*/\1/p' |
		awk 'NR>1{s+=$1;n++} END{if(n)printf "%.1f", s/n}')
	[ -n "$pp" ] || echo "$out" | tail -3
	lpp="-" ltg="-"
	if [ -n "$LLAMA_BENCH" ] && [ -x "$LLAMA_BENCH" ]; then
		csv=$("$LLAMA_BENCH" -m "$f" -p 512 -n 128 -ngl 99 -fa 1 -o csv 2>/dev/null)
		lpp=$(echo "$csv" | python3 -c '
import csv,sys
r=list(csv.DictReader(sys.stdin))
print(" ".join("%s:%.1f"%("pp" if int(x["n_prompt"]) else "tg",float(x["avg_ts"])) for x in r))')
		ltg=$(echo "$lpp" | tr ' ' '\n' | sed -n 's/^tg://p')
		lpp=$(echo "$lpp" | tr ' ' '\n' | sed -n 's/^pp://p')
	fi
	roof=$(python3 -c "print('%.0f%%'%(100*$gb*1e9*${tg:-0}/($BW*1e12)))")
	printf '%-22s %6s %8s %10s %10s %10s %10s %9s\n' "${m%%:*} ${m##*:}" \
		"$gb" "" "${pp:--}" "${tg:--}" "${lpp:--}" "${ltg:--}" "$roof"
done
echo "(tokens/s; prefill 512, decode 128, batch 1; roofline = decode x file bytes / ${BW} TB/s)"
