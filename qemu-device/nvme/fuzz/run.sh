#!/bin/sh
# Fuzzes the device for SECONDS per target and fails on a crash or a hang
# (an input running over 10 s).
# Usage: qemu-device/nvme/fuzz/run.sh SECONDS [TARGET...]   (default: ops)
# Targets: ops (structured op stream; seeds generated into fuzz/corpus/ops),
# commands (raw submission entries), two_clients (a raw vfio-user stream from
# one client while another's Identify must keep working). Needs cargo-fuzz (installed if missing)
# and runs on a stable toolchain through RUSTC_BOOTSTRAP=1.
set -eu
secs=${1:?usage: run.sh SECONDS [TARGET...]}
shift
targets=${*:-ops}
cd "$(dirname "$0")/.."
command -v cargo-fuzz >/dev/null 2>&1 || cargo install cargo-fuzz --locked
cargo run --quiet --manifest-path fuzz/Cargo.toml --bin gen-corpus -- fuzz/corpus/ops
status=0
for t in $targets; do
    mkdir -p "fuzz/corpus/$t"
    log="fuzz/$t.log"
    if ! RUSTC_BOOTSTRAP=1 cargo fuzz build "$t" >"$log" 2>&1; then
        echo "$t: the target does not build:"
        grep -m5 -A5 '^error' "$log" || tail -20 "$log"
        status=2
        continue
    fi
    echo "fuzzing $t for $secs s (log: qemu-device/nvme/$log)"
    if RUSTC_BOOTSTRAP=1 cargo fuzz run "$t" "fuzz/corpus/$t" -- \
        -max_total_time="$secs" -timeout=10 -print_final_stats=1 >"$log" 2>&1; then
        result=ok
    else
        result=CRASH
        status=1
    fi
    runs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' || echo '?')
    cov=$(grep -o 'cov: [0-9]*' "$log" | tail -1 | grep -o '[0-9]*' || echo '?')
    echo "$t: $result, $runs executions, $cov edges (cov), corpus $(ls "fuzz/corpus/$t" | wc -l) inputs"
    [ "$result" = ok ] || grep -m1 -A30 'ERROR\|panicked' "$log" || true
done
exit $status
