//! One guest session: backing files, the helper processes (device process,
//! virtiofsd per shared folder), QEMU, and the command channel (fw_cfg in,
//! virtio-serial ports out). This file prepares a session (nothing runs
//! yet); `boot` starts its processes, `run` runs a command or a console in
//! it. The session owns every process it starts; the modules it uses
//! (accel, witness, qemu, device, ...) get plain values, never the session.

mod boot;
mod run;

pub use run::Output;

use crate::accel;
use crate::device::Controller;
use crate::guest_ram::ProofWatch;
use crate::image::{self, Image};
use crate::kernel::GuestKernel;
use crate::kernel_build;
use crate::options::{AccelChoice, VmOptions};
use crate::procs::Helper;
use crate::vm::Accel;
use crate::witness::{self, Witness};
use anyhow::{bail, Context, Result};
use p2pnvme_docs::stats::StatsDoc;
use p2pnvme_docs::witness::WitnessReport;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// A prepared guest: its options, image, kernel, backing files and run
/// directory; [`Session::run`] or [`Session::shell`] boots it. It owns the
/// lifecycle of every process it starts: they stop when it is dropped.
pub struct Session {
    pub opts: VmOptions,
    pub image: Image,
    /// The kernel to boot and its modules (the image's unless `--kernel`).
    pub kernel: GuestKernel,
    run_dir: tempfile::TempDir,
    pub accel: Accel,
    /// Backing file per QEMU built-in controller.
    pub qemu_backing: Vec<PathBuf>,
    /// The project's controllers.
    pub controllers: Vec<Controller>,
    /// Helper processes, started in order and stopped in reverse.
    helpers: Vec<Helper>,
    /// Shell lines run before the command (e.g. `--prove`'s variables).
    pub preamble: String,
    /// Extra kernel arguments the launcher itself adds (e.g. `p2pnvme.prove=1`).
    pub kernel_args: Vec<String>,
    /// The TCG witness plugin, when asked for (see witness.rs).
    pub witness: Option<Arc<Witness>>,
    /// `--prove`'s host-side watch (command times, the RAM scan).
    pub proof: Option<Arc<ProofWatch>>,
}

impl Session {
    /// Checks the options, builds the image if needed, resolves the kernel
    /// and creates the backing files; nothing runs yet.
    pub fn prepare(opts: VmOptions) -> Result<Session> {
        opts.validate()?;
        let image = image::ensure(false)?;
        let opts = kernel_build::pick(opts, &image.rootfs)?;
        let opts = crate::own_kernel::build_if_asked(opts, &image.rootfs)?;
        let kernel = GuestKernel::resolve(&opts, &image)?;
        for ko in &opts.user_modules {
            crate::modcheck::check(ko, &kernel.release)?;
        }
        let run_dir = tempfile::Builder::new()
            .prefix("p2pnvme-")
            .tempdir()
            .context("creating a run directory in $TMPDIR")?;
        let data_dir = opts
            .backing_dir
            .clone()
            .unwrap_or_else(|| run_dir.path().to_path_buf());
        fs::create_dir_all(&data_dir).with_context(|| {
            format!(
                "cannot create --backing-dir {}: pick a writable directory",
                data_dir.display()
            )
        })?;
        let mut qemu_backing = vec![];
        for i in 0..opts.qemu_nvme {
            let f = data_dir.join(format!("qemu-nvme{i}.img"));
            backing_file(&f, opts.ns_size)?;
            qemu_backing.push(f);
        }
        let mut controllers = vec![];
        for c in 0..opts.nvme {
            let mut namespaces = vec![];
            for n in 1..=opts.namespaces {
                let f = data_dir.join(format!("nvme{c}n{n}.img"));
                backing_file(&f, opts.ns_size)?;
                namespaces.push(f);
            }
            controllers.push(Controller {
                socket: run_dir.path().join(format!("nvme{c}.sock")),
                namespaces,
            });
        }
        let accel = accel::choose(&opts, &image.key, kvm_probe)?;
        Ok(Session {
            accel,
            qemu_backing,
            controllers,
            helpers: vec![],
            preamble: crate::modcheck::preamble(&opts.user_modules),
            kernel_args: vec![],
            witness: None,
            proof: None,
            image,
            kernel,
            run_dir,
            opts,
        })
    }

    /// Gives the session the TCG witness plugin when `wanted` (before it
    /// boots); refused in one line unless the guest runs under TCG.
    pub fn attach_witness(&mut self, wanted: bool) -> Result<()> {
        if !wanted {
            return Ok(());
        }
        if self.opts.accel_choice() != AccelChoice::Tcg {
            bail!("--witness needs TCG (QEMU's plugins do not see KVM guests): use --accel tcg");
        }
        let w = Witness::new(self.opts.qemu_nvme, self.opts.cmb_mib)?;
        self.witness = Some(Arc::new(w));
        Ok(())
    }

    /// Writes the witness report to `file`, logs one line per window, and
    /// returns the report.
    pub fn save_witness(&self, file: &Path) -> Result<WitnessReport> {
        let w = self
            .witness
            .as_ref()
            .context("this session has no witness")?;
        let doc = w.save(file)?;
        for win in &doc.windows {
            log::info!("witness: {}", witness::summary(win));
        }
        Ok(doc)
    }

    fn qmp_socket(&self) -> PathBuf {
        self.run_dir.path().join("qmp.sock")
    }

    pub fn stats_socket(&self) -> PathBuf {
        self.run_dir.path().join("stats.sock")
    }

    fn fs_socket(&self, i: usize) -> PathBuf {
        self.run_dir.path().join(format!("virtiofs{i}.sock"))
    }

    /// Every controller's counters from the device process, while it runs.
    pub fn stats(&self) -> Result<StatsDoc> {
        if self.controllers.is_empty() || self.helpers.is_empty() {
            bail!("no p2pnvme device process is running (use --nvme N)");
        }
        crate::stats::get(&self.stats_socket())
    }

    /// A file in the run directory (where the guest's host requests write).
    pub fn run_file(&self, name: &str) -> PathBuf {
        self.run_dir.path().join(name)
    }

    /// Stops the helper processes, last started first (QEMU is already gone
    /// after run/shell).
    pub fn stop_helpers(&mut self) {
        while let Some(mut h) = self.helpers.pop() {
            h.proc.stop(Duration::from_secs(3));
        }
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        self.stop_helpers();
    }
}

/// Creates a sparse backing file, or checks an existing one is big enough.
fn backing_file(path: &Path, size: u64) -> Result<()> {
    let f = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .open(path)
        .with_context(|| format!("cannot create backing file {}", path.display()))?;
    let len = f.metadata()?.len();
    if len < size {
        f.set_len(size)?;
    }
    Ok(())
}

/// Whether a short KVM guest with these options (and no devices) runs here.
fn kvm_probe(opts: &VmOptions) -> Result<bool> {
    let mut probe = Session::prepare(VmOptions {
        qemu_nvme: 0,
        nvme: 0,
        accel: AccelChoice::Tcg,
        kvm: false,
        no_guest_driver: true,
        shares: vec![],
        user_modules: vec![],
        faults: vec![],
        trace: None,
        ..opts.clone()
    })?;
    probe.accel = Accel::Kvm;
    Ok(probe
        .run("true", Duration::from_secs(60), Output::Capture)
        .map(|r| r.status == 0)
        .unwrap_or(false))
}
