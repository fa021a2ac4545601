#!/bin/sh
# One verified copy, guest side, under `p2pnvme run --prove` (the launcher's
# demo): copy the proved range to the destination with p2pcopy. The host
# resets the counters as this starts and saves them and a RAM dump after.
# Usage: demo-copy.sh MODE [p2pcopy options...]
set -u
src=$P2PNVME_PROVE_SRC dst=$P2PNVME_PROVE_DST
[ -n "$src" ] && [ -n "$dst" ] || { echo "demo-copy.sh: run under --prove with --prove-dst" >&2; exit 1; }
mode=$1
shift
avail() { cat /sys/bus/pci/devices/*/p2pmem/available 2>/dev/null | tr '\n' ' '; }
echo "p2pmem available before: $(avail)" >&2
# With p2pnvme demo --witness, the copy alone is the witness's window "copy".
if [ -n "${P2PNVME_WITNESS:-}" ]; then
	p2pnvme-host witness-start copy >/dev/null || exit 1
fi
p2pcopy copy --src "$src:$P2PNVME_PROVE_OFF" --dst "$dst:$P2PNVME_PROVE_DST_OFF" \
	--len "$P2PNVME_PROVE_LEN" --mode "$mode" --json "$@" >/tmp/copy.json
rc=$?
if [ -n "${P2PNVME_WITNESS:-}" ]; then
	p2pnvme-host witness-stop >/dev/null || exit 1
fi
echo "p2pmem available after: $(avail)" >&2
echo "copy: $src -> $dst" >&2
cat /tmp/copy.json
exit $rc
