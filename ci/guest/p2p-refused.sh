#!/bin/sh
# P2P the kernel refuses, for the reason it must give: a p2p copy between
# the two controllers fails, and p2pcopy's route from the peer's P2P memory
# to the source namespace is distance -1, map type "not supported"
# (pci_p2pdma_distance: the host bridge between two root ports is not on
# the kernel's list of bridges that forward P2P).
# Usage: p2p-refused.sh
set -u
src=$(sh /opt/p2pnvme/ci/nvme-dev.sh p2pnvme-0 1) || exit 1
dst=$(sh /opt/p2pnvme/ci/nvme-dev.sh p2pnvme-1 1) || exit 1
if out=$(p2pcopy copy --src "$src:1M" --dst "$dst:1M" --len 1M --mode p2p 2>&1); then
	echo "p2p-refused: the p2p copy $src -> $dst passed" >&2
	exit 1
fi
echo "$out"
case "$out" in
*"cannot do peer-to-peer with any provider"*) ;;
*) echo "p2p-refused: the copy failed for another reason" >&2; exit 1 ;;
esac
info=$(p2pcopy providers) || exit 1
echo "$info"
echo "$info" | grep -q "$src: distance -1 map not supported" || {
	echo "p2p-refused: no route to $src with distance -1, map not supported" >&2
	exit 1
}
echo "p2p-refused: refused, distance -1 (not supported)"
