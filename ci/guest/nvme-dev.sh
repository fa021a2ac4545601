#!/bin/sh
# Prints the block device of namespace NSID on the controller with serial SERIAL.
# Usage: nvme-dev.sh SERIAL NSID
serial=$1 nsid=$2
for c in /sys/class/nvme/nvme*; do
	read -r s <"$c/serial" # the controller pads it with spaces
	[ "$s" = "$serial" ] || continue
	for b in "$c"/nvme*n*; do
		[ -e "$b/nsid" ] && [ "$(cat "$b/nsid")" = "$nsid" ] && echo "/dev/${b##*/}" && exit 0
	done
done
echo "nvme-dev.sh: no namespace $nsid on a controller with serial $serial" >&2
exit 1
