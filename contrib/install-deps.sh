#!/bin/sh
# Install the Debian packages inferd needs to build and test, but only the
# missing ones, and say which. Runs apt-get as root (or through sudo).
set -e
need=""
have_hdr() { [ -f "/usr/include/$1" ] || [ -f "/usr/include/x86_64-linux-gnu/$1" ] || [ -f "/usr/include/$(uname -m)-linux-gnu/$1" ]; }
command -v cc >/dev/null 2>&1 || need="$need build-essential"
command -v make >/dev/null 2>&1 || need="$need make"
command -v pkg-config >/dev/null 2>&1 || need="$need pkg-config"
have_hdr event2/event.h || need="$need libevent-dev"
have_hdr msgpack.h || need="$need libmsgpack-dev"
have_hdr sqlite3.h || need="$need libsqlite3-dev"
have_hdr check.h || need="$need check"
command -v python3 >/dev/null 2>&1 || need="$need python3"
python3 -m pip --version >/dev/null 2>&1 || need="$need python3-pip"
command -v unzip >/dev/null 2>&1 || need="$need unzip"
[ -n "$EXTRA_DEBS" ] && need="$need $EXTRA_DEBS"
if [ -z "$need" ]; then
	echo "deps: all Debian packages present"
	exit 0
fi
echo "deps: installing missing Debian packages:$need"
SUDO=""
if [ "$(id -u)" != 0 ]; then
	if command -v sudo >/dev/null 2>&1; then SUDO=sudo; else
		echo "deps: not root and no sudo; install these as root:$need" >&2
		exit 1
	fi
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
# shellcheck disable=SC2086
$SUDO apt-get install -y -qq --no-install-recommends $need >/dev/null
echo "deps: installed:$need"
