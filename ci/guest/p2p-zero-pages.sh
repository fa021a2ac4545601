#!/bin/sh
# P2P copies of never-written (all-zero) ranges in both directions between
# the two controllers, then the copied ranges compared. Through a
# guest IOMMU a zero page of a peer's CMB cannot be told from the others
# by its content: the copy must still pass and move exactly those zeros.
# Usage: p2p-zero-pages.sh
set -u
a=$(sh /opt/p2pnvme/ci/nvme-dev.sh p2pnvme-0 1) || exit 1
b=$(sh /opt/p2pnvme/ci/nvme-dev.sh p2pnvme-1 1) || exit 1
for off in 64M 80M; do
	p2pcopy copy --src "$a:$off" --dst "$b:$off" --len 4M --mode p2p || exit 1
	p2pcopy copy --src "$b:$off" --dst "$a:$off" --len 4M --mode p2p || exit 1
done
sum() { dd if="$1" bs=1M skip=64 count=20 iflag=direct 2>/dev/null | md5sum; }
[ "$(sum "$a")" = "$(sum "$b")" ] || { echo "p2p-zero-pages: the copied ranges differ" >&2; exit 1; }
echo "p2p-zero-pages: equal"
