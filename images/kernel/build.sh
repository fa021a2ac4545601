#!/bin/bash
# Builds the p2pnvme guest kernel from Debian's linux-source tarball inside the
# toolchain root filesystem (chroot). Runs as root.
# Usage: build.sh [--debug] [--base tinyconfig|defconfig] ROOTFS OUT
# OUT becomes an in-tree kernel build directory (arch/x86/boot/bzImage,
# .config, include/config/kernel.release, Module.symvers, the headers and
# scripts external modules build against; modules-staging/ if any =m). The
# full make output goes to OUT.log; stdout gets a condensed progress.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
debug=0 base=tinyconfig
while [ $# -gt 2 ]; do
	case "$1" in
	--debug) debug=1 ;;
	--base) base=$2; shift ;;
	*) break ;;
	esac
	shift
done
rootfs=${1:?usage: build.sh [--debug] [--base tinyconfig|defconfig] ROOTFS OUT}
out=${2:?usage: build.sh [--debug] [--base tinyconfig|defconfig] ROOTFS OUT}
log="$out.log"
case "$base" in tinyconfig | defconfig) ;; *) echo "error: --base must be tinyconfig or defconfig, not '$base'" >&2; exit 2 ;; esac
tarball=$(ls "$rootfs"/usr/src/linux-source-*.tar.xz 2>/dev/null | head -n1 || true)
if [ -z "$tarball" ]; then
	echo "error: no /usr/src/linux-source-*.tar.xz in $rootfs; the root filesystem needs the linux-source package (rebuild it with 'p2pnvme image build --force')" >&2
	exit 1
fi
[ -e "$out" ] && { echo "error: $out already exists" >&2; exit 1; }

work_rel=var/tmp/p2pnvme-kernel.$$
work="$rootfs/$work_rel"
rm -rf "$work"
mkdir -p "$work"
trap 'rm -rf "$work"' EXIT
trap 'exit 1' INT TERM
: >"$log"
fail() {
	echo "error: kernel build failed ($1); see $log" >&2
	exit 1
}
# Everything inside the chroot; stdout and stderr of each step go to the log.
# A private mount namespace gives the chroot a /proc (objtool reads it) that
# disappears with the build.
in_root() { unshare -m --propagation private sh -c 'mount -t proc proc "$0/proc" && exec "$@"' "$rootfs" chroot "$rootfs" env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LC_ALL=C \
	KBUILD_BUILD_USER=p2pnvme KBUILD_BUILD_HOST=p2pnvme bash -c "cd /$work_rel/src && $1"; }

echo "[kernel] unpacking $(basename "$tarball")"
mkdir -p "$work/src"
tar -C "$work/src" --strip-components=1 -xf "$tarball" >>"$log" 2>&1 || fail "unpack"
cp "$here/p2pnvme.config" "$work/p2pnvme.config"
frags=/$work_rel/p2pnvme.config
if [ "$debug" = 1 ]; then
	cp "$here/p2pnvme-debug.config" "$work/p2pnvme-debug.config"
	frags="$frags /$work_rel/p2pnvme-debug.config"
fi

echo "[kernel] configuring: $base + p2pnvme.config$([ "$debug" = 1 ] && echo ' + p2pnvme-debug.config')"
mk="make ARCH=x86_64"
in_root "$mk $base && scripts/kconfig/merge_config.sh -m .config $frags && $mk olddefconfig" >>"$log" 2>&1 ||
	fail "configure"
# A fragment option that Kconfig dropped (a missing dependency) is a bug in
# the fragment: refuse rather than ship a kernel without it.
missing=$(cat "$work"/p2pnvme*.config | sed -n 's/^\(CONFIG_[A-Z0-9_]*\)=\(.*\)/\1=\2/p' | while read -r want; do
	if ! grep -qxF "$want" "$work/src/.config"; then echo " ${want%%=*}"; fi
done)
missing="$missing$(sed -n 's/^# \(CONFIG_[A-Z0-9_]*\) is not set/\1/p' "$work"/p2pnvme*.config | while read -r opt; do
	if grep -q "^$opt=" "$work/src/.config"; then echo " $opt(should be off)"; fi
done)"
if [ -n "$missing" ]; then
	echo "$missing" >>"$log"
	fail "options not applied:$(echo $missing)"
fi

echo "[kernel] compiling with make -j$(nproc) (progress every 100 objects)"
# Condensed progress: one line per 100 compiled objects, plus the link steps.
in_root "$mk -j$(nproc) bzImage modules modules_prepare 2>&1" | tee -a "$log" | awk '
	$1 == "CC" || $1 == "AS" { n++; if (n % 100 == 0) { printf "[kernel] %s %s (%d objects)\n", $1, $2, n; fflush() } }
	$1 == "LD" && $2 == "vmlinux" { print "[kernel] LD vmlinux"; fflush() }
	$1 == "BUILD" { printf "[kernel] BUILD %s (%d objects)\n", $2, n; fflush() }' ||
	fail "compile"
if grep -q '=m$' "$work/src/.config"; then
	in_root "$mk INSTALL_MOD_PATH=/$work_rel/src/modules-staging modules_install" >>"$log" 2>&1 || fail "modules_install"
fi
mv "$work/src" "$out"
echo "[kernel] $(cat "$out/include/config/kernel.release"): $out/arch/x86/boot/bzImage ($(du -h "$out/arch/x86/boot/bzImage" | cut -f1))"
