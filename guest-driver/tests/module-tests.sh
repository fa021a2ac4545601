#!/bin/sh
# Guest-side tests of the p2pcopy module and CLI, run by
# ci/tests/module.rs. Needs two controllers with two namespaces each.
# Usage: module-tests.sh SERIAL_A SERIAL_B
set -u
A1=$(sh /opt/p2pnvme/ci/nvme-dev.sh "$1" 1) A2=$(sh /opt/p2pnvme/ci/nvme-dev.sh "$1" 2)
B1=$(sh /opt/p2pnvme/ci/nvme-dev.sh "$2" 1)
fails=0
ok() { echo "ok: $*"; }
bad() { echo "FAIL: $*"; fails=$((fails + 1)); }
avail() { cat /sys/bus/pci/devices/*/p2pmem/available | tr '\n' ' '; }
before=$(avail)

dd if=/dev/urandom of=/tmp/data bs=1M count=64 2>/dev/null
dd if=/tmp/data of="$A1" bs=1M oflag=direct 2>/dev/null
want=$(sha256sum </tmp/data | cut -d' ' -f1)
rm /tmp/data

check_copy() { # dst mode label
	if p2pcopy copy --src "$A1" --dst "$1" --len 64M --mode "$2" --json >/tmp/out.json; then
		got=$(dd if="$1" bs=1M count=64 iflag=direct 2>/dev/null | sha256sum | cut -d' ' -f1)
		mode=$(sed -n 's/.*"mode":"\([a-z0-9]*\)".*/\1/p' /tmp/out.json)
		[ "$got" = "$want" ] && [ "$mode" = "$2" ] && ok "$3 $2: checksum equal" || bad "$3 $2: checksum $got mode $mode"
	else
		bad "$3 $2: copy failed: $(cat /tmp/out.json)"
	fi
	dd if=/dev/zero of="$1" bs=1M count=64 oflag=direct 2>/dev/null
}
check_copy "$A2" p2p "same controller"
check_copy "$A2" bounce "same controller"
check_copy "$B1" p2p "peer controllers"
check_copy "$B1" bounce "peer controllers"

expect_errno() { # label errno-text args...
	label=$1 text=$2
	shift 2
	if p2pcopy copy "$@" 2>/tmp/err; then
		bad "$label: succeeded"
	elif grep -q "$text" /tmp/err; then
		ok "$label: $(cat /tmp/err)"
	else
		bad "$label: wrong error: $(cat /tmp/err)"
	fi
}
expect_errno "misaligned offset" "not aligned" --src "$A1:100" --dst "$B1" --len 4K
expect_errno "misaligned length" "not aligned" --src "$A1" --dst "$B1" --len 1000
expect_errno "past the end" "past the end" --src "$A1" --dst "$B1:$(($(blockdev --getsize64 "$B1") - 4096))" --len 1M
expect_errno "overlap" "overlap" --src "$A1" --dst "$A1:1M" --len 2M
expect_errno "not enough P2P memory" "not enough free memory" --src "$A1" --dst "$B1" --len 64M --chunk 1M --depth 64
expect_errno "no P2PDMA" "does not support P2PDMA" --src "$A1" --dst /dev/ram0 --len 1M
expect_errno "unknown provider" "no such PCI device" --src "$A1" --dst "$B1" --len 1M --provider 0000:7f:1f.7
dmesg | grep -q "p2pcopy: source and destination ranges overlap" && ok "kernel log says why" || bad "no kernel log line"

# A signal interrupts a copy between waves and everything is given back.
# (Background jobs of a non-interactive shell ignore SIGINT: use SIGTERM.)
p2pcopy copy --src "$A1" --dst "$B1" --len 400M --chunk 64K --depth 1 2>/tmp/err &
pid=$!
sleep 0.5
kill -TERM "$pid"
wait "$pid"
rc=$?
if [ "$rc" = 143 ] && dmesg | grep -q "copy interrupted by a signal"; then
	ok "signal stops a copy: $(dmesg | grep 'copy interrupted' | tail -1)"
else
	bad "signal: exit $rc $(cat /tmp/err)"
fi

# auto mode on compatible devices uses p2p.
p2pcopy copy --src "$A1" --dst "$B1" --len 1M --mode auto --json | grep -q '"mode":"p2p"' && ok "auto picks p2p" || bad "auto did not pick p2p"

after=$(avail)
[ "$before" = "$after" ] && ok "provider memory returned ($after)" || bad "provider memory leaked: $before -> $after"
p2pcopy stats
p2pcopy providers
rmmod p2pcopy && ok "module unloads" || bad "module did not unload"
echo "$fails failed"
exit "$fails"
