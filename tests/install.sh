#!/bin/sh
# install.sh SRC BUILD TESTDATA - run by check_install: make install into a
# DESTDIR, build contrib/examples/generate.c against the installed
# libinfer.pc, run it against an inferd started from the installed
# binary, check the man pages cover every --help flag, the bash
# completion, then make uninstall leaves nothing behind.
# Prints what failed and exits 1; prints "install test ok" at the end.
set -u
SRC=$1 BUILD=$2 DATA=$3
unset MAKEFLAGS MAKELEVEL MFLAGS # not the outer make's jobserver
T=$(mktemp -d /tmp/inferd-install-XXXXXX) || exit 1
D=$T/dest P=/usr/local
PID=
fail() {
	echo "FAIL: $*"
	[ -n "$PID" ] && kill "$PID" 2>/dev/null
	[ -f "$T/inferd.log" ] && sed 's/^/  inferd: /' "$T/inferd.log" | tail -20
	rm -rf "$T"
	exit 1
}
# Make as the build was made, so nothing is rebuilt here: its
# compiled-in PKGLIBDIR, CUDA only if it built the backend, SANITIZE=1 if
# libinfer.so is instrumented (then the example is too).
PKGLIB=$(cat "$BUILD/.pkglibdir" 2>/dev/null || echo $P/lib/inferd)
CUDA=0; [ -f "$BUILD/libinferd-cuda.so" ] && CUDA=1
SAN=0 XCFLAGS=
if ldd "$BUILD/libinfer.so" | grep -q libasan; then
	SAN=1 XCFLAGS="-fsanitize=address,undefined"
fi
MK="BUILD=$BUILD DESTDIR=$D PREFIX=$P PKGLIBDIR=$PKGLIB CUDA=$CUDA SANITIZE=$SAN"
make -s -C "$SRC" $MK install >"$T/make.log" 2>&1 || { cat "$T/make.log"; fail "make install"; }

for f in bin/inferd bin/infer-client bin/infer-run include/infer.h \
	lib/libinfer.a lib/libinfer.so lib/libinfer.so.0 lib/pkgconfig/libinfer.pc \
	share/man/man8/inferd.8 share/man/man1/infer-client.1 \
	share/man/man1/infer-run.1 share/man/man3/libinfer.3 \
	share/bash-completion/completions/infer-client \
	share/zsh/site-functions/_infer-client \
	lib/systemd/system/inferd.service lib/systemd/system/inferd.socket \
	lib/systemd/user/inferd.service lib/systemd/user/inferd.socket \
	lib/sysusers.d/inferd.conf share/doc/inferd/inferd.conf.example; do
	[ -e "$D$P/$f" ] || fail "not installed: $P/$f"
done
[ "$(readlink "$D$P/lib/libinfer.so")" = libinfer.so.0 ] || fail "libinfer.so -> $(readlink "$D$P/lib/libinfer.so")"
real=$(readlink "$D$P/lib/libinfer.so.0")
case $real in libinfer.so.0.*) ;; *) fail "libinfer.so.0 -> $real" ;; esac
[ -f "$D$P/lib/$real" ] || fail "missing $real"
readelf -d "$D$P/lib/$real" | grep -q 'SONAME.*\[libinfer.so.0\]' || fail "soname"
grep -q "^ExecStart=$P/bin/inferd " "$D$P/lib/systemd/system/inferd.service" || fail "unit ExecStart"
! grep -rq @BINDIR@ "$D$P/lib/systemd" || fail "unit left @BINDIR@"
grep -q "^libdir=$P/lib\$" "$D$P/lib/pkgconfig/libinfer.pc" || fail "pc libdir"
echo "installed into $D$P"

# the units parse cleanly (systemd-analyze logs and ignores bad lines, so
# any output at all fails); ExecStart pointed at the installed binary
if command -v systemd-analyze >/dev/null; then
	mkdir -p "$T/units/system" "$T/units/user" "$T/run"
	for k in system user; do
		for u in inferd.service inferd.socket; do
			sed "s|^ExecStart=$P/bin/|ExecStart=$D$P/bin/|" \
				"$D$P/lib/systemd/$k/$u" >"$T/units/$k/$u"
		done
	done
	out=$(systemd-analyze verify --man=no "$T/units/system/inferd.socket" \
		"$T/units/system/inferd.service" 2>&1) && [ -z "$out" ] \
		|| fail "system units: $out"
	out=$(XDG_RUNTIME_DIR="$T/run" systemd-analyze --user verify --man=no \
		"$T/units/user/inferd.socket" "$T/units/user/inferd.service" 2>&1) \
		&& [ -z "$out" ] || fail "user units: $out"
	echo "systemd units verify cleanly"
