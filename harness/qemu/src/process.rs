//! Child processes that never outlive the harness.
//!
//! Every helper (QEMU, dockerd, mmdebstrap, …) is started
//! - in a process group of its own, so that one signal reaches it and all
//!   of its children, and a Ctrl-C at the terminal reaches only airboot,
//!   which then cleans up in order and writes its report;
//! - with `PR_SET_PDEATHSIG = SIGKILL`, so that it dies even if airboot is
//!   killed outright (SIGKILL, a test runner's timeout);
//! - behind a [`GroupGuard`] that kills the whole group when dropped: on
//!   return, on error and on panic.
//!
//! PDEATHSIG fires when the *thread* that spawned the child exits, so
//! children are spawned only from the main thread (airboot runs its async
//! parts on a current-thread runtime).

use std::io;
use std::process::{Child, Command, ExitStatus};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use wait_timeout::ChildExt;

/// Prepare a std command: own process group, killed with its parent.
pub fn harden(cmd: &mut Command) -> &mut Command {
    use std::os::unix::process::CommandExt;
    cmd.process_group(0);
    #[allow(unsafe_code)]
    // SAFETY: prctl is async-signal-safe and touches no memory of the parent.
    unsafe {
        cmd.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong, 0, 0, 0) != 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
    cmd
}

/// Prepare a tokio command the same way.
pub fn harden_tokio(cmd: &mut tokio::process::Command) -> &mut tokio::process::Command {
    cmd.process_group(0);
    #[allow(unsafe_code)]
    // SAFETY: as above.
    unsafe {
        cmd.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong, 0, 0, 0) != 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
    cmd.kill_on_drop(true);
    cmd
}

/// Send a signal to a whole process group. Errors (group already gone)
/// are ignored: the goal is that nothing is left.
pub fn signal_group(pgid: u32, sig: i32) {
    if pgid == 0 || pgid > i32::MAX as u32 {
        return;
    }
    #[allow(unsafe_code)]
    // SAFETY: kill(2) with a negative pid signals a process group.
    unsafe {
        libc::kill(-(pgid as i32), sig);
    }
}

/// Whether any process of the group is still alive.
pub fn group_alive(pgid: u32) -> bool {
    if pgid == 0 || pgid > i32::MAX as u32 {
        return false;
    }
    #[allow(unsafe_code)]
    // SAFETY: signal 0 only checks for existence.
    let r = unsafe { libc::kill(-(pgid as i32), 0) };
    r == 0
}

/// Kills a process group when dropped.
#[derive(Debug)]
pub struct GroupGuard {
    pgid: u32,
    name: String,
    armed: bool,
}

impl GroupGuard {
    pub fn new(pgid: u32, name: impl Into<String>) -> Self {
        GroupGuard { pgid, name: name.into(), armed: true }
    }
    pub fn pgid(&self) -> u32 {
        self.pgid
    }
    pub fn name(&self) -> &str {
        &self.name
    }
    /// Kill the group now (SIGKILL) and wait briefly until it is gone.
    pub fn kill(&mut self) {
        if self.armed {
            signal_group(self.pgid, libc::SIGKILL);
            let until = Instant::now() + Duration::from_secs(2);
            while group_alive(self.pgid) && Instant::now() < until {
                std::thread::sleep(Duration::from_millis(10));
            }
            self.armed = false;
        }
    }
}

impl Drop for GroupGuard {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Set by SIGINT, SIGTERM or SIGHUP once [`install_interrupt_handler`] ran.
pub fn interrupted() -> bool {
    INTERRUPT.get().is_some_and(|f| f.load(Ordering::Relaxed))
}

/// The signal that interrupted us, for messages.
pub fn interrupt_reason() -> &'static str {
    "interrupted (SIGINT/SIGTERM/SIGHUP)"
}

static INTERRUPT: OnceLock<Arc<AtomicBool>> = OnceLock::new();

/// Route SIGINT/SIGTERM/SIGHUP to a flag that long operations poll, so
/// they stop their helpers, write their report and exit. A second signal
/// while the first is being handled terminates at once (the helpers still
/// die through PDEATHSIG).
pub fn install_interrupt_handler() -> io::Result<()> {
    let flag = INTERRUPT.get_or_init(|| Arc::new(AtomicBool::new(false))).clone();
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM, signal_hook::consts::SIGHUP] {
        signal_hook::flag::register_conditional_shutdown(sig, 130, flag.clone())?;
        signal_hook::flag::register(sig, flag.clone())?;
    }
    Ok(())
}

