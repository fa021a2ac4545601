#!/bin/sh
# Sourced by the guest's init with `--root full|DIR` (kernel argument
# p2pnvme.root=TAG): the command and the shell run in that root filesystem,
# read-only over virtiofs below a writable tmpfs overlay, with the guest's
# /dev, /proc, /sys, /tmp and /run, the kernel's modules, the project's
# tools (/usr/local/bin) and files (/opt/p2pnvme) and the shared folders.
# Sets in_root: the prefix that runs a program in that root.
# Usage: . root.sh TAG
root_tag=$1
release=${release:-$(uname -r)} # set by the init
newroot=/sysroot
root_failed() {
	echo "p2pnvme-init: --root: $root_why" >&2
	return 125
}
in_root=root_failed
root_why="cannot mount the root filesystem (virtiofs tag $root_tag)"
mkdir -p /.root-ro /.root-rw "$newroot"
if mount -t virtiofs -o ro "$root_tag" /.root-ro; then
	root_why="no overlay file system in this kernel (CONFIG_OVERLAY_FS)"
	modprobe -q overlay 2>/dev/null
	mount -t tmpfs -o mode=0755 tmpfs /.root-rw
	mkdir -p /.root-rw/upper /.root-rw/work
	if mount -t overlay overlay \
		-o lowerdir=/.root-ro,upperdir=/.root-rw/upper,workdir=/.root-rw/work "$newroot"; then
		for d in dev proc sys tmp run; do
			mkdir -p "$newroot/$d"
			mount --rbind "/$d" "$newroot/$d"
		done
		mkdir -p "$newroot/opt/p2pnvme" "$newroot/usr/local/bin" "$newroot/root"
		mount --rbind /opt/p2pnvme "$newroot/opt/p2pnvme"
		if [ -d "/lib/modules/$release" ]; then
			mkdir -p "$newroot/lib/modules/$release"
			mount --bind "/lib/modules/$release" "$newroot/lib/modules/$release"
		fi
		# The running kernel's options, where the root has none for it.
		if [ -e "/boot/config-$release" ] && [ ! -e "$newroot/boot/config-$release" ]; then
			mkdir -p "$newroot/boot"
			cp "/boot/config-$release" "$newroot/boot/"
		fi
		for t in p2pcopy p2pnvme-host; do
			[ -e "/usr/bin/$t" ] && cp "/usr/bin/$t" "$newroot/usr/local/bin/$t"
		done
		# Shared folders, where the command expects them.
		if [ -e "$shares" ]; then
			while read -r _tag path; do
				mkdir -p "$newroot$path"
				mount --rbind "$path" "$newroot$path"
			done <"$shares"
		fi
		in_root="chroot $newroot"
	fi
fi
