#!/bin/sh
# One verified copy, guest side: resolve the namespaces, reset the device
# counters, copy with p2pcopy, save the counters and a RAM dump on the host.
# Usage: demo-copy.sh SRC_SERIAL SRC_NSID DST_SERIAL DST_NSID OFFSET LEN MODE COUNTERS(0|1) [p2pcopy options...]
set -u
src=$(sh /opt/p2pnvme/ci/nvme-dev.sh "$1" "$2") || exit 1
dst=$(sh /opt/p2pnvme/ci/nvme-dev.sh "$3" "$4") || exit 1
off=$5 len=$6 mode=$7 counters=$8
shift 8
avail() { cat /sys/bus/pci/devices/*/p2pmem/available 2>/dev/null | tr '\n' ' '; }
echo "p2pmem available before: $(avail)" >&2
if [ "$counters" = 1 ]; then
	p2pnvme-host stats-reset >/dev/null || exit 1
fi
# With p2pnvme demo --witness, the copy alone is the witness's window "copy".
if [ -n "${P2PNVME_WITNESS:-}" ]; then
	p2pnvme-host witness-start copy >/dev/null || exit 1
fi
p2pcopy copy --src "$src:$off" --dst "$dst:$off" --len "$len" --mode "$mode" --json "$@" >/tmp/copy.json
rc=$?
if [ -n "${P2PNVME_WITNESS:-}" ]; then
	p2pnvme-host witness-stop >/dev/null || exit 1
fi
if [ "$counters" = 1 ]; then
	p2pnvme-host stats-save stats.json >/dev/null || exit 1
fi
p2pnvme-host pmemsave ram.bin >/dev/null || exit 1
echo "p2pmem available after: $(avail)" >&2
echo "copy: $src -> $dst" >&2
cat /tmp/copy.json
exit $rc
