#!/bin/sh
# The witness's counterfactual, guest side: read MIB MiB of the first
# project controller's namespace into an mmap of its p2pmem/allocate twice,
# each in its own witness window:
#   p2p-read:  O_DIRECT, the controller DMAs into its CMB (the CPU moves nothing);
#   cpu-copy:  buffered, the controller DMAs into the page cache and the CPU
#              copies every byte into the CMB (copy_to_user) - what the
#              witness must catch.
# fio's iomem=mmapshared:FILE maps FILE (MAP_SHARED, offset 0) as its buffer.
# Usage: witness-cpu-copy.sh MIB
set -u
mib=$1
D=$(sh /opt/p2pnvme/ci/nvme-dev.sh p2pnvme-0 1) || exit 1
bdf=$(basename "$(readlink -f "/sys/block/${D#/dev/}/device/device")")
alloc=/sys/bus/pci/devices/$bdf/p2pmem/allocate
[ -e "$alloc" ] || { echo "witness-cpu-copy.sh: $bdf publishes no p2pmem" >&2; exit 1; }
dd if=/dev/urandom of="$D" bs=1M count="$mib" oflag=direct 2>/dev/null || exit 1
read_into_cmb() { # window direct
	sync
	echo 3 >/proc/sys/vm/drop_caches
	p2pnvme-host witness-start "$1" >/dev/null || exit 1
	fio --name="$1" --filename="$D" --rw=read --bs=1M --size="${mib}M" --ioengine=psync \
		--direct="$2" --iomem="mmapshared:$alloc" --output-format=terse --terse-version=3 \
		>/tmp/fio.out || { cat /tmp/fio.out >&2; exit 1; }
	p2pnvme-host witness-stop >/dev/null || exit 1
	echo "$1: read $(awk -F';' '{print $6}' /tmp/fio.out) KiB"
}
read_into_cmb p2p-read 1
read_into_cmb cpu-copy 0
