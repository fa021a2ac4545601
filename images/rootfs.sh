#!/bin/bash
# Builds the Debian trixie toolchain root filesystem: QEMU with vfio-user and
# TCG plugins, the P2PDMA-enabled guest kernel and its headers, and the guest
# userland. Runs as root; the host's own packages are never touched.
# Usage: rootfs.sh OUT_DIR   (OUT_DIR must not exist; written atomically by caller)
set -euo pipefail
out=${1:?usage: rootfs.sh OUT_DIR}
mirror=${P2PNVME_MIRROR:-http://deb.debian.org/debian}

# Guest userland, module toolchain, virtiofsd (--share) and what building a
# kernel from source needs (trixie).
base_pkgs=busybox-static,nvme-cli,fio,pciutils,kmod,e2fsprogs,util-linux,gcc,make,libc6-dev,cpio,xz-utils,zstd,lz4,ca-certificates,dpkg-dev,virtiofsd,bc,bison,flex,libelf-dev,libssl-dev,rsync
# Need trixie-backports: QEMU >= 10.1 (vfio-user-pci, plugins), kernel with
# P2PDMA, and that kernel's source (the minimal guest kernel is built from it).
bpo_pkgs="qemu-system-x86 linux-image-amd64 linux-headers-amd64 linux-source"

if [ "$(id -u)" != 0 ]; then
	echo "error: building the root filesystem needs root (mmdebstrap in root mode); run as root or with sudo" >&2
	exit 1
fi
command -v mmdebstrap >/dev/null || { echo "error: mmdebstrap missing; run: apt-get install mmdebstrap" >&2; exit 1; }
if ! timeout 20 bash -c "exec 3<>/dev/tcp/${mirror#http://}/80" 2>/dev/null; then
	host=${mirror#http://}; host=${host%%/*}
	timeout 20 bash -c "exec 3<>/dev/tcp/$host/80" 2>/dev/null || {
		echo "error: cannot reach the Debian mirror $host; check network access or set P2PNVME_MIRROR" >&2
		exit 1
	}
fi

echo "[rootfs] mmdebstrap trixie + trixie-backports into $out"
mmdebstrap --mode=root --variant=apt --include="$base_pkgs" \
	--components=main \
	--customize-hook='chroot "$1" dpkg-divert --local --rename --add /usr/sbin/update-initramfs >/dev/null' \
	--customize-hook='ln -sf /bin/true "$1/usr/sbin/update-initramfs"' \
	--customize-hook="chroot \"\$1\" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends -t trixie-backports $bpo_pkgs" \
	--customize-hook='chroot "$1" apt-get clean' \
	trixie "$out" \
	"deb $mirror trixie main" \
	"deb $mirror trixie-backports main" \
	"deb-src $mirror trixie-backports main"
