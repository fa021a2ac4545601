#!/bin/sh
# Surprise removal of the P2P memory provider during a p2p copy
# (ci/tests/faults/removal.rs): the copy fails cleanly, the controller goes, comes
# back when the launcher plugs it in again, and works.
# Usage: fault-remove.sh OFFSET LEN
. /opt/p2pnvme/ci/faults-lib.sh
off=$1 len=$2
A=$(dev p2pnvme-0 1) B=$(dev p2pnvme-1 1) P=$(bdf p2pnvme-0) Q=$(bdf p2pnvme-1)
echo "provider=$P"
echo "size=$(cat "/sys/bus/pci/devices/$P/p2pmem/size")"
echo "avail_before=$(avail "$P")"
echo "peer_avail_before=$(avail "$Q")"
# Interrupt capabilities as lspci shows them, e.g. "MSI: Enable+".
irq_caps() { lspci -s "$1" -vv | grep -o -E 'MSI(-X)?: Enable[+-]' | tr '\n' ' '; }
echo "irq=$(irq_caps "$P")"
echo "peer_irq=$(irq_caps "$Q")"
copy fault --src "$A:$off" --dst "$B:$off" --len "$len" --provider "$P"
wait_ctrl p2pnvme-0 gone 600
echo "gone_rc=$?"
# The provider's PCI device goes too, which the kernel lets happen only once
# every P2P page of it is back (its pgmap teardown waits for them); the
# launcher plugs it back 2 s after that, so a 0.1 s poll sees the gap.
n=300
while [ -e "/sys/bus/pci/devices/$P/p2pmem" ] && [ "$n" -gt 0 ]; do
	sleep 0.1
	n=$((n - 1))
done
[ "$n" -gt 0 ]
echo "p2pmem_gone_rc=$?"
wait_ctrl p2pnvme-0 live 600
echo "back_rc=$?"
sleep 1 # the namespace follows the controller
P2=$(bdf p2pnvme-0)
echo "provider_back=$P2"
echo "avail_back=$(avail "$P2")"
echo "irq_back=$(irq_caps "$P2")"
echo "size_back=$(cat "/sys/bus/pci/devices/$P2/p2pmem/size")"
echo "peer_avail_after=$(avail "$Q")"
echo "nvme_list_has_it=$(nvme list 2>/dev/null | grep -c p2pnvme-0)"
A2=$(dev p2pnvme-0 1)
dd if="$A2" of=/dev/null bs=4096 count=16 iflag=direct 2>/dev/null
echo "read_rc=$?"
copy again --src "$A2:$off" --dst "$B:$off" --len "$len" --provider "$P2"
rmmod p2pcopy
echo "rmmod_rc=$?"
echo "oopses=$(dmesg | grep -c -E 'Oops|BUG:|WARNING:|Call Trace:')"
dmesg | grep -E 'p2pcopy: |nvme|pcieport|hotplug|Slot|Oops|BUG:|WARNING:' | sed 's/^/dmesg=/'
