#!/bin/sh
# A read the controller never completes (a `never` or `cfs` fault rule on
# its LBA; ci/tests/faults/stuck.rs): the nvme driver must time out, abort and
# reset the controller, and I/O must work again. Kernel-log marks time it.
# Usage: fault-timeout.sh OFFSET
. /opt/p2pnvme/ci/faults-lib.sh
off=$1
A=$(dev p2pnvme-0 1)
echo "dev=${A#/dev/}"
echo "io_timeout=$(cat /sys/module/nvme_core/parameters/io_timeout)"
echo "queue_io_timeout_ms=$(cat "/sys/block/${A#/dev/}/queue/io_timeout")"
mark "read-start"
dd if="$A" of=/dev/null bs=4096 count=1 skip=$((off / 4096)) iflag=direct 2>/tmp/dd.err
rc=$?
mark "read-done rc=$rc"
echo "read_rc=$rc"
# The first I/O after the reset that we start ourselves.
dd if="$A" of=/dev/null bs=4096 count=1 skip=$((off / 4096 + 1)) iflag=direct 2>/tmp/dd2.err
rc=$?
mark "second-read-done rc=$rc"
echo "second_read_rc=$rc"
echo "state=$(cat "/sys/block/${A#/dev/}/device/state")"
verify "$A" "$off" 4M
dmesg | grep -E 'p2pnvme-fault: |nvme' | sed 's/^/dmesg=/'
