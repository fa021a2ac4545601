#!/bin/sh
# Helpers of the fault-injection scenarios (ci/tests/faults/), sourced.
# Every result is a `key=value` line on stdout for the host test to parse.

# Block device of namespace NSID on the controller with serial SERIAL.
dev() { sh /opt/p2pnvme/ci/nvme-dev.sh "$1" "$2"; }

# PCI address of the controller with serial SERIAL (nothing if it is gone).
bdf() {
	for c in /sys/class/nvme/nvme*; do
		[ -e "$c/serial" ] || continue
		read -r s <"$c/serial"
		[ "$s" = "$1" ] && basename "$(readlink -f "$c/device")" && return 0
	done
	return 1
}

# Free P2P memory of provider BDF, in bytes.
avail() { cat "/sys/bus/pci/devices/$1/p2pmem/available"; }

# A line in the kernel log, with the kernel's timestamp, for timing.
mark() { echo "p2pnvme-fault: $*" >/dev/kmsg; }

# Waits up to $2 tenths of a second for controller SERIAL to be live
# (want=live) or gone (want=gone); returns 1 on timeout.
wait_ctrl() {
	serial=$1 want=$2 n=${3:-600}
	while [ "$n" -gt 0 ]; do
		state=gone
		for c in /sys/class/nvme/nvme*; do
			[ -e "$c/serial" ] || continue
			read -r s <"$c/serial"
			[ "$s" = "$serial" ] && state=$(cat "$c/state")
		done
		[ "$state" = "$want" ] && return 0
		sleep 0.1
		n=$((n - 1))
	done
	return 1
}

# One copy with p2pcopy; prints NAME_rc, NAME_errno, NAME_bytes_done.
copy() {
	name=$1
	shift
	p2pcopy copy --json "$@" >"/tmp/$name.json" 2>"/tmp/$name.err"
	echo "${name}_rc=$?"
	echo "${name}_json=$(cat "/tmp/$name.json")"
}

# Verified I/O on DEV at byte OFFSET: writes SIZE with checksums, reads back.
verify() {
	fio --name=verify --filename="$1" --offset="$2" --size="$3" --rw=write \
		--bs=64k --direct=1 --ioengine=psync --verify=crc32c --do_verify=1 \
		--output=/tmp/fio.out >/dev/null 2>&1
	rc=$?
	echo "verify_rc=$rc"
	[ "$rc" = 0 ] || tail -20 /tmp/fio.out >&2
}
