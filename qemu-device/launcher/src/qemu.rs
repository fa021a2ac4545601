//! QEMU command line: machine, PCIe topology and the NVMe controllers.

use crate::image::rootfs_command;
use crate::vm::{Accel, CpuModel, FsDevice, Iommu, TcgThreads, Topology};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::Command;

/// A PCI function to attach, in slot order.
#[derive(Clone, Debug)]
pub enum PciDevice {
    /// QEMU's built-in NVMe with a CMB, backed by a raw file.
    QemuNvme { backing: PathBuf, cmb_mib: u32 },
    /// A controller served by the p2pnvme device process over vfio-user.
    VfioUser { socket: PathBuf },
}

/// How the guest reports back: a file per virtio-serial port.
pub struct GuestPorts {
    pub stdout: PathBuf,
    pub stderr: PathBuf,
    pub status: PathBuf,
    /// Unix socket (QEMU is the server) for the host control channel.
    pub control: PathBuf,
}

/// Everything the QEMU command line is built from: plain values, so this
/// module needs neither the session nor the options.
pub struct MachineConfig<'a> {
    /// The toolchain root filesystem (QEMU, its firmware and modules).
    pub rootfs: &'a Path,
    /// The kernel to boot (the image's, or `--kernel`).
    pub kernel: PathBuf,
    pub initrd: PathBuf,
    pub devices: Vec<PciDevice>,
    pub topology: Topology,
    pub cpu: CpuModel,
    pub accel: Accel,
    pub iommu: Iommu,
    pub mem_mib: u32,
    pub smp: u32,
    pub append: String,
    pub extra_args: Vec<String>,
    /// Command script passed through fw_cfg; None gives an interactive console.
    pub command: Option<(PathBuf, GuestPorts)>,
    pub console_log: Option<PathBuf>,
    pub qmp_socket: Option<PathBuf>,
    /// virtiofs devices, one per shared folder.
    pub fs_devices: Vec<FsDevice>,
    /// Extra fw_cfg files for the guest's init: (name below opt/p2pnvme/, host file).
    pub fw_files: Vec<(String, PathBuf)>,
}

/// The root filesystem's QEMU (see [`rootfs_command`]).
pub fn qemu_command(rootfs: &Path) -> Command {
    let mut cmd = rootfs_command(rootfs, &rootfs.join("usr/bin/qemu-system-x86_64"));
    cmd.env(
        "QEMU_MODULE_DIR",
        rootfs.join("usr/lib/x86_64-linux-gnu/qemu"),
    );
    cmd
}

fn path(p: &Path) -> String {
    p.display().to_string()
}

/// The hotplug-capable port (a switch's downstream port or a root port)
/// of PCI slot `i`.
fn bus_name(topology: Topology, i: usize) -> String {
    match topology {
        Topology::Switch => format!("p2p_dn{i}"),
        Topology::RootPorts => format!("p2p_rp{i}"),
    }
}

/// QEMU's id of the project's controller `ctrl` (what QMP device_del names).
pub fn vfio_user_id(ctrl: usize) -> String {
    format!("p2p_nvme{ctrl}")
}

/// The `-device` (and QMP `device_add`) properties of the project's
/// controller `ctrl` in PCI slot `slot`.
pub fn vfio_user_device(topology: Topology, slot: usize, ctrl: usize, socket: &Path) -> Value {
    json!({
        "driver": "vfio-user-pci",
        "id": vfio_user_id(ctrl),
        "socket": {"path": path(socket), "type": "unix"},
        "bus": bus_name(topology, slot),
    })
}

/// Arguments for the PCIe topology; returns the bus each device goes on.
fn topology_args(topology: Topology, n: usize, args: &mut Vec<String>) -> Vec<String> {
    let mut dev = |s: String| {
        args.push("-device".into());
        args.push(s);
    };
    match topology {
        Topology::Switch => {
            if n == 0 {
                return vec![];
            }
            dev("pcie-root-port,id=p2p_rp,chassis=1,slot=0".into());
            dev("x3130-upstream,id=p2p_up,bus=p2p_rp".into());
            (0..n)
                .map(|i| {
                    let bus = bus_name(topology, i);
                    dev(format!(
                        "xio3130-downstream,id={bus},bus=p2p_up,chassis={},slot=0",
                        i + 2
                    ));
                    bus
                })
                .collect()
        }
        Topology::RootPorts => (0..n)
            .map(|i| {
                let bus = bus_name(topology, i);
                dev(format!("pcie-root-port,id={bus},chassis={},slot=0", i + 2));
                bus
            })
            .collect(),
    }
}

/// qboot when the root filesystem ships it: it only loads the kernel (Linux
/// assigns PCI resources itself), which takes a fraction of SeaBIOS's time
/// under TCG (ci/bench/boot). SeaBIOS otherwise.
fn firmware(rootfs: &Path) -> &'static str {
    if rootfs.join("usr/share/qemu/qboot.rom").is_file() {
        "qboot.rom"
    } else {
        "bios-256k.bin"
    }
}