fi

# the example, built with the installed pc file (sysroot = DESTDIR)
export PKG_CONFIG_PATH="$D$P/lib/pkgconfig" PKG_CONFIG_SYSROOT_DIR="$D"
flags=$(pkg-config --cflags --libs libinfer) || fail "pkg-config libinfer"
case $flags in *"-I$D$P/include"*"-L$D$P/lib"*) ;; *) fail "pkg-config flags: $flags" ;; esac
cc -Wall -Wextra -Werror $XCFLAGS -o "$T/generate" "$SRC/contrib/examples/generate.c" $flags \
	|| fail "building the example with: $flags"
# statically against libinfer.a, with the .pc file's private libraries
sflags=$(pkg-config --static --libs-only-l libinfer | sed 's/-linfer//') || fail "pkg-config --static"
case $sflags in *-lmsgpackc*) ;; *) fail "pkg-config --static lacks msgpack-c: $sflags" ;; esac
cc -Wall -Wextra -Werror $XCFLAGS $(pkg-config --cflags libinfer) -o "$T/generate-static" \
	"$SRC/contrib/examples/generate.c" -L"$D$P/lib" -Wl,-Bstatic -linfer -Wl,-Bdynamic \
	$sflags -lm -ldl -pthread || fail "static example with: $sflags"
! ldd "$T/generate-static" | grep -q libinfer || fail "static example loads libinfer.so"
# and with its Makefile, as a user would (in a copy: no outputs in SRC)
mkdir -p "$T/ex" && cp "$SRC/contrib/examples/Makefile" "$SRC/contrib/examples/generate.c" "$T/ex/"
make -s -C "$T/ex" CFLAGS="-O2 -Wall -Wextra -Werror $XCFLAGS" >"$T/ex.log" 2>&1 \
	&& [ -x "$T/ex/generate" ] || { cat "$T/ex.log"; fail "make -C contrib/examples"; }
unset PKG_CONFIG_PATH PKG_CONFIG_SYSROOT_DIR
echo "example built with: $flags"
LD_LIBRARY_PATH="$D$P/lib" ldd "$T/generate" | grep -q "libinfer.so.0 => $D$P/lib/" \
	|| fail "example not linked to the installed libinfer.so.0"

# the installed daemon on a temp socket
"$D$P/bin/inferd" --no-config --socket "$T/s" --db "$T/db" --threads 1 --backend cpu \
	--model "l2=$DATA/models/tiny-llama2" 2>"$T/inferd.log" &
PID=$!
i=0
until "$D$P/bin/infer-client" --socket "$T/s" ping >/dev/null 2>&1; do
	i=$((i + 1)); [ $i -lt 200 ] || fail "installed inferd did not come up"
	kill -0 $PID 2>/dev/null || fail "installed inferd exited"
	sleep 0.1
done
LD_LIBRARY_PATH="$D$P/lib" "$T/generate" -s "$T/s" -n 12 l2 "Once upon a time" \
	>"$T/out" 2>"$T/err" || { cat "$T/err"; fail "example run"; }
"$D$P/bin/infer-run" generate "$DATA/models/tiny-llama2" -p "Once upon a time" \
	-n 12 --temp 0 --ignore-eos --threads 1 --backend cpu >"$T/ref" 2>/dev/null \
	|| fail "installed infer-run"
# golden.json greedy_text starts "prest defeat head..." (HF transformers)
grep -q "^prest defeat head" "$T/out" || fail "example printed: $(cat "$T/out")"
[ "$(head -c "$(wc -c <"$T/ref")" "$T/out")" = "$(cat "$T/ref")" ] \
	|| fail "example '$(cat "$T/out")' != infer-run '$(cat "$T/ref")'"
grep -q "12 generated tokens" "$T/err" || fail "example stats: $(cat "$T/err")"
"$T/generate-static" -s "$T/s" -n 12 l2 "Once upon a time" >"$T/out2" 2>/dev/null \
	|| fail "static example run"
cmp -s "$T/out" "$T/out2" || fail "static example printed: $(cat "$T/out2")"
echo "example streamed: $(head -1 "$T/out")"
# the Python package finds the installed libinfer.so.0 by itself
if command -v python3 >/dev/null && [ $SAN = 0 ]; then
	env -u INFER_LIB PYTHONDONTWRITEBYTECODE=1 PYTHONPATH="$SRC/contrib/python" \
		LD_LIBRARY_PATH="$D$P/lib" python3 -c '
