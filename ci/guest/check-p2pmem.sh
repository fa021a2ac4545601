#!/bin/sh
# Checks that N NVMe controllers publish their CMBs as P2P memory.
# Usage: check-p2pmem.sh N full|partial
#   full: every byte available (SQs not in the CMB); partial: SQs took some.
want=$1 expect=$2
n=0 fail=0
for d in /sys/bus/pci/devices/*; do
	[ -e "$d/p2pmem/published" ] || continue
	pub=$(cat "$d/p2pmem/published")
	size=$(cat "$d/p2pmem/size")
	avail=$(cat "$d/p2pmem/available")
	echo "p2pmem ${d##*/} published=$pub size=$size available=$avail"
	n=$((n + 1))
	[ "$pub" = 1 ] || { echo "FAIL: ${d##*/} not published"; fail=1; }
	[ "$avail" -gt 0 ] || { echo "FAIL: ${d##*/} has nothing available"; fail=1; }
	case $expect in
	full) [ "$avail" = "$size" ] || { echo "FAIL: ${d##*/} available $avail != size $size"; fail=1; } ;;
	partial) [ "$avail" -lt "$size" ] || { echo "FAIL: ${d##*/}: submission queues did not take CMB space"; fail=1; } ;;
	esac
done
[ "$n" = "$want" ] || { echo "FAIL: $n controllers publish p2pmem, expected $want"; fail=1; }
exit $fail
