#!/bin/sh
# Prints, per NVMe controller, the chain of PCI bridges above it.
for c in /sys/class/nvme/nvme*; do
	dev=$(readlink -f "$c/device")
	chain=""
	p=$(dirname "$dev")
	while [ -e "$p/class" ]; do
		chain="${p##*/}($(cat "$p/class")) $chain"
		p=$(dirname "$p")
	done
	echo "${c##*/} ${dev##*/} parents: $chain"
done