import sys, inferd
with inferd.Client(sys.argv[1]) as c:
    text, r = c.complete("l2", "Once upon a time", max_tokens=12,
                         temperature=0, ignore_eos=True)
print(text)' "$T/s" >"$T/pyout" 2>&1 || fail "python with the installed lib: $(cat "$T/pyout")"
	cmp -s "$T/out" "$T/pyout" || fail "python printed: $(cat "$T/pyout")"
	echo "python package ok with the installed libinfer.so.0"
fi

# bash completion: subcommands and model names from the daemon
if command -v bash >/dev/null; then
	got=$(PATH="$D$P/bin:$PATH" bash -c '. "$1"
		COMP_WORDS=(infer-client gen); COMP_CWORD=1; _infer_client; echo "${COMPREPLY[*]}"
		COMP_WORDS=(infer-client --socket "$2" generate ""); COMP_CWORD=4; _infer_client
		echo "${COMPREPLY[*]}"' sh "$D$P/share/bash-completion/completions/infer-client" "$T/s")
	[ "$got" = "generate
l2" ] || fail "bash completion gave: $got"
	echo "bash completion ok"
fi
# zsh completion, driven through a pseudo-terminal (zsh/zpty): "gen" TAB
# becomes "generate", then "l" TAB the model "l2" (the echo is full of
# terminal escapes, so match loosely)
if command -v zsh >/dev/null; then
	cat >"$T/z.zsh" <<ZEOF
zmodload zsh/zpty || exit 3
zpty z "zsh -f -i"
zpty -w z "fpath=($D$P/share/zsh/site-functions \\\$fpath); path=($D$P/bin \\\$path); autoload -Uz compinit; compinit -u -d $T/zcd; PS1='%% '"
zpty -w -n z \$'infer-client --socket $T/s gen\t'
out= i=0
while (( i++ < 100 )) && [[ \$out != *generate* ]]; do
	zpty -r -t z line && out+=\$line || sleep 0.1
done
zpty -w -n z \$'l\t'
while (( i++ < 200 )) && [[ \$out != *generate*' l2'* ]]; do
	zpty -r -t z line && out+=\$line || sleep 0.1
done
zpty -d z
[[ \$out == *generate*' l2'* ]]
ZEOF
	timeout 60 zsh -f "$T/z.zsh" >/dev/null 2>&1 || fail "zsh completion did not give 'generate l2'"
	echo "zsh completion ok"
fi
"$D$P/bin/infer-client" --socket "$T/s" shutdown >/dev/null 2>&1
wait $PID || fail "inferd exit status $?"
PID=

# every flag of --help is in the man page
mancheck() { # MAN HELPTEXT
	for f in $(echo "$2" | grep -o -- '--[a-z][a-z0-9-]*' | sort -u); do
		sed 's/\\-/-/g' "$1" | grep -q -- "$f" || fail "$(basename "$1") lacks $f"
	done
}
mancheck "$D$P/share/man/man8/inferd.8" "$("$D$P/bin/inferd" --help)"
h=$("$D$P/bin/infer-client" --help; "$D$P/bin/infer-client" generate --help)
mancheck "$D$P/share/man/man1/infer-client.1" "$h"
h=$("$D$P/bin/infer-run" --help 2>&1
    for c in generate tokenize detokenize bench info chat; do "$D$P/bin/infer-run" $c --help 2>&1; done)
mancheck "$D$P/share/man/man1/infer-run.1" "$h"
for f in $(sed -n 's/^INFER_API [^(]*[ *]\(infer_[a-z_]*\)(.*/\1/p' "$D$P/include/infer.h"); do
	grep -q "$f" "$D$P/share/man/man3/libinfer.3" || fail "libinfer.3 lacks $f"
done
# every option of inferd --help is documented in the example config
for f in $("$D$P/bin/inferd" --help | grep -o -- '--[a-z][a-z0-9-]*' | sort -u); do
	case $f in --help|--version|--config|--no-config) continue ;; esac
	grep -q "^# ${f#--} = " "$D$P/share/doc/inferd/inferd.conf.example" \
		|| fail "inferd.conf.example lacks ${f#--}"
done
echo "man pages and inferd.conf.example cover --help"

make -s -C "$SRC" $MK uninstall >"$T/make.log" 2>&1 || { cat "$T/make.log"; fail "make uninstall"; }
left=$(find "$D" -type f -o -type l)
[ -z "$left" ] || fail "left after uninstall: $left"
rm -rf "$T"
echo "install test ok"
