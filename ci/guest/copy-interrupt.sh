#!/bin/sh
# Copies interrupted mid-flight (ci/tests/copy_interrupts.rs): SIGTERM and
# SIGKILL at several points of p2p copies, and a copy whose first read the
# controller never completes (a `never` fault rule: the driver times out,
# aborts and resets) signalled while it waits. p2pcopy's bios may then
# complete after their submitter returned; the module counts a completion
# that finds its copy gone (stale_completions) and WARNs.
# Usage: copy-interrupt.sh STUCK_OFFSET LEN
. /opt/p2pnvme/ci/faults-lib.sh
stuck=$1 len=$2
A=$(dev p2pnvme-0 1) B=$(dev p2pnvme-1 1) P=$(bdf p2pnvme-1)
echo "provider=$P"
echo "avail_before=$(avail "$P")"
n=0 interrupted=0
for delay in 0.05 0.1 0.15 0.2 0.3 0.5; do
	# (A background job of sh ignores SIGINT: TERM is the polite one.)
	for sig in TERM KILL; do
		p2pcopy copy --src "$A:0" --dst "$B:0" --len "$len" --chunk 16K \
			--depth 16 --provider "$P" >/dev/null 2>&1 &
		pid=$!
		sleep "$delay"
		kill -s "$sig" "$pid" 2>/dev/null
		wait "$pid"
		rc=$?
		n=$((n + 1))
		[ "$rc" != 0 ] && interrupted=$((interrupted + 1))
		echo "signal_${n}=$sig:$delay:$rc"
	done
done
echo "signalled=$n"
echo "interrupted=$interrupted"
# The stuck read: SIGTERM while the driver waits for its timeout.
t0=$(date +%s)
p2pcopy copy --src "$A:$stuck" --dst "$B:$stuck" --len 1M --provider "$P" \
	>/dev/null 2>&1 &
pid=$!
sleep 1
kill -s TERM "$pid"
wait "$pid"
echo "stuck_rc=$?"
echo "stuck_s=$(($(date +%s) - t0))"
mark "stuck-copy-done"
copy after --src "$A:0" --dst "$B:0" --len 4M --provider "$P"
echo "avail_after=$(avail "$P")"
echo "stale=$(sed -n 's/^stale_completions //p' /sys/class/misc/p2pcopy/stats)"
rmmod p2pcopy
echo "rmmod_rc=$?"
echo "warnings=$(dmesg | grep -c -E 'WARNING:|BUG:|Oops|refcount_t|use-after-free')"
echo "timeouts=$(dmesg | grep -c -E 'nvme.*timeout')"
dmesg | grep -E 'p2pcopy|nvme|WARNING|BUG|Oops|refcount_t' | sed 's/^/dmesg=/'
