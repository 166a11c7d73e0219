//! [`LocalQemu`]: the machine that runs QEMU on this host.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::SystemTime;

use airboot_core::run::Run;
use airboot_core::scenario::AccelChoice;
use airboot_model::Arch;
use airboot_qemu::accel::{self, AccelDecision};
use airboot_qemu::argv::VmSpec;
use airboot_qemu::firmware::{self, Firmware};
use airboot_qemu::transport;
use airboot_qemu::vm::{VmEvent, VmOutcome, VmRunner};

use crate::machine::{BootPlan, Machine, MachineError};

/// QEMU on this host. `cache` keeps what is expensive to find out again
/// (the KVM verdict of this host boot, vhost-device-vsock).
#[derive(Debug, Clone)]
pub struct LocalQemu {
    pub cache: PathBuf,
}

impl LocalQemu {
    pub fn new() -> LocalQemu {
        LocalQemu { cache: airboot_images::cache_root() }
    }
}

impl Default for LocalQemu {
    fn default() -> Self {
        Self::new()
    }
}

impl Machine for LocalQemu {
    fn emulator(&self, arch: Arch) -> Result<PathBuf, String> {
        accel::qemu_binary(arch).map_err(|e| e.to_string())
    }

    fn transports(&self) -> transport::HostCaps {
        transport::host_caps(&self.cache)
    }

    fn accel(
        &self,
        choice: AccelChoice,
        by: &str,
        arch: Arch,
        qemu: &Path,
        probe_kernel: Option<&Path>,
    ) -> AccelDecision {
        accel::choose(choice, by, arch, qemu, probe_kernel, Some(&self.cache))
    }

    fn firmware(&self, arch: Arch, code: Option<&Path>, vars: Option<&Path>) -> Result<Firmware, String> {
        firmware::find(arch, code, vars)
    }

    fn boot(&self, plan: &BootPlan, run: Run, events: &mut dyn FnMut(VmEvent)) -> Result<VmOutcome, MachineError> {
        let work = airboot_qemu::scratch::temp_dir("boot").map_err(|e| MachineError::Workdir(e.to_string()))?;
        let overlay = work.path().join("overlay.qcow2");
        airboot_qemu::disk::create_overlay(&plan.disk.0, plan.disk.1, &overlay)
            .map_err(|e| MachineError::Overlay(e.to_string()))?;
        // Boots of this process (several at once with `--jobs`) count up
        // from one random start: they never share a CID, and other airboot
        // processes start elsewhere.
        static START: OnceLock<u64> = OnceLock::new();
        static BOOTS: AtomicU64 = AtomicU64::new(0);
        let start = *START.get_or_init(|| {
            u64::from(std::process::id())
                ^ SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(0)
        });
        let seed = start.wrapping_add(BOOTS.fetch_add(1, Ordering::Relaxed));
        let caps = self.transports();
        let transport = transport::plan(
            plan.transport.kind,
            work.path(),
            plan.memory_mib,
            transport::pick_cid(seed),
            caps.vhost_device_vsock.as_deref(),
        );
        let firmware = match &plan.firmware {
            Some(fw) => {
                let vars = work.path().join("efivars.fd");
                std::fs::copy(&fw.vars_template, &vars).map_err(|e| {
                    MachineError::Workdir(format!(
                        "cannot copy the UEFI variables template {}: {e}",
                        fw.vars_template.display()
                    ))
                })?;
                Some((fw.code.clone(), vars))
            }
            None => None,
        };
        let spec = VmSpec {
            arch: plan.arch,
            accel: plan.accel.accel,
            cpu: plan.cpu.clone(),
            firmware,
            memory_mib: plan.memory_mib,
            cpus: plan.cpus,
            rtc: plan.rtc.clone(),
            kernel: plan.kernel.clone(),
            initrd: plan.initrd.clone(),
            append: plan.append.clone(),
            disk: overlay.clone(),
            write_log: plan.write_log.clone(),
            qmp_socket: work.path().join("qmp.sock"),
        };
        let runner = VmRunner {
            qemu: plan.qemu.clone(),
            spec,
            plan: transport,
            console_log: plan.console_log.clone(),
            verify_images: plan.verify_images.clone(),
            record: plan.record.clone(),
            login: plan.login.clone(),
            after: plan.after.clone(),
        };
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| MachineError::Runtime(e.to_string()))?;
        let outcome = rt.block_on(runner.run(run, events));
        drop(rt);
        // What the guest wrote is kept even when the run failed.
        let kept = match &plan.keep_overlay {
            Some(keep) => std::fs::rename(&overlay, keep)
                .or_else(|_| std::fs::copy(&overlay, keep).map(|_| ()))
                .map_err(|e| format!("could not keep the run's disk as {}: {e}", keep.display())),
            None => Ok(()),
        };
        let mut outcome = outcome.map_err(|error| MachineError::Vm { error, argv: runner.argv() })?;
        if let Err(note) = kept {
            outcome.result.notes.push(note);
        }
        Ok(outcome)
    }
}
