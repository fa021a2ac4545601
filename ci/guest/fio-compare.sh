#!/bin/sh
# fio in one guest, one job after the other, on the project's controller (A),
# QEMU's nvme (B), the RAM disk /dev/ram0 (R: brd, the block stack with no
# device) and /dev/nullb0 (N: null_blk, no data copy at all), and the ratios
# A/B, A/R, A/N. For the NVMe controllers: interrupts the guest received per
# I/O (the /proc/interrupts lines of the controller's I/O queues), and for A
# doorbell register writes and interrupts signalled per I/O, from its vendor
# log page 0xC0. QD1 rows also give fio's mean completion latency.
# With P2PNVME_WITNESS=1 (p2pnvme run --witness) every A and B job is a
# witness window named SIDE-RW-BS-qdN, and a line "witness-io NAME IOS" gives
# the I/Os the block layer completed on that device during the window.
# With P2PNVME_COALESCE=1 the guest sets NVMe Interrupt Coalescing (Feature
# 08h) on both controllers for jobs deeper than QD1: an interrupt per QD/2
# entries, at most 1 ms apart (each controller honours what it implements).
# ROUNDS (default 1): every job that many times, every other round in
# reverse order; the table gives the means.
# Usage: fio-compare.sh DEV_A DEV_B [RUNTIME_S] [ROUNDS]
a=$1 b=$2 t=${3:-10} rounds=${4:-1}
[ -e /dev/nullb0 ] || modprobe null_blk 2>/dev/null # Debian's kernel: a module
for d in "$a" "$b" /dev/ram0 /dev/nullb0; do
	[ -b "$d" ] || { echo "fio-compare.sh: no block device $d" >&2; exit 1; }
done
ios() { # dev -> reads + writes completed
	awk '{print $1 + $5}' "/sys/block/${1#/dev/}/stat"
}
ctrl_of() { # /dev/nvme0n1 -> nvme0
	c=${1#/dev/}
	echo "${c%n*}"
}
irqs() { # dev -> interrupts received on its controller's I/O queues (0 if none)
	case $1 in /dev/nvme*) ;; *) echo 0; return ;; esac
	awk -v q="^$(ctrl_of "$1")q[1-9][0-9]*\$" 'NR == 1 {n = NF} $NF ~ q {for (i = 2; i <= n + 1; i++) s += $i} END {print s + 0}' /proc/interrupts
}
coalesce() { # dev qd -> sets Interrupt Coalescing for the job (off at QD1)
	v=0
	[ "$2" -gt 1 ] && v=$((10 << 8 | ($2 / 2 - 1)))
	# QEMU's nvme refuses it (Feature Not Changeable): it runs without.
	nvme set-feature "/dev/$(ctrl_of "$1")" --feature-id=8 --value=$v >/dev/null 2>&1 ||
		echo "fio-compare.sh: $1 refuses Interrupt Coalescing (runs without)" >&2
}
devlog() { # dev -> "doorbell_writes interrupts" from the controller's log page 0xC0
	nvme get-log "/dev/$(ctrl_of "$1")" -i 0xc0 -l 128 -b 2>/dev/null | od -An -t u8 -w8 -v |
		awk 'NR == 15 {d = $1} NR == 16 {i = $1} END {print d + 0, i + 0}'
}
job() { # side dev rw bs iodepth -> "IOPS BW_KiB LAT_US IOS IRQS DOORBELLS DEV_IRQS"
	w=$1-$3-$4-qd$5
	if [ -n "${P2PNVME_WITNESS:-}" ] && [ "$1" != R ] && [ "$1" != N ]; then
		p2pnvme-host witness-start "$w" >/dev/null || exit 1
		wit=1
	else
		wit=
	fi
	case $1 in A | B) [ -n "${P2PNVME_COALESCE:-}" ] && coalesce "$2" "$5" ;; esac
	[ "$1" = A ] && l0=$(devlog "$2")
	n0=$(ios "$2") i0=$(irqs "$2")
	# Terse v3: read IOPS, bandwidth and mean latency are fields 8, 7, 40;
	# the write side's are 49, 48, 81.
	r=$(fio --name=j --filename="$2" --rw="$3" --bs="$4" --iodepth="$5" --ioengine=libaio \
		--direct=1 --time_based --runtime="$t" --ramp_time=1 --numjobs=1 --size=32M \
		--output-format=terse --terse-version=3 |
		awk -F';' '{print $8 + $49, $7 + $48, $40 + $81}')
	n=$(($(ios "$2") - n0)) i=$(($(irqs "$2") - i0))
	l="0 0"
	if [ "$1" = A ]; then
		l=$(echo "$l0 $(devlog "$2")" | awk '{print $3 - $1, $4 - $2}')
	fi
	if [ -n "$wit" ]; then
		echo "witness-io $w $n" >&2
		p2pnvme-host witness-stop >/dev/null || exit 1
	fi
	echo "$r $n $i $l"
}
echo "guest kernel $(uname -r), $(nproc) CPU(s); A=$a B=$b R=/dev/ram0 N=/dev/nullb0, ${t}s per job, ${rounds} round(s)${P2PNVME_COALESCE:+; interrupt coalescing set by the guest for QD>1 (QD/2 entries, 1 ms)}"
printf '%-9s %-4s %-4s %9s %9s %9s %9s %6s %6s %6s  %7s %7s %7s %7s  %8s %8s\n' \
	rw bs qd A_IOPS B_IOPS R_IOPS N_IOPS A/B A/R A/N A_irq/io B_irq/io A_db/io A_sig/io A_lat_us B_lat_us
avg() { # "7 fields x rounds" -> the 7 fields averaged over the rounds
	echo "$1" | awk -v n="$rounds" '{for (i = 1; i <= NF; i++) s[(i - 1) % 7] += $i}
		END {for (k = 0; k < 7; k++) printf "%s ", s[k] / n}'
}
for w in "randread 4k 1" "randread 4k 16" "randwrite 4k 16" "read 128k 4"; do
	set -- $w
	rA= rB= rR= rN= i=0
	while [ "$i" -lt "$rounds" ]; do
		# Every other round in reverse order, so a drift in the host's
		# load does not favour one side.
		order="A B R N"
		[ $((i % 2)) = 1 ] && order="N R B A"
		for s in $order; do
			case $s in A) d=$a ;; B) d=$b ;; R) d=/dev/ram0 ;; N) d=/dev/nullb0 ;; esac
			r=$(job "$s" "$d" "$1" "$2" "$3")
			eval "r$s=\"\$r$s $r\""
		done
		i=$((i + 1))
	done
	echo "$1 $2 $3 $(avg "$rA") $(avg "$rB") $(avg "$rR") $(avg "$rN")" | awk '
	function r(x, y) { return y > 0 ? x / y : 0 }
	function per(x, y) { return y > 0 ? x / y : 0 }
	{
		# fields: rw bs qd, then per side: IOPS BW LAT IOS IRQS DB SIG (7 each)
		A = 4; B = 11; R = 18; N = 25
		printf "%-9s %-4s %-4s %9d %9d %9d %9d %6.2f %6.2f %6.2f  %7.2f %7.2f %7.2f %7.2f  %8.1f %8.1f\n",
			$1, $2, "qd" $3, $A, $B, $R, $N, r($A, $B), r($A, $R), r($A, $N),
			per($(A + 4), $(A + 3)), per($(B + 4), $(B + 3)), per($(A + 5), $(A + 3)), per($(A + 6), $(A + 3)),
			$(A + 2), $(B + 2)
	}'
done
