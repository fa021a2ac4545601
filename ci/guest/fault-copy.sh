#!/bin/sh
# A p2p copy that a fault rule breaks (ci/tests/faults/copy_errors.rs): a control copy
# outside the rule's LBA range, the faulted copy, the same copy again (the
# rule fired once), then the module unloads.
# Usage: fault-copy.sh OFFSET CONTROL_OFFSET LEN
# The copy goes p2pnvme-0 -> p2pnvme-1 through p2pnvme-1's CMB (for the
# source controller a peer's CMB).
. /opt/p2pnvme/ci/faults-lib.sh
off=$1 control=$2 len=$3
A=$(dev p2pnvme-0 1) B=$(dev p2pnvme-1 1) P=$(bdf p2pnvme-1)
echo "src=${A#/dev/}"
echo "dst=${B#/dev/}"
echo "provider=$P"
echo "avail_before=$(avail "$P")"
copy control --src "$A:$control" --dst "$B:$control" --len "$len" --provider "$P"
copy fault --src "$A:$off" --dst "$B:$off" --len "$len" --provider "$P"
echo "avail_after_fault=$(avail "$P")"
copy again --src "$A:$off" --dst "$B:$off" --len "$len" --provider "$P"
echo "avail_after=$(avail "$P")"
rmmod p2pcopy
echo "rmmod_rc=$?"
echo "loaded=$(grep -c '^p2pcopy ' /proc/modules)"
dmesg | grep -E 'p2pcopy: |nvme[0-9]+n[0-9]+: ' | sed 's/^/dmesg=/'
