#!/bin/sh
# fio on two namespaces in the same guest, one after the other, and the ratio.
# Usage: fio-compare.sh DEV_A DEV_B [RUNTIME_S]
a=$1 b=$2 t=${3:-10}
job() { # dev rw bs iodepth -> "IOPS BW_KiB"
	fio --name=j --filename="$1" --rw="$2" --bs="$3" --iodepth="$4" --ioengine=libaio \
		--direct=1 --time_based --runtime="$t" --ramp_time=1 --numjobs=1 --size=128M \
		--output-format=terse --terse-version=3 | awk -F';' '{print $8, $7}'
}
for w in "randread 4k 1" "randread 4k 16" "read 128k 4"; do
	set -- $w
	ra=$(job "$a" "$1" "$2" "$3")
	rb=$(job "$b" "$1" "$2" "$3")
	echo "$1 $2 qd$3: A $ra | B $rb" | awk '{
		printf "%-9s %-5s %-5s A: %8d IOPS %7.1f MB/s   B: %8d IOPS %7.1f MB/s   A/B %.2f\n",
			$1, $2, $3, $5, $6 * 1024 / 1e6, $9, $10 * 1024 / 1e6, ($9 > 0 ? $5 / $9 : 0) }'
done