/// For commands that only print (list, check, path): a closed pipe on
/// stdout (`airboot images list | head`) ends the process quietly, as for
/// any Unix tool, instead of a panic with a backtrace. Not for commands
/// that boot or write: they must stop their helpers and write their report.
pub fn default_broken_pipe() {
    // SAFETY: restoring the default disposition of one signal, before any
    // thread that could be writing has started.
    #[allow(unsafe_code)]
    let _previous = unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
}

/// Why a supervised command did not succeed.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("{program} is not installed (install the Debian package `{package}`)")]
    Missing { program: String, package: String },
    #[error("could not start {program}: {source}")]
    Spawn {
        program: String,
        #[source]
        source: io::Error,
    },
    #[error("{program} failed ({status})")]
    Failed { program: String, status: ExitStatus },
    #[error("{program} did not finish within {secs}s and was killed")]
    Timeout { program: String, secs: u64 },
    #[error("{program} stopped: airboot was interrupted")]
    Interrupted { program: String },
}

/// Run a command to completion in its own group, polling for interrupts
/// and an optional timeout; the whole group is killed on any early exit.
pub fn run_supervised(cmd: &mut Command, timeout: Option<Duration>) -> Result<ExitStatus, RunError> {
    let program = cmd.get_program().to_string_lossy().into_owned();
    harden(cmd);
    let mut child: Child = cmd.spawn().map_err(|source| {
        if source.kind() == io::ErrorKind::NotFound {
            RunError::Missing { package: package_for(&program).to_string(), program: program.clone() }
        } else {
            RunError::Spawn { program: program.clone(), source }
        }
    })?;
    let mut guard = GroupGuard::new(child.id(), program.clone());
    let start = Instant::now();
    loop {
        match child.wait_timeout(Duration::from_millis(100)) {
            Ok(Some(status)) => {
                // The leader exited; anything it left behind in its group goes too.
                guard.kill();
                return if status.success() { Ok(status) } else { Err(RunError::Failed { program, status }) };
            }
            Ok(None) => {}
            Err(source) => return Err(RunError::Spawn { program, source }),
        }
        if interrupted() {
            stop_gently(&mut child, &mut guard);
            return Err(RunError::Interrupted { program });
        }
        if let Some(t) = timeout
            && start.elapsed() > t
        {
            stop_gently(&mut child, &mut guard);
            return Err(RunError::Timeout { program, secs: t.as_secs() });
        }
    }
}

/// SIGTERM the group and give its leader a few seconds to clean up (a
/// killed mmdebstrap leaves /proc and /sys mounted in its target), then
/// SIGKILL whatever is left.
fn stop_gently(child: &mut Child, guard: &mut GroupGuard) {
    signal_group(guard.pgid(), libc::SIGTERM);
    let _ = child.wait_timeout(Duration::from_secs(15));
    guard.kill();
    let _ = child.wait();
}

/// The Debian package that provides a program airboot needs.
pub fn package_for(program: &str) -> &'static str {
    let base = program.rsplit('/').next().unwrap_or(program);
    match base {
        "qemu-system-x86_64" => "qemu-system-x86",
        "qemu-system-aarch64" => "qemu-system-arm",
        "qemu-img" => "qemu-utils",
        "mmdebstrap" => "mmdebstrap",
        "mkfs.ext4" | "debugfs" | "e2fsck" => "e2fsprogs",
        "dockerd" | "docker" => "docker.io",
        "depmod" | "modprobe" => "kmod",
        "vhost-device-vsock" => "(cargo) vhost-device-vsock",
        "mcopy" | "mmd" => "mtools",
        "sfdisk" => "fdisk",
        _ => "the package providing it",
    }
}

/// Find a program in PATH (plus the sbin directories a non-root PATH may lack).
pub fn which(program: &str) -> Option<std::path::PathBuf> {
    if program.contains('/') {
        let p = std::path::PathBuf::from(program);
        return p.is_file().then_some(p);
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    let extra = ["/usr/local/sbin", "/usr/sbin", "/sbin"];
    std::env::split_paths(&path).chain(extra.iter().map(std::path::PathBuf::from)).map(|d| d.join(program)).find(|p| {
        use std::os::unix::fs::PermissionsExt;
        p.metadata().map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0).unwrap_or(false)
    })
}

