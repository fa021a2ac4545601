#!/bin/sh
# P2P through the host bridge under virtio-iommu, which QEMU does not pass
# on: the kernel maps the peer's CMB through the IOMMU with the MMIO flag
# (map type "through host bridge"), and QEMU's virtio-iommu notifies no
# MMIO mapping to vfio(-user) (virtio_iommu_notify_map), so the device gets
# an IOVA no DMA_MAP announced and fails the command with Data Transfer
# Error. Pins exactly that outcome: any other failure, or a pass, fails
# this script (a pass means QEMU announces the map now: make the case a
# proved copy like the other IOMMUs').
# Usage: p2p-iova-unannounced.sh
set -u
src=$(sh /opt/p2pnvme/ci/nvme-dev.sh p2pnvme-0 1) || exit 1
dst=$(sh /opt/p2pnvme/ci/nvme-dev.sh p2pnvme-1 1) || exit 1
info=$(p2pcopy providers) || exit 1
echo "$info"
echo "$info" | grep -q "$dst: distance [0-9]* map through host bridge" || {
	echo "p2p-iova-unannounced: the kernel does not map P2P to $dst through the host bridge" >&2
	exit 1
}
if p2pcopy copy --src "$src:1M" --dst "$dst:1M" --len 1M --mode p2p --chunk 4K; then
	echo "p2p-iova-unannounced: the copy passed: the map reaches the device now" >&2
	exit 1
fi
dmesg | grep -E "nvme.*I/O" | tail -3
dmesg | grep -q "I/O Error (sct 0x0 / sc 0x4)" || {
	echo "p2p-iova-unannounced: the copy failed, but not with Data Transfer Error" >&2
	exit 1
}
echo "p2p-iova-unannounced: Data Transfer Error, as expected"
