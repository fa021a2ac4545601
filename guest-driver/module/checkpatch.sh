#!/bin/bash
# Runs the kernel's checkpatch.pl (--strict) on the module and the test
# modules of ci/guest-modules. checkpatch comes
# from the guest kernel's own source package (Debian ships it in no headers
# package), fetched through the toolchain root filesystem and cached.
# Usage: checkpatch.sh ROOTFS KERNEL_VERSION
set -euo pipefail
rootfs=${1:?usage: checkpatch.sh ROOTFS KERNEL_VERSION}
kver=${2:?}
series=$(echo "$kver" | cut -d. -f1,2)
cache=${P2PNVME_CACHE:-/var/cache/p2pnvme}/checkpatch-$series
if [ ! -x "$cache/checkpatch.pl" ]; then
	echo "[checkpatch] fetching checkpatch.pl from linux-source-$series"
	tmp=$(mktemp -d "$rootfs/tmp/ksrc.XXXXXX")
	trap 'rm -rf "$tmp"' EXIT
	# The cached root filesystem keeps no package lists: fetch them into
	# the scratch directory so the cache stays as its inputs made it.
	mkdir -p "$tmp/lists/partial"
	chroot "$rootfs" sh -c "cd /tmp/${tmp##*/} &&
		apt-get -qq -o APT::Sandbox::User=root -o Dir::State::Lists=/tmp/${tmp##*/}/lists update &&
		apt-get -qq -o APT::Sandbox::User=root -o Dir::State::Lists=/tmp/${tmp##*/}/lists download linux-source-$series"
	dpkg-deb --fsys-tarfile "$tmp"/linux-source-"$series"_*.deb |
		tar -x -C "$tmp" --wildcards '*.tar.xz'
	tar -xJf "$tmp"/usr/src/linux-source-"$series".tar.xz -C "$tmp" --wildcards \
		"*/scripts/checkpatch.pl" "*/scripts/spelling.txt" "*/scripts/const_structs.checkpatch"
	mkdir -p "$cache.partial"
	cp "$tmp"/linux-source-"$series"/scripts/{checkpatch.pl,spelling.txt,const_structs.checkpatch} "$cache.partial/"
	rm -rf "$cache"
	mv "$cache.partial" "$cache"
fi
cd "$(dirname "$0")"
# The module, and the test modules the guest suites load.
perl "$cache/checkpatch.pl" --no-tree --strict --terse -f p2pcopy.c uapi/p2pcopy.h ../../ci/guest-modules/*/*.c
