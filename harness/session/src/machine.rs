//! The seam between what to boot and where it runs.
//!
//! A [`Machine`] is asked what it offers a guest (its emulator, its
//! transports to the probe, its accelerator, its firmware), then given a
//! [`BootPlan`] and the run state machine to feed. It owns everything
//! about the boot itself: the throwaway overlay, the QEMU process and its
//! helpers, the console and the probe; and it tears all of them down
//! whatever happens. [`crate::LocalQemu`] runs QEMU on this host.

use std::path::{Path, PathBuf};

use airboot_core::run::{Run, RunConfig};
use airboot_core::scenario::AccelChoice;
use airboot_model::{Arch, DiskFormat, FailureCode};
use airboot_qemu::accel::AccelDecision;
use airboot_qemu::firmware::Firmware;
use airboot_qemu::transport::{self, Choice};
use airboot_qemu::vm::{LoginPlan, RecordSpec, VmError, VmEvent, VmOutcome};

/// A place guests boot. `Sync`: an exploration boots several crash
/// states at once (`airboot cut --jobs`), each from its own thread.
pub trait Machine: Sync {
    /// The QEMU system emulator for `arch`, or why there is none.
    fn emulator(&self, arch: Arch) -> Result<PathBuf, String>;
    /// How the host side of a probe transport can be served here.
    fn transports(&self) -> transport::HostCaps;
    /// The accelerator for a guest of `arch`: `choice` as the scenario or
    /// `--accel` (`by`) asks; `probe_kernel` boots under KVM to see it
    /// works.
    fn accel(
        &self,
        choice: AccelChoice,
        by: &str,
        arch: Arch,
        qemu: &Path,
        probe_kernel: Option<&Path>,
    ) -> AccelDecision;
    /// UEFI firmware for `arch` (or the scenario's own files).
    fn firmware(&self, arch: Arch, code: Option<&Path>, vars: Option<&Path>) -> Result<Firmware, String>;
    /// Boot `plan`, feed `run` until it decides, and tear everything down.
    fn boot(&self, plan: &BootPlan, run: Run, events: &mut dyn FnMut(VmEvent)) -> Result<VmOutcome, MachineError>;
}

/// What a machine offers a guest, as asked before planning.
#[derive(Debug, Clone)]
pub struct HostCaps {
    pub qemu: PathBuf,
    pub transports: transport::HostCaps,
}

/// Everything a machine needs to boot a scenario's image: decided, with
/// the reasons, before anything starts.
#[derive(Debug, Clone)]
pub struct BootPlan {
    pub arch: Arch,
    pub qemu: PathBuf,
    pub accel: AccelDecision,
    pub transport: Choice,
    /// Budgets and timeouts are written for KVM: × this under TCG.
    pub scale: f64,
    /// UEFI boots: the firmware code and the variables template to copy.
    pub firmware: Option<Firmware>,
    /// `-cpu`; `None`: the default for the arch and accelerator.
    pub cpu: Option<String>,
    pub memory_mib: u64,
    pub cpus: u32,
    /// The guest's clock at power-on (`[machine] rtc`), UTC.
    pub rtc: Option<String>,
    pub kernel: Option<PathBuf>,
    pub initrd: Option<PathBuf>,
    pub append: Option<String>,
    /// What the throwaway overlay goes over: the input image, or a crash
    /// state (a qcow2 over it).
    pub disk: (PathBuf, DiskFormat),
    /// Record every disk request here (blklogwrites), marking `record`'s
    /// console lines in the stream.
    pub write_log: Option<PathBuf>,
    pub record: Option<RecordSpec>,
    /// Keep the overlay (what the guest wrote) here afterwards.
    pub keep_overlay: Option<PathBuf>,
    pub console_log: PathBuf,
    /// How the run state machine judges the guest.
    pub run: RunConfig,
    /// Images the probe test-runs once the stack is ready.
    pub verify_images: Vec<String>,
    /// No probe: log in on the console and start the reference reporter.
    pub login: Option<LoginPlan>,
    /// `[[step]]` actions once the run has decided: up to and including
    /// the first reboot or power cut (timeouts scaled).
    pub after: Vec<airboot_core::scenario::StepSpec>,
}

/// Why a machine could not boot a plan.
#[derive(Debug, thiserror::Error)]
pub enum MachineError {
    #[error("cannot create a temporary folder: {0}")]
    Workdir(String),
    #[error("{0}")]
    Overlay(String),
    #[error("{0}")]
    Runtime(String),
    /// QEMU or a helper failed; `argv` is what was (or would have been) run.
    #[error("{error}")]
    Vm { error: VmError, argv: Vec<String> },
}

impl MachineError {
    pub fn code(&self) -> FailureCode {
        match self {
            MachineError::Workdir(_) => FailureCode::Workdir,
            MachineError::Overlay(_) => FailureCode::Overlay,
            MachineError::Runtime(_) => FailureCode::Runtime,
            MachineError::Vm { error: VmError::Interrupted(_), .. } => FailureCode::Interrupted,
            MachineError::Vm { .. } => FailureCode::Qemu,
        }
    }

    /// The QEMU command line, when it got that far.
    pub fn argv(&self) -> &[String] {
        match self {
            MachineError::Vm { argv, .. } => argv,
            _ => &[],
        }
    }
}
