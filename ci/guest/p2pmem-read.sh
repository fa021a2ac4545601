#!/bin/sh
# A namespace read into P2P memory (mmap of p2pmem/allocate,
# O_DIRECT) lands in the CMB with zero data bytes in guest RAM; the same read
# into an ordinary buffer lands in guest RAM. Counters from log page 0xC0.
set -u
D=$(sh /opt/p2pnvme/ci/nvme-dev.sh p2pnvme-0 1)
C=/dev/${D#/dev/}
C=${C%n1}
bdf=$(basename "$(readlink -f "/sys/block/${D#/dev/}/device/device")")
# u64 words of the vendor log page: 3 = data written to guest RAM, 5 = to own CMB.
word() { nvme get-log "$C" -i 0xc0 -l 112 -b | od -An -t u8 -w8 -v | sed -n "$(($1 + 1))p" | tr -d ' '; }
dd if=/dev/urandom of="$D" bs=1M count=4 oflag=direct 2>/dev/null
ram0=$(word 3) cmb0=$(word 5)
p2pcopy p2pmem-read --dev "$D" --provider "$bdf" --len 4M || exit 1
ram1=$(word 3) cmb1=$(word 5)
dd if="$D" of=/dev/null bs=1M count=4 iflag=direct 2>/dev/null
ram2=$(word 3) cmb2=$(word 5)
echo "p2pmem read: guest RAM data +$((ram1 - ram0)) CMB data +$((cmb1 - cmb0))"
echo "ordinary read: guest RAM data +$((ram2 - ram1)) CMB data +$((cmb2 - cmb1))"
