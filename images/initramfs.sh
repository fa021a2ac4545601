#!/bin/bash
# Builds the guest image (kernel + initramfs) from the toolchain root
# filesystem. Runs as root.
# Usage: initramfs.sh ROOTFS IMAGES_SRC_DIR OUT_DIR
set -euo pipefail
rootfs=${1:?usage: initramfs.sh ROOTFS IMAGES_SRC_DIR OUT_DIR}
src=${2:?}
out=${3:?}

kver=$(ls "$rootfs/lib/modules" | head -n1)
config="$rootfs/boot/config-$kver"
if ! grep -q '^CONFIG_PCI_P2PDMA=y' "$config"; then
	echo "error: guest kernel $kver is built without CONFIG_PCI_P2PDMA; the root filesystem must take linux-image-amd64 from trixie-backports (rebuild with 'p2pnvme image build --force')" >&2
	exit 1
fi
grep -q '^CONFIG_ZONE_DEVICE=y' "$config" || { echo "error: guest kernel $kver lacks CONFIG_ZONE_DEVICE (needed by P2PDMA)" >&2; exit 1; }

stage_rel=tmp/p2pnvme-stage.$$
stage="$rootfs/$stage_rel"
mstage="$stage.modules"
rm -rf "$stage" "$mstage"
trap 'rm -rf "$stage" "$stage.stubs" "$mstage"' EXIT
mkdir -p "$stage"/{bin,sbin,usr/bin,usr/sbin,lib,lib64,etc,proc,sys,dev,tmp,root,mnt,run}
mkdir -p "$stage/usr/share/misc" "$stage/opt/p2pnvme"

echo "[image 1/4] userland: busybox, nvme-cli, fio, pciutils, e2fsprogs, kmod"
cp "$rootfs/usr/bin/busybox" "$stage/bin/busybox"
# Its applets linked here rather than by init at every boot (busybox
# --install -s /bin: one link per applet in /bin, never over a file).
for a in $(chroot "$rootfs" busybox --list); do
	[ -e "$stage/bin/$a" ] || ln -s busybox "$stage/bin/$a"
done
bins="/usr/sbin/nvme /usr/bin/fio /usr/bin/lspci /usr/bin/setpci /usr/sbin/mke2fs /usr/sbin/e2fsck /usr/bin/kmod /usr/sbin/blkdiscard /usr/bin/taskset"
# Libraries left out, because the kernel unpacks every byte of the image at
# every boot (ci/bench/boot). Each is replaced by a generated library of the
# same name and symbol versions that defines what the image's programs import
# from it:
# - fio's engines for Ceph, GlusterFS, NFS, NBD, RDMA and persistent memory
#   need services a p2pnvme guest never has, yet they and what they pull in
#   (C++ Ceph, Kerberos, GnuTLS, ...) were 45 of the image's 70 MB. Their
#   functions print which library is absent and abort (their callers take 0
#   for success).
# - OpenSSL's libcrypto (6.5 MB, and zstd through it) serves kmod's module
#   signature details (modinfo) and nvme-cli's TLS and DH-HMAC-CHAP keys,
#   never a p2pnvme test. Its functions say so once and fail as OpenSSL's
#   do (0 or NULL), so modinfo still prints the rest.
abort_libs="librados.so.2 librbd.so.1 libgfapi.so.0 libnfs.so.14 libnbd.so.0 librdmacm.so.1 libibverbs.so.1 libpmem.so.1"
fail_libs="libcrypto.so.3"
# Copy each binary and the shared libraries it needs, but the absent ones.
chroot "$rootfs" env stage="/$stage_rel" bins="$bins" abort_libs="$abort_libs" fail_libs="$fail_libs" bash -s <<'STAGE'
set -euo pipefail
absent=" $abort_libs $fail_libs "
needed() { readelf -d "$1" 2>/dev/null | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p'; }
declare -A path copied
for b in $bins; do
	cp -L "$b" "$stage$b"
	# Where ld.so finds each library of b's closure, and its interpreter
	# (the line that names a path, not a library).
	interp=
	while read -r so arrow lib _; do
		case $so in /*) interp=$so ;; esac
		[ "$arrow" = "=>" ] && path[$so]=$lib
	done <<<"$(ldd "$b")"
	queue=("$interp" $(needed "$b"))
	while [ ${#queue[@]} -gt 0 ]; do
		so=${queue[0]}
		queue=("${queue[@]:1}")
		[ -n "$so" ] || continue # a static binary has no interpreter
		case "$absent" in *" $so "*) continue ;; esac
		lib=${path[$so]:-}
		case "$so" in /*) lib=$so ;; "${interp##*/}") lib=$interp ;; esac
		[ -n "$lib" ] || { echo "error: ldd does not resolve $so for $b" >&2; exit 1; }
		[ -n "${copied[$lib]:-}" ] && continue
		copied[$lib]=1
		mkdir -p "$stage$(dirname "$lib")"
		cp -L "$lib" "$stage$lib"
		queue+=($(needed "$lib"))
	done