pub fn build_args(cfg: &MachineConfig) -> Vec<String> {
    let mut a: Vec<String> = Vec::new();
    let mut push = |items: &[&str]| a.extend(items.iter().map(|s| s.to_string()));
    let rootfs = cfg.rootfs;
    // vfio-user needs guest RAM the device process can map: fd-backed, shared.
    let mem = format!("memory-backend-memfd,id=mem,size={}M,share=on", cfg.mem_mib);
    let accel = match cfg.accel {
        Accel::Tcg(TcgThreads::Single) => "tcg,thread=single",
        Accel::Tcg(TcgThreads::Multi) => "tcg,thread=multi",
        Accel::Kvm => "kvm",
    };
    push(&[
        "-L",
        &path(&rootfs.join("usr/share/qemu")),
        "-L",
        &path(&rootfs.join("usr/share/seabios")),
        "-bios",
        firmware(rootfs),
        "-machine",
        "q35,memory-backend=mem",
        // Native PCIe hotplug (pciehp), as on real hardware: with QEMU's
        // default ACPI hotplug the _OSC withholds it, and a kernel without
        // acpiphp (the minimal one) never acts on a device_del.
        "-global",
        "ICH9-LPC.acpi-pci-hotplug-with-bridge-support=off",
        "-object",
        &mem,
        "-m",
        &format!("{}M", cfg.mem_mib),
        "-smp",
        &cfg.smp.to_string(),
        "-accel",
        accel,
        "-cpu",
        &cfg.cpu.qemu_cpu(cfg.accel),
        "-nographic",
        "-no-reboot",
        "-nic",
        "none",
        "-vga",
        "none",
        "-kernel",
        &path(&cfg.kernel),
        "-initrd",
        &path(&cfg.initrd),
        "-append",
        &cfg.append,
    ]);
    // The IOMMU before every PCI device it translates for.
    if let Some(dev) = cfg.iommu.qemu_device() {
        push(&["-device", dev]);
    }
    match &cfg.console_log {
        Some(log) => push(&[
            "-serial",
            &format!("file:{}", log.display()),
            "-monitor",
            "none",
        ]),
        None => push(&["-serial", "mon:stdio"]),
    }
    if let Some(qmp) = &cfg.qmp_socket {
        push(&[
            "-qmp",
            &format!("unix:{},server=on,wait=off", qmp.display()),
        ]);
    }
    for (name, file) in &cfg.fw_files {
        push(&[
            "-fw_cfg",
            &format!("name=opt/p2pnvme/{name},file={}", file.display()),
        ]);
    }
    for (i, fs) in cfg.fs_devices.iter().enumerate() {
        push(&[
            "-chardev",
            &format!("socket,id=p2p_fs{i},path={}", fs.socket.display()),
            "-device",
            &format!("vhost-user-fs-pci,chardev=p2p_fs{i},tag={}", fs.tag),
        ]);
    }
    if let Some((script, ports)) = &cfg.command {
        push(&[
            "-fw_cfg",
            &format!("name=opt/p2pnvme/cmd,file={}", script.display()),
            "-device",
            "virtio-serial-pci,id=p2p_vser",
        ]);
        for (name, file) in [
            ("stdout", &ports.stdout),
            ("stderr", &ports.stderr),
            ("status", &ports.status),
        ] {
            push(&[
                "-chardev",
                &format!("file,id=p2p_{name},path={}", file.display()),
                "-device",
                &format!("virtserialport,bus=p2p_vser.0,chardev=p2p_{name},name=p2pnvme.{name}"),
            ]);
        }
        push(&[
            "-chardev",
            &format!(
                "socket,id=p2p_ctl,path={},server=on,wait=off",
                ports.control.display()
            ),
            "-device",
            "virtserialport,bus=p2p_vser.0,chardev=p2p_ctl,name=p2pnvme.ctl",
        ]);
    }
    let buses = topology_args(cfg.topology, cfg.devices.len(), &mut a);
    let mut ctrl = 0;
    for (i, (dev, bus)) in cfg.devices.iter().zip(buses).enumerate() {
        match dev {
            PciDevice::QemuNvme { backing, cmb_mib } => {
                a.push("-drive".into());
                a.push(format!(
                    "file={},if=none,id=p2p_qd{i},format=raw,cache=none,aio=threads",
                    backing.display()
                ));
                a.push("-device".into());
                a.push(format!(
                    "nvme,serial=qemu-nvme-{i},drive=p2p_qd{i},cmb_size_mb={cmb_mib},bus={bus}"
                ));
            }
            PciDevice::VfioUser { socket } => {
                a.push("-device".into());
                a.push(vfio_user_device(cfg.topology, i, ctrl, socket).to_string());
                ctrl += 1;
            }
        }
    }
    a.extend(cfg.extra_args.iter().cloned());
    a
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vm::FsDevice;

    fn cfg(topology: Topology) -> MachineConfig<'static> {
        MachineConfig {
            rootfs: Path::new("/r"),
            kernel: "/i/vmlinuz".into(),
            initrd: "/i/initrd".into(),
            devices: vec![
                PciDevice::QemuNvme {
                    backing: "/b0".into(),
                    cmb_mib: 16,
                },
                PciDevice::VfioUser {
                    socket: "/s1".into(),
                },
            ],
            topology,
            cpu: CpuModel::Amd,
            accel: Accel::Tcg(TcgThreads::Single),
            iommu: Iommu::None,
            mem_mib: 1024,
            smp: 2,
            append: "console=ttyS0".into(),
            extra_args: vec!["-S".into()],
            command: None,
            console_log: None,
            qmp_socket: None,
            fs_devices: vec![FsDevice {
                tag: "p2pshare0".into(),
                socket: "/fs0.sock".into(),
            }],
            fw_files: vec![("shares".into(), "/run/shares".into())],
        }
    }

    #[test]
    fn switch_puts_every_device_below_one_upstream_port() {
        let a = build_args(&cfg(Topology::Switch)).join(" ");
        assert_eq!(a.matches("x3130-upstream").count(), 1);
        assert!(a.contains("xio3130-downstream,id=p2p_dn0,bus=p2p_up"));
        assert!(a.contains("xio3130-downstream,id=p2p_dn1,bus=p2p_up"));
        assert!(a.contains("cmb_size_mb=16,bus=p2p_dn0"));
        assert!(a.contains(r#""bus":"p2p_dn1""#));
        assert!(
            a.contains(r#""id":"p2p_nvme0""#),
            "the project's controllers are numbered from 0 for device_del: {a}"
        );
        assert!(a.contains("memory-backend-memfd,id=mem,size=1024M,share=on"));
        assert!(
            a.contains("-cpu EPYC,-erms,-fsrm"),
            "TCG: no fast string moves"
        );
        assert!(a.contains("-accel tcg,thread=single"));
        assert!(a.ends_with("-S"));
        assert!(a.contains("-kernel /i/vmlinuz"));
        assert!(a.contains(
            "-chardev socket,id=p2p_fs0,path=/fs0.sock -device vhost-user-fs-pci,chardev=p2p_fs0,tag=p2pshare0"
        ));
        assert!(a.contains("-fw_cfg name=opt/p2pnvme/shares,file=/run/shares"));
    }

    #[test]
    fn replug_properties_are_the_ones_the_device_booted_with() {
        for t in [Topology::Switch, Topology::RootPorts] {
            let a = build_args(&cfg(t));
            // Slot 1 holds the first project controller (after QEMU's nvme).
            let props = vfio_user_device(t, 1, 0, Path::new("/s1")).to_string();
            assert!(a.contains(&props), "{props} in {a:?}");
        }
    }

    #[test]
    fn qboot_is_the_firmware_only_when_the_root_filesystem_has_it() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(firmware(dir.path()), "bios-256k.bin");
        std::fs::create_dir_all(dir.path().join("usr/share/qemu")).unwrap();
        std::fs::write(dir.path().join("usr/share/qemu/qboot.rom"), b"").unwrap();
        assert_eq!(firmware(dir.path()), "qboot.rom");
    }

    #[test]
    fn multi_threaded_tcg_and_kvm_are_asked_for_by_name() {
        let mut c = cfg(Topology::Switch);
        c.accel = Accel::Tcg(TcgThreads::Multi);
        assert!(build_args(&c).join(" ").contains("-accel tcg,thread=multi"));
        c.accel = Accel::Kvm;
        let a = build_args(&c).join(" ");
        assert!(a.contains("-accel kvm"));
        assert!(
            a.contains("-cpu EPYC "),
            "KVM keeps the model's features: {a}"
        );
    }

    #[test]
    fn hotplug_is_native_pcie_so_a_kernel_without_acpiphp_sees_device_del() {
        for t in [Topology::Switch, Topology::RootPorts] {
            let a = build_args(&cfg(t)).join(" ");
            assert!(a.contains("-global ICH9-LPC.acpi-pci-hotplug-with-bridge-support=off"));
        }
    }

    #[test]
    fn root_ports_give_each_device_its_own_port() {
        let a = build_args(&cfg(Topology::RootPorts)).join(" ");
        assert!(!a.contains("x3130"));
        assert!(a.contains("pcie-root-port,id=p2p_rp0,chassis=2"));
        assert!(a.contains("pcie-root-port,id=p2p_rp1,chassis=3"));
        assert!(a.contains(r#""bus":"p2p_rp1""#));
    }
}
