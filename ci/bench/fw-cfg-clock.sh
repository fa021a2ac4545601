# Host clocks of a boot from QEMU's fw_cfg trace (sourced by ci/bench/boot
# and ci/bench/boot-blocks). The boot runs with `-msg timestamp=on` and
# `-trace fw_cfg_select,file=TRACE` (plus fw_cfg_add_file for QEMU's set-up).

# Seconds since the UTC day began, from "HH:MM:SS.ffffff" anywhere in a line.
sod() { sed -n 's/.*\([0-9][0-9]\):\([0-9][0-9]\):\([0-9][0-9]\.[0-9]*\).*/\1 \2 \3/p' | awk '{ printf "%.6f\n", $1 * 3600 + $2 * 60 + $3 }'; }
now() { date -u +%H:%M:%S.%N | sod; }

# The firmware's last load of the kernel, initrd or command line.
fw_loaded() { grep -E "'(kernel|initrd|cmdline|setup)_data'" "$1" | tail -n1 | sod; }

# The command's start: the guest's fw_cfg reads after the firmware's; the
# last file entry (key >= 0x20) is init copying the command.
command_start() {
	awk -v done="$(grep -nE "'(kernel|initrd|cmdline|setup)_data'" "$1" | tail -n1 | cut -d: -f1)" \
		'NR > done && $2 == "fw_cfg_select" && $5 >= "0x0020" { last = $0 } END { print last }' "$1" | sod
}