done
work=$stage.stubs # removed by the caller's trap, also when a step fails
mkdir -p "$work"
# What each staged program and library needs, read once for all stubs.
declare -A needs
while read -r f; do
	needs[$f]=" $(needed "$f" | tr '\n' ' ') "
done <<<"$(find "$stage" -type f \( -perm -u+x -o -name '*.so*' \))"
for so in $abort_libs $fail_libs; do
	# What the staged programs and libraries that need so import from it.
	real=
	: >"$work/imports"
	for f in "${!needs[@]}"; do
		case ${needs[$f]} in *" $so "*) ;; *) continue ;; esac
		real=${real:-$(ldd "${f#"$stage"}" | awk -v so="$so" '$1 == so {print $3}')}
		readelf --dyn-syms -W "$f" | awk '$7 == "UND" && $8 != "" {print $8}' >>"$work/imports"
	done
	[ -n "$real" ] || { echo "error: no program of the image needs $so" >&2; exit 1; }
	nm -D --defined-only "$real" | awk '{sub(/@.*/, "", $3); print $3}' | sort -u >"$work/defined"
	# name@VERSION (or name) of each import this library defines
	awk 'NR == FNR {d[$1] = 1; next} {n = $1; sub(/@.*/, "", n)} n in d' "$work/defined" "$work/imports" | sort -u >"$work/syms"
	case " $fail_libs " in
	*" $so "*) body='{ absent(__func__); return 0; }' once='static int said; if (said++) return;' ;;
	*) body='{ absent(__func__); abort(); }' once= ;;
	esac
	{
		echo '#include <stdio.h>'
		echo '#include <stdlib.h>'
		echo "static void absent(const char *f) { $once fprintf(stderr, \"%s: $so is not in the p2pnvme guest image\\n\", f); }"
		sed 's/@.*//' "$work/syms" | sort -u | sed "s/.*/long &(void) $body/"
	} >"$work/stub.c"
	awk -F@ 'NF > 1 {v[$2] = v[$2] " " $1 ";"} END {for (k in v) print k " { global:" v[k] " };"}' "$work/syms" >"$work/version.map"
	ver=
	[ -s "$work/version.map" ] && ver="-Wl,--version-script=$work/version.map"
	mkdir -p "$stage$(dirname "$real")"
	gcc -shared -fPIC -O2 -o "$stage$(dirname "$real")/$so" -Wl,-soname,"$so" $ver "$work/stub.c"
done
STAGE
for l in modprobe insmod rmmod lsmod modinfo depmod; do ln -sf /usr/bin/kmod "$stage/sbin/$l"; done
ln -sf mke2fs "$stage/usr/sbin/mkfs.ext4"
ln -sf e2fsck "$stage/usr/sbin/fsck.ext4"
# lspci's names: the vendors of QEMU's and p2pnvme's devices (Intel's
# chipset and IOMMU, AMD's IOMMU, Red Hat's QEMU and virtio devices) and
# the device classes; all 1.5 MB of vendors would be unpacked at every boot.
if [ -e "$rootfs/usr/share/misc/pci.ids" ]; then
	awk '/^[0-9a-f][0-9a-f][0-9a-f][0-9a-f] / { keep = ($1 ~ /^(8086|1022|1af4|1b36)$/) } /^C / { keep = 1 } keep && !/^#/' \
		"$rootfs/usr/share/misc/pci.ids" >"$stage/usr/share/misc/pci.ids"