/// Like [`which`], but an error naming the package to install.
pub fn require(program: &str) -> Result<std::path::PathBuf, RunError> {
    which(program)
        .ok_or_else(|| RunError::Missing { program: program.to_string(), package: package_for(program).to_string() })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_command_names_itself() {
        let e = run_supervised(Command::new("false").arg("x"), None).unwrap_err();
        assert!(matches!(e, RunError::Failed { .. }), "{e}");
        assert!(e.to_string().starts_with("false failed"));
    }

    #[test]
    fn a_missing_program_names_its_package() {
        let e = run_supervised(&mut Command::new("mkfs.ext4-not-here"), None).unwrap_err();
        assert!(matches!(e, RunError::Missing { .. }));
        let e = require("qemu-system-aarch64-nope").unwrap_err();
        assert!(e.to_string().contains("install"), "{e}");
        assert_eq!(package_for("/usr/bin/qemu-system-x86_64"), "qemu-system-x86");
    }

    #[test]
    fn timeout_kills_the_whole_group() {
        // The shell starts a grandchild; both must be gone after the timeout.
        let dir = tempfile::tempdir().unwrap();
        let pidfile = dir.path().join("pid");
        let script = format!("sleep 30 & echo $! > {}; wait", pidfile.display());
        let e =
            run_supervised(Command::new("sh").arg("-c").arg(&script), Some(Duration::from_millis(500))).unwrap_err();
        assert!(matches!(e, RunError::Timeout { .. }), "{e}");
        let pid: i32 = std::fs::read_to_string(&pidfile).unwrap().trim().parse().unwrap();
        #[allow(unsafe_code)]
        // SAFETY: signal 0 only checks for existence.
        let alive = unsafe { libc::kill(pid, 0) } == 0;
        // A zombie still answers kill(0) until reaped by init; check /proc state.
        let state = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        assert!(!alive || state.contains(") Z"), "grandchild {pid} survived: {state}");
    }

    #[test]
    fn guard_kills_on_drop() {
        let mut cmd = Command::new("sleep");
        cmd.arg("30");
        harden(&mut cmd);
        let mut child = cmd.spawn().unwrap();
        let pgid = child.id();
        {
            let _g = GroupGuard::new(pgid, "sleep");
        }
        let status = child.wait().unwrap();
        assert!(!status.success());
        assert!(!group_alive(pgid));
    }
}

/// The lock file in a report folder while a run writes there.
pub const DIR_LOCK: &str = ".airboot.lock";

/// One run's claim on its report folder: an exclusive `flock` on
/// `<dir>/.airboot.lock`, which holds the run's pid. The kernel drops the
/// claim when the process ends, however it ends; the file goes when the
/// claim is dropped.
#[derive(Debug)]
pub struct DirLock {
    _file: std::fs::File,
    path: std::path::PathBuf,
}

impl Drop for DirLock {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Claim `dir` (which must exist) for this run, or say which run has it.
pub fn lock_dir(dir: &std::path::Path) -> Result<DirLock, String> {
    use std::io::{Read, Seek, Write};
    let path = dir.join(DIR_LOCK);
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(|e| format!("cannot write in the report folder {}: {e}", dir.display()))?;
    // A filesystem without locks (some network ones) cannot be claimed:
    // the run goes on unclaimed.
    if let Err(std::fs::TryLockError::WouldBlock) = file.try_lock() {
        let mut pid = String::new();
        let _ = file.read_to_string(&mut pid);
        let pid = pid.trim();
        let pid = if pid.is_empty() { String::new() } else { format!(" (pid {pid})") };
        return Err(format!(
            "the report folder {} is being written by another airboot run{pid}: give each run its own --report-dir",
            dir.display(),
        ));
    }
    let _ = file.set_len(0);
    let _ = file.rewind();
    let _ = write!(file, "{}", std::process::id());
    Ok(DirLock { _file: file, path })
}

#[cfg(test)]
mod lock_tests {
    use super::*;

    #[test]
    fn a_report_folder_is_claimed_by_one_run_at_a_time() {
        let d = tempfile::tempdir().unwrap();
        let held = lock_dir(d.path()).unwrap();
        assert_eq!(std::fs::read_to_string(d.path().join(DIR_LOCK)).unwrap(), std::process::id().to_string());
        // flock claims belong to open files: a second open is refused.
        let e = lock_dir(d.path()).unwrap_err();
        assert!(e.contains("another airboot run") && e.contains(&std::process::id().to_string()), "{e}");
        drop(held);
        assert!(!d.path().join(DIR_LOCK).exists(), "the lock file goes with the claim");
        let again = lock_dir(d.path()).unwrap();
        drop(again);
        let gone = d.path().join("nope");
        assert!(lock_dir(&gone).unwrap_err().contains("cannot write in the report folder"));
    }
}
