#!/bin/sh
# The demo: fetch SmolLM2-135M-Instruct (Q4_1 GGUF, cached) and ask it
# "What is the capital of France?" with greedy decoding.
#
#   sh contrib/demo.sh [BUILD]        (make demo runs this after building)
#
# When the daemon and client are built (BUILD/inferd, BUILD/infer-client),
# the question goes through them: inferd is started on a temporary socket,
# infer-client asks, and the daemon is stopped. Otherwise, or if that path
# fails, BUILD/infer-run answers directly.
set -u
BUILD=${1:-build}
HERE=$(cd "$(dirname "$0")" && pwd)
QUESTION="What is the capital of France?"
# SmolLM2's template injects a default system prompt when there is none.
# With it (or with "You are a helpful assistant.") the first greedy token
# is a near-tie (0.05 logits), and llama.cpp answers "...is France." or in
# French there; with an empty system message "The" leads by 0.98 and both
# engines answer "The capital of France is Paris." (README, infer-run chat).
SYSTEM=""

MODEL=$(sh "$HERE/fetch-demo-model.sh" | tail -1) || {
	echo "demo: could not fetch the demo model (see above)" >&2
	exit 1
}
[ -f "$MODEL" ] || { echo "demo: no model at '$MODEL'" >&2; exit 1; }

echo "demo: model $MODEL"
echo "demo: question: $QUESTION"

via_daemon() {
	TMP=$(mktemp -d "${TMPDIR:-/tmp}/inferd-demo.XXXXXX") || return 1
	SOCK=$TMP/inferd.sock
	"$BUILD/inferd" --socket "$SOCK" --db "$TMP/inferd.db" \
		--model "smollm2=$MODEL" >"$TMP/inferd.log" 2>&1 &
	PID=$!
	i=0
	while [ ! -S "$SOCK" ] && [ $i -lt 300 ]; do
		kill -0 $PID 2>/dev/null || break
		sleep 0.1
		i=$((i + 1))
	done
	rc=1
	if [ -S "$SOCK" ]; then
		"$BUILD/infer-client" --socket "$SOCK" generate smollm2 --chat \
			--system "$SYSTEM" --temp 0 -n 64 -p "$QUESTION"
		rc=$?
	else
		echo "demo: inferd did not come up; its log:" >&2
		cat "$TMP/inferd.log" >&2
	fi
	kill $PID 2>/dev/null
	wait $PID 2>/dev/null
	rm -rf "$TMP"
	return $rc
}

if [ -x "$BUILD/inferd" ] && [ -x "$BUILD/infer-client" ]; then
	echo "demo: answering through inferd + infer-client"
	via_daemon && exit 0
	echo "demo: the daemon path failed; asking infer-run directly" >&2
fi
[ -x "$BUILD/infer-run" ] || { echo "demo: $BUILD/infer-run is not built" >&2; exit 1; }
echo "demo: answering with infer-run chat"
exec "$BUILD/infer-run" chat "$MODEL" --system "$SYSTEM" --temp 0 -n 64 -p "$QUESTION"