fi
# What init adds to devtmpfs in one copy, and mounts in two mount -a.
mkdir -p "$stage/lib/p2pnvme/dev/pts" "$stage/lib/p2pnvme/dev/shm"
ln -s /proc/self/fd "$stage/lib/p2pnvme/dev/fd"
for i in 0:stdin 1:stdout 2:stderr; do ln -s "/proc/self/fd/${i%%:*}" "$stage/lib/p2pnvme/dev/${i#*:}"; done
cat >"$stage/lib/p2pnvme/fstab.early" <<'FSTAB'
proc /proc proc defaults 0 0
sysfs /sys sysfs defaults 0 0
devtmpfs /dev devtmpfs defaults 0 0
FSTAB
cat >"$stage/lib/p2pnvme/fstab" <<'FSTAB'
devpts /dev/pts devpts defaults 0 0
tmpfs /tmp tmpfs defaults 0 0
debugfs /sys/kernel/debug debugfs defaults 0 0
FSTAB
echo "root:x:0:0:root:/root:/bin/sh" >"$stage/etc/passwd"
echo "root:x:0:" >"$stage/etc/group"
cat >"$stage/etc/profile" <<'PROFILE'
export PATH=/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin PS1='guest# '
PROFILE

echo "[image 2/4] kernel modules for $kver (nvme, ext4, fw_cfg, brd, null_blk, virtio_iommu and their dependencies)"
# A second archive (modules.img): only a guest booting this kernel gets it
# (the launcher appends it), so the project's kernels, whose drivers are
# built in, do not unpack 6 MB of modules at every boot.
# null_blk: loaded by ci/guest/fio-compare.sh; virtio_iommu: init loads it
# first, for a guest with a virtio-iommu-pci device.
mods="nvme ext4 qemu_fw_cfg brd null_blk virtio_iommu overlay" # overlay: --root full|DIR
chroot "$rootfs" sh -c "for m in $mods; do modprobe -S '$kver' --show-depends \$m; done" |
	awk '$1 == "insmod" {print $2}' | sort -u | while read -r ko; do
	dst="$mstage${ko%.xz}"
	mkdir -p "$(dirname "$dst")"
	# Decompress on the host: the guest runs under TCG, where xz is slow.
	case "$ko" in
	*.xz) xz -dc "$rootfs$ko" >"$dst" ;;
	*) cp "$rootfs$ko" "$dst" ;;
	esac
done
cp "$rootfs/lib/modules/$kver"/modules.{builtin,builtin.modinfo,order} "$mstage/lib/modules/$kver/"
chroot "$rootfs" depmod -b "/$stage_rel.modules" "$kver"
mkdir -p "$mstage/lib/modules/$kver/extra"

echo "[image 3/4] init and host control helper"
install -m 755 "$src/init" "$stage/init"
install -m 755 "$src/p2pnvme-host" "$stage/usr/bin/p2pnvme-host"

# Uncompressed: under TCG the kernel unpacks a plain cpio faster than lz4
# (legacy frames, the fastest of its decompressors; zstd was slower still):
# initramfs_async=0 boots, the unpack alone, median of 5 (2026-12-04,
# userland without modules): 0.22 s plain against 0.30 s lz4. The firmware
# loads the larger file through fw_cfg DMA, a host-side copy.
echo "[image 4/4] packing initramfs.img and modules.img (cpio, uncompressed)"
mkdir -p "$out"
pack() { chroot "$rootfs" sh -c "cd /$1 && find . -print0 | LC_ALL=C sort -z | cpio --null -o -H newc --quiet"; }
pack "$stage_rel" >"$out/initramfs.img"
pack "$stage_rel.modules" >"$out/modules.img"
cp "$rootfs/boot/vmlinuz-$kver" "$out/vmlinuz"
echo "$kver" >"$out/kernel-version"
chroot "$rootfs" dpkg-query -W -f '${Package}\t${Version}\n' >"$out/manifest.txt"
grep -E '^(qemu-system-x86|linux-image|linux-headers|nvme-cli|fio|busybox-static|kmod|pciutils)' "$out/manifest.txt" |
	sed 's/^/[image] /'
echo "[image] $(du -h "$out/initramfs.img" | cut -f1) initramfs, $(du -h "$out/modules.img" | cut -f1) modules of kernel $kver"
