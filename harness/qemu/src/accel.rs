//! Choosing the accelerator: KVM only when it demonstrably runs a guest.
//!
//! A `/dev/kvm` that opens is not enough: under some nested setups the
//! device works, a VM is created, real-mode code even runs, and then the
//! vCPU spins forever once Linux starts. So airboot boots the guest's own
//! kernel under KVM for a few seconds and requires the kernel banner on
//! the serial console. The verdict is cached per host boot.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use airboot_core::scenario::AccelChoice;
use airboot_model::{Accel, Arch};
use serde::{Deserialize, Serialize};

use crate::argv::{default_cpu, machine};
use crate::process::{GroupGuard, harden};

/// The chosen accelerator and why.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AccelDecision {
    pub accel: Accel,
    pub reason: String,
}

impl AccelDecision {
    pub fn tcg(reason: impl Into<String>) -> Self {
        AccelDecision { accel: Accel::Tcg, reason: reason.into() }
    }
    pub fn kvm(reason: impl Into<String>) -> Self {
        AccelDecision { accel: Accel::Kvm, reason: reason.into() }
    }
}

/// How long a working KVM may take to print the kernel banner.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(8);

/// Decide the accelerator for a guest. `probe_kernel` is a kernel of the
/// guest's architecture to boot for the probe; `cache_dir` keeps verdicts
/// per host boot.
pub fn choose(
    choice: AccelChoice,
    forced_by: &str,
    arch: Arch,
    qemu: &Path,
    probe_kernel: Option<&Path>,
    cache_dir: Option<&Path>,
) -> AccelDecision {
    match choice {
        AccelChoice::Tcg => return AccelDecision::tcg(format!("TCG forced by {forced_by}")),
        AccelChoice::Kvm => {
            return AccelDecision::kvm(format!("KVM forced by {forced_by} (not probed)"));
        }
        AccelChoice::Auto => {}
    }
    if Arch::host() != Some(arch) {
        return AccelDecision::tcg(format!(
            "host is {}, guest is {arch}: KVM cannot run another architecture",
            std::env::consts::ARCH
        ));
    }
    let kvm = Path::new("/dev/kvm");
    if !kvm.exists() {
        return AccelDecision::tcg(
            "/dev/kvm does not exist (no hardware virtualisation here, or the kvm module is not loaded)",
        );
    }
    if let Err(e) = std::fs::OpenOptions::new().read(true).write(true).open(kvm) {
        return AccelDecision::tcg(format!(
            "/dev/kvm cannot be opened ({e}); add this user to the `kvm` group to use it"
        ));
    }
    let key = cache_key(qemu);
    let cache_file = cache_dir.map(|d| d.join(format!("accel-{arch}.json")));
    if let (Some(f), Some(key)) = (&cache_file, &key)
        && let Ok(text) = std::fs::read_to_string(f)
        && let Ok(c) = serde_json::from_str::<Cached>(&text)
        && &c.key == key
    {
        let mut d = c.decision;
        d.reason = format!("{} (probed earlier this host boot)", d.reason);
        return d;
    }
    let Some(kernel) = probe_kernel else {
        return AccelDecision::tcg(
            "/dev/kvm is present but there is no kernel to probe it with (direct-boot kernel or built fixture); using TCG. Force KVM with --accel kvm",
        );
    };
    let decision = probe(arch, qemu, kernel, PROBE_TIMEOUT);
    if let (Some(f), Some(key)) = (&cache_file, key) {
        let _ = std::fs::create_dir_all(f.parent().unwrap_or(Path::new(".")));
        let c = Cached { key, decision: decision.clone() };
        let _ = std::fs::write(f, serde_json::to_string_pretty(&c).unwrap_or_default());
    }
    decision
}

#[derive(Serialize, Deserialize)]
struct Cached {
    key: String,
    decision: AccelDecision,
}

/// Valid for one host boot and one QEMU binary.
fn cache_key(qemu: &Path) -> Option<String> {
    let boot = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").ok()?;
    let m = std::fs::metadata(qemu).ok()?;
    let mtime = m.modified().ok()?.duration_since(std::time::UNIX_EPOCH).ok()?.as_secs();
    Some(format!("{} {} {} {}", boot.trim(), qemu.display(), m.len(), mtime))
}

/// Boot `kernel` under KVM and wait for "Linux version" on the console.
pub fn probe(arch: Arch, qemu: &Path, kernel: &Path, timeout: Duration) -> AccelDecision {
    let console = match arch {
        Arch::X86_64 => "console=ttyS0 earlyprintk=serial,ttyS0,115200",
        Arch::Aarch64 => "console=ttyAMA0 earlycon",
    };
    let mut cmd = Command::new(qemu);
    cmd.args(["-nodefaults", "-no-user-config", "-display", "none", "-no-reboot"])
        .args(["-machine", machine(arch), "-accel", "kvm", "-cpu", default_cpu(arch, Accel::Kvm)])
        .args(["-m", "256", "-serial", "stdio", "-kernel"])
        .arg(kernel)
        .args(["-append", &format!("{console} panic=-1")])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    harden(&mut cmd);
    let start = Instant::now();
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            return AccelDecision::tcg(format!("could not start {} for the KVM probe: {e}", qemu.display()));
        }
    };
    let _guard = GroupGuard::new(child.id(), "kvm probe");
    let (tx, rx) = mpsc::channel::<Result<(), String>>();
    let out = child.stdout.take();
    let tx2 = tx.clone();
    std::thread::spawn(move || {
        if let Some(out) = out {
            for line in BufReader::new(out).split(b'\n').map_while(Result::ok) {
                if String::from_utf8_lossy(&line).contains("Linux version") {
                    let _ = tx2.send(Ok(()));
                    return;
                }
            }
        }
    });
    let err = child.stderr.take();
    std::thread::spawn(move || {
        let mut text = String::new();
        if let Some(err) = err {
            for line in BufReader::new(err).lines().map_while(Result::ok) {
                text.push_str(&line);
                text.push('\n');
            }
        }
        // stderr closes when QEMU exits: report its last words.
        let _ = tx.send(Err(text));
    });
    match rx.recv_timeout(timeout) {
        Ok(Ok(())) => AccelDecision::kvm(format!(
            "/dev/kvm works: a probe boot printed the kernel banner in {:.2}s",
            start.elapsed().as_secs_f64()
        )),
        Ok(Err(stderr)) => {
            let last = stderr.lines().rfind(|l| !l.contains("warning")).unwrap_or("no message").to_string();
            AccelDecision::tcg(format!("/dev/kvm is present but QEMU failed under KVM ({last}); using TCG"))
        }
        Err(_) => AccelDecision::tcg(format!(
            "/dev/kvm is present but a probe boot under KVM printed no kernel banner in {}s (nested virtualisation that does not run guests?); using TCG with scaled timeouts",
            timeout.as_secs()
        )),
    }
}

/// Path of the QEMU system emulator for an architecture, or an error that
/// names the package.
pub fn qemu_binary(arch: Arch) -> Result<PathBuf, crate::process::RunError> {
    crate::process::require(airboot_core::platform::qemu_system(arch))
}
