#!/bin/sh
# A verified copy (demo-copy.sh, under `p2pnvme run --prove --prove-dst`)
# that must also have taken a given path: the copy's mode, optionally a word
# of its P2P map type, and every P2P page back in its pool afterwards.
# Usage: copy-check.sh MODE EXPECTED_MODE [MAP_WORD]
set -u
mode=$1 want=$2 map=${3:-}
avail() { cat /sys/bus/pci/devices/*/p2pmem/available 2>/dev/null | tr '\n' ' '; }
before=$(avail)
sh /opt/p2pnvme/ci/demo-copy.sh "$mode" >/tmp/copy-check.json || exit 1
doc=$(cat /tmp/copy-check.json)
echo "$doc"
case "$doc" in
*"\"mode\":\"$want\""*) ;;
*) echo "copy-check: expected mode $want" >&2; exit 1 ;;
esac
if [ -n "$map" ]; then
	case "$doc" in
	*"\"map_type\":\""*"$map"*) ;;
	*) echo "copy-check: expected a map type with '$map'" >&2; exit 1 ;;
	esac
fi
after=$(avail)
[ "$before" = "$after" ] || { echo "copy-check: P2P memory not returned ($before -> $after)" >&2; exit 1; }
