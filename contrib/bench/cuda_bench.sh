#!/bin/sh
# CUDA benchmark: infer-run bench --backend cuda next to llama.cpp's
# llama-bench on the same random-weight GGUF files (contrib/bench/
# make_gguf.py), batch 1: prefill of 512 tokens and decode of 128, the
# decode measured alike for both engines two ways: tg0 from an empty cache
# (llama-bench tg128; ours -p 1 -n 128) and tgP after the 512-token prompt
# (llama-batched-bench -npp 512 -ntg 128 -npl 1, its S_TG; ours the decode
# of the -p 512 run).
#
#   sh contrib/bench/cuda_bench.sh [BUILD]
#
# Knobs (environment): DIR=/tmp/inferd-bench (GGUFs are written there
# when missing), MODELS="tinyllama-1.1b:f16 llama2-7b:f16 llama2-7b:q4_0",
# LLAMA_BENCH=path/to/llama-bench (side by side when set; tgP also needs
# llama-batched-bench beside it), REPS=3,
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

printf '%-20s %6s %8s %8s %8s | %8s %8s %8s | %9s\n' model GB \
	prefill tg0 tgP "llama pp" "tg0" "tgP" "roof tg0"
# mean of the warm runs (the first one pays cuBLAS and graph set-up)
warm_mean() { awk 'NR>1{s+=$1;n++} END{if(n)printf "%.1f", s/n}'; }
for m in $MODELS; do
	f="$DIR/${m%%:*}-${m##*:}.gguf"
	[ -f "$f" ] || { echo "$f: not generated (see $f.log)"; continue; }
	gb=$(python3 -c "import os;print('%.2f'%(os.path.getsize('$f')/1e9))")
	out=$("$BUILD/infer-run" bench "$f" -p 512 -n 128 -r "$REPS" \
		--backend "${BACKEND:-cuda}" 2>&1)
	pp=$(echo "$out" | sed -n 's/^run [0-9]*: prefill 512 tokens \([0-9.]*\) tok\/s.*/\1/p' | warm_mean)
	tgp=$(echo "$out" | sed -n 's/^run [0-9]*: .*decode 128 tokens \([0-9.]*\) tok\/s.*/\1/p' | warm_mean)
	[ -n "$pp" ] || echo "$out" | tail -3
	out=$("$BUILD/infer-run" bench "$f" -p 1 -n 128 -r "$REPS" \
		--backend "${BACKEND:-cuda}" 2>&1)
	tg0=$(echo "$out" | sed -n 's/^run [0-9]*: .*decode 128 tokens \([0-9.]*\) tok\/s.*/\1/p' | warm_mean)
	lpp="-" ltg="-" ltgp="-"
	if [ -n "$LLAMA_BENCH" ] && [ -x "$LLAMA_BENCH" ]; then
		csv=$("$LLAMA_BENCH" -m "$f" -p 512 -n 128 -ngl 99 -fa 1 -o csv 2>/dev/null)
		lpp=$(echo "$csv" | python3 -c '
import csv,sys
r=list(csv.DictReader(sys.stdin))
print(" ".join("%s:%.1f"%("pp" if int(x["n_prompt"]) else "tg",float(x["avg_ts"])) for x in r))')
		ltg=$(echo "$lpp" | tr ' ' '\n' | sed -n 's/^tg://p')
		lpp=$(echo "$lpp" | tr ' ' '\n' | sed -n 's/^pp://p')
		LBB=$(dirname "$LLAMA_BENCH")/llama-batched-bench
		if [ -x "$LBB" ]; then
			# table row: | PP | TG | B | N_KV | T_PP | S_PP | T_TG | S_TG |
			ltgp=$("$LBB" -m "$f" -ngl 99 -fa -c 1024 -npp 512 -ntg 128 \
				-npl 1 2>/dev/null | awk -F'|' '$2 + 0 == 512 && NF > 9 {
				gsub(/ /, "", $9); printf "%.1f", $9 }')
		fi
	fi
	roof=$(python3 -c "print('%.0f%%'%(100*$gb*1e9*${tg0:-0}/($BW*1e12)))")
	printf '%-20s %6s %8s %8s %8s | %8s %8s %8s | %9s\n' "${m%%:*} ${m##*:}" \
		"$gb" "${pp:--}" "${tg0:--}" "${tgp:--}" "${lpp:--}" "${ltg:--}" \
		"${ltgp:--}" "$roof"
done
echo "(tokens/s, batch 1: ours | llama.cpp; prefill 512; tg0 = 128 decoded from an empty cache,"
echo " tgP = 128 decoded after the 512-token prompt; roofline = tg0 x file bytes / ${BW} TB/s)"
