#!/bin/sh
# fio on two namespaces in the same guest, one after the other, and the ratio.
# With P2PNVME_WITNESS=1 (p2pnvme run --witness) every job is a witness
# window named SIDE-RW-BS-qdN, and a line "witness-io NAME IOS" gives the
# I/Os the block layer completed on that device during the window.
# Usage: fio-compare.sh DEV_A DEV_B [RUNTIME_S]
a=$1 b=$2 t=${3:-10}
ios() { # dev -> reads + writes completed
	awk '{print $1 + $5}' "/sys/block/${1#/dev/}/stat"
}
job() { # side dev rw bs iodepth -> "IOPS BW_KiB"
	w=$1-$3-$4-qd$5
	if [ -n "${P2PNVME_WITNESS:-}" ]; then
		p2pnvme-host witness-start "$w" >/dev/null || exit 1
		n0=$(ios "$2")
	fi
	fio --name=j --filename="$2" --rw="$3" --bs="$4" --iodepth="$5" --ioengine=libaio \
		--direct=1 --time_based --runtime="$t" --ramp_time=1 --numjobs=1 --size=128M \
		--output-format=terse --terse-version=3 | awk -F';' '{print $8, $7}'
	if [ -n "${P2PNVME_WITNESS:-}" ]; then
		echo "witness-io $w $(($(ios "$2") - n0))" >&2
		p2pnvme-host witness-stop >/dev/null || exit 1
	fi
}
for w in "randread 4k 1" "randread 4k 16" "read 128k 4"; do
	set -- $w
	ra=$(job A "$a" "$1" "$2" "$3")
	rb=$(job B "$b" "$1" "$2" "$3")
	echo "$1 $2 qd$3: A $ra | B $rb" | awk '{
		printf "%-9s %-5s %-5s A: %8d IOPS %7.1f MB/s   B: %8d IOPS %7.1f MB/s   A/B %.2f\n",
			$1, $2, $3, $5, $6 * 1024 / 1e6, $9, $10 * 1024 / 1e6, ($9 > 0 ? $5 / $9 : 0) }'
done
