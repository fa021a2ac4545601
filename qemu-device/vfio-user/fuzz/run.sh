#!/bin/sh
# Fuzzes the vfio-user server for SECONDS (default 60): installs cargo-fuzz
# if missing, writes the seed corpus, runs the `messages` target, and fails
# on a crash (libFuzzer exits non-zero and leaves fuzz/artifacts/messages/).
set -eu
secs=${1:-60}
case $secs in *[!0-9]*|'') echo "usage: $0 SECONDS" >&2; exit 2;; esac
here=$(cd "$(dirname "$0")" && pwd)
crate=$(dirname "$here")
root=$(cd "$crate/../.." && pwd)
if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "installing cargo-fuzz" >&2
    cargo install cargo-fuzz
fi
seeds="$here/corpus-seed/messages"
corpus="$here/corpus/messages"
mkdir -p "$corpus"
(cd "$root" && cargo run -q -p p2pnvme-vfio-user --features test-utils --example fuzz_seeds -- "$seeds")
cd "$crate"
# The stable toolchain with RUSTC_BOOTSTRAP=1 builds the sanitizer flags.
RUSTC_BOOTSTRAP=1 cargo fuzz run messages "$corpus" "$seeds" -- \
    -max_total_time="$secs" -rss_limit_mb=2048 -print_final_stats=1
