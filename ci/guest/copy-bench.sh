#!/bin/sh
# Copy throughput in one guest: p2p vs bounce on the project's controllers
# and on QEMU's nvme, at several chunk sizes and depths.
# Usage: copy-bench.sh SIZE
size=${1:-64M}
dev() { sh /opt/p2pnvme/ci/nvme-dev.sh "$1" 1; }
P0=$(dev p2pnvme-0) P1=$(dev p2pnvme-1) Q0=$(dev qemu-nvme-0) Q1=$(dev qemu-nvme-1)
for d in "$P0" "$Q0"; do dd if=/dev/urandom of="$d" bs=1M count=${size%M} oflag=direct 2>/dev/null; done
rate() { # src dst mode chunk depth -> MB/s
	p2pcopy copy --src "$1" --dst "$2" --len "$size" --mode "$3" --chunk "$4" --depth "$5" --json |
		sed -n 's/.*"mb_per_s":\([0-9.]*\).*/\1/p'
}
printf '%-6s %-5s %12s %12s %8s %12s %12s %8s %10s\n' chunk depth p2p-MB/s bounce-MB/s p2p/bnc qemu-p2p qemu-bnc p2p/bnc ours/qemu
for chunk in 64K 256K 1M; do
	for depth in 1 4; do
		pp=$(rate "$P0" "$P1" p2p $chunk $depth) pb=$(rate "$P0" "$P1" bounce $chunk $depth)
		qp=$(rate "$Q0" "$Q1" p2p $chunk $depth) qb=$(rate "$Q0" "$Q1" bounce $chunk $depth)
		echo "$chunk $depth $pp $pb $qp $qb" | awk '{
			printf "%-6s %-5s %12.1f %12.1f %8.2f %12.1f %12.1f %8.2f %10.2f\n",
				$1, $2, $3, $4, $3 / $4, $5, $6, $5 / $6, $3 / $5 }'
	done
done
