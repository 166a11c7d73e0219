//! Shared plumbing of the fixture build: errors, the build log, stage
//! locks, temporary folders committed by rename (a cache entry is either
//! whole or absent), and small file helpers.

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, BufReader, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use airboot_model::Arch;
use airboot_qemu::process::{RunError, run_supervised};

use crate::{SUITE, mirrors};

#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("unknown fixture {0:?}: `airboot images list` shows the fixtures that can be built")]
    Unknown(String),
    #[error(
        "building fixtures needs root (mmdebstrap --mode=root, a private dockerd, files owned by other users): run `sudo airboot images build {0}`"
    )]
    NotRoot(String),
    #[error("{0}")]
    Tool(#[from] RunError),
    #[error("{step}: {message}{}", log.as_ref().map(|l| format!("\n  full log: {}", l.display())).unwrap_or_default())]
    Step { step: String, message: String, log: Option<PathBuf> },
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: io::Error,
    },
}

pub(crate) fn io_err(context: impl Into<String>) -> impl FnOnce(io::Error) -> BuildError {
    let context = context.into();
    move |source| BuildError::Io { context, source }
}

/// Progress messages go here (the CLI prints them).
pub type Progress<'a> = &'a mut dyn FnMut(&str);

pub(crate) struct Ctx<'a> {
    pub(crate) root: PathBuf,
    pub(crate) log: PathBuf,
    pub(crate) progress: Progress<'a>,
    pub(crate) step: usize,
    pub(crate) steps: usize,
    /// The tools' temporary folder (their TMPDIR): named for this process,
    /// so what a killed build's tools left (mmdebstrap's own temporary
    /// files) goes with the next sweep.
    pub(crate) scratch: Option<tempfile::TempDir>,
}

impl Ctx<'_> {
    pub(crate) fn say(&mut self, msg: &str) {
        self.step += 1;
        let line = format!("[{}/{}] {msg}", self.step, self.steps);
        (self.progress)(&line);
        let _ = self.append_log(&format!("\n=== {line}\n"));
    }

    pub(crate) fn append_log(&self, s: &str) -> io::Result<()> {
        OpenOptions::new().create(true).append(true).open(&self.log)?.write_all(s.as_bytes())
    }

    /// Run a command with its output in the build log; on failure the
    /// error carries the log's last lines.
    pub(crate) fn run(&self, step: &str, cmd: &mut Command, timeout: Duration) -> Result<(), BuildError> {
        let _ = self.append_log(&format!("$ {cmd:?}\n"));
        let log =
            OpenOptions::new().create(true).append(true).open(&self.log).map_err(io_err("opening the build log"))?;
        let log2 = log.try_clone().map_err(io_err("opening the build log"))?;
        cmd.stdin(Stdio::null()).stdout(log).stderr(log2);
        if let Some(s) = &self.scratch {
            cmd.env("TMPDIR", s.path());
        }
        match run_supervised(cmd, Some(timeout)) {
            Ok(_) => Ok(()),
            Err(RunError::Missing { program, package }) => {
                Err(BuildError::Tool(RunError::Missing { program, package }))
            }
            Err(e) => Err(BuildError::Step {
                step: step.to_string(),
                message: format!("{e}\n{}", tail(&self.log, 15)),
                log: Some(self.log.clone()),
            }),
        }
    }
}

pub(crate) fn tail(path: &Path, n: usize) -> String {
    let Ok(f) = File::open(path) else {
        return String::new();
    };
    let lines: Vec<String> = BufReader::new(f).lines().map_while(Result::ok).collect();
    lines[lines.len().saturating_sub(n)..].iter().map(|l| format!("  | {l}")).collect::<Vec<_>>().join("\n")
}

/// Holds a stage's lock file.
pub(crate) struct Lock(File);

pub(crate) fn lock(root: &Path, name: &str) -> Result<Lock, BuildError> {
    let dir = root.join("locks");
    fs::create_dir_all(&dir).map_err(io_err(format!("creating {}", dir.display())))?;
    let f = File::create(dir.join(format!("{name}.lock"))).map_err(io_err("creating a lock file"))?;
    f.lock().map_err(io_err("locking the build cache"))?;
    Ok(Lock(f))
}

impl Drop for Lock {
    fn drop(&mut self) {
        let _ = self.0.unlock();
    }
}

/// The pid in a build folder's name, `<final>.tmp-<pid>`.
fn build_owner(name: &str) -> Option<u32> {
    let (_, pid) = name.rsplit_once(".tmp-")?;
    if pid.is_empty() || !pid.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    pid.parse().ok()
}

/// Remove the `<final>.tmp-<pid>` folders in each folder of the cache
/// (`root/<kind>/`) left by builds whose process is gone (killed
/// outright), unless something is still mounted under them: what was
/// removed, and what was left for its mounts.
pub fn sweep_stale_builds(root: &Path) -> airboot_qemu::scratch::Swept {
    let mut swept = airboot_qemu::scratch::Swept::default();
    let Ok(kinds) = fs::read_dir(root) else { return swept };
    for kind in kinds.flatten().filter(|k| k.file_type().is_ok_and(|t| t.is_dir())) {
        let Ok(entries) = fs::read_dir(kind.path()) else { continue };
        for e in entries.flatten() {
            let Some(pid) = build_owner(&e.file_name().to_string_lossy()) else { continue };
            swept.sweep(e.path(), pid);
        }
    }
    swept
}

/// A temporary build folder, removed unless it was committed.
pub(crate) struct TmpDir {
    pub(crate) path: PathBuf,
    keep: bool,
}

impl TmpDir {
    pub(crate) fn new(final_path: &Path) -> Result<TmpDir, BuildError> {
        let path = PathBuf::from(format!("{}.tmp-{}", final_path.display(), std::process::id()));
        if path.exists() {
            fs::remove_dir_all(&path).map_err(io_err(format!("removing {}", path.display())))?;
        }
        fs::create_dir_all(&path).map_err(io_err(format!("creating {}", path.display())))?;
        Ok(TmpDir { path, keep: false })
    }
    pub(crate) fn commit(mut self, final_path: &Path, drop_inside: &[&str]) -> Result<(), BuildError> {
        for d in drop_inside {
            let p = self.path.join(d);
            if p.exists() {
                fs::remove_dir_all(&p).map_err(io_err(format!("removing {}", p.display())))?;
            }
        }
        if final_path.exists() {
            fs::remove_dir_all(final_path).map_err(io_err(format!("replacing {}", final_path.display())))?;
        }
        fs::rename(&self.path, final_path).map_err(io_err(format!("moving the build to {}", final_path.display())))?;
        self.keep = true;
        Ok(())
    }
}

impl Drop for TmpDir {
    fn drop(&mut self) {
        if !self.keep && std::env::var_os("AIRBOOT_KEEP_FAILED_BUILD").is_none() {
            // Never recurse into a filesystem an interrupted tool left
            // mounted inside (mmdebstrap mounts proc, sys and dev).
            if unmount_below(&self.path) {
                let _ = fs::remove_dir_all(&self.path);
            }
        }
    }
}

/// Detach every mount at or below `dir` (deepest first). False when one
/// stays mounted: then nothing below `dir` may be deleted.
pub(crate) fn unmount_below(dir: &Path) -> bool {
    let Ok(mounts) = fs::read_to_string("/proc/self/mounts") else { return true };
    let mut points: Vec<PathBuf> = mounts
        .lines()
        .filter_map(|l| l.split_whitespace().nth(1))
        // /proc/self/mounts escapes spaces and the like as octal.
        .map(|p| PathBuf::from(p.replace("\\040", " ")))
        .filter(|p| p.starts_with(dir))
        .collect();
    points.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    for p in &points {
        let _ = Command::new("umount").arg("-l").arg(p).stdin(Stdio::null()).status();
    }
    let left = fs::read_to_string("/proc/self/mounts").unwrap_or_default();
    !left.lines().filter_map(|l| l.split_whitespace().nth(1)).any(|p| Path::new(p).starts_with(dir))
}

pub(crate) fn is_root() -> bool {
    #[allow(unsafe_code)]
    // SAFETY: geteuid has no preconditions.
    let uid = unsafe { libc::geteuid() };
    uid == 0
}

/// mmdebstrap, contained: in a PID namespace of its own (when its first
/// process dies, the kernel kills every process in it; and unshare's
/// `--kill-child` kills that one when unshare dies, which dies with
/// airboot), and a private mount namespace (its mounts in the chroot go
/// with it). Killed outright, airboot leaves no mmdebstrap, dpkg or tar
/// behind, and no /dev/pts mounted in a half-built root.
pub(crate) fn mmdebstrap() -> Command {
    let mut cmd = Command::new("unshare");
    cmd.args(["--mount", "--propagation", "private", "--pid", "--fork", "--kill-child", "--", "mmdebstrap"]);
    cmd
}

pub(crate) fn mmdebstrap_sources() -> Vec<String> {
    let (m, s) = mirrors();
    vec![
        format!("deb {m} {SUITE} main"),
        format!("deb {m} {SUITE}-updates main"),
        format!("deb {s} {SUITE}-security main"),
    ]
}

/// Building a foreign-architecture rootfs runs its maintainer scripts
/// through qemu-user: check binfmt is there before starting.
pub(crate) fn check_foreign(arch: Arch) -> Result<(), BuildError> {
    if Arch::host() == Some(arch) {
        return Ok(());
    }
    let name = match arch {
        Arch::Aarch64 => "qemu-aarch64",
        Arch::X86_64 => "qemu-x86_64",
    };
    if Path::new("/proc/sys/fs/binfmt_misc").join(name).exists() {
        return Ok(());
    }
    Err(BuildError::Step {
        step: format!("{arch} rootfs"),
        message: format!(
            "building an {arch} rootfs on this {} host needs qemu-user binfmt: install `qemu-user-static binfmt-support` and run `mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc` (scripts/setup.sh does both)",
            std::env::consts::ARCH
        ),
        log: None,
    })
}

pub(crate) fn stage_dir(root: &Path, stage: &str, arch: Arch, key: &str) -> PathBuf {
    root.join(stage).join(format!("{arch}-{key}"))
}

pub(crate) fn read_json<T: serde::de::DeserializeOwned>(p: &Path) -> Result<T, BuildError> {
    let text = fs::read_to_string(p).map_err(io_err(format!("reading {}", p.display())))?;
    serde_json::from_str(&text).map_err(|e| BuildError::Step {
        step: "reading the cache".into(),
        message: format!("{}: {e} (delete the folder to rebuild it)", p.display()),
        log: None,
    })
}

pub(crate) fn write(p: &Path, data: &[u8], mode: u32) -> Result<(), BuildError> {
    if let Some(d) = p.parent() {
        fs::create_dir_all(d).map_err(io_err(format!("creating {}", d.display())))?;
    }
    // Replace rather than write through an existing symlink.
    if fs::symlink_metadata(p).is_ok() {
        fs::remove_file(p).map_err(io_err(format!("replacing {}", p.display())))?;
    }
    fs::write(p, data).map_err(io_err(format!("writing {}", p.display())))?;
    fs::set_permissions(p, fs::Permissions::from_mode(mode)).map_err(io_err(format!("chmod {}", p.display())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sweep_removes_the_build_folders_of_builds_that_are_gone() {
        assert_eq!(build_owner("debian-x86_64-0fb1e73ace379911.tmp-19847"), Some(19847));
        assert_eq!(build_owner("debian-x86_64-0fb1e73ace379911"), None);
        assert_eq!(build_owner("a.tmp-12x"), None);
        let root = tempfile::tempdir().unwrap();
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let dead = child.id();
        child.wait().unwrap();
        let mk = |p: &str| {
            let p = root.path().join(p);
            fs::create_dir_all(p.join("root/etc")).unwrap();
            p
        };
        let stale = mk(&format!("fixtures/debian-x-1234.tmp-{dead}"));
        let live = mk("fixtures/debian-x-1234.tmp-1");
        let mine = mk(&format!("rootfs-docker/abc.tmp-{}", std::process::id()));
        let done = mk("fixtures/debian-x-1234");
        let swept = sweep_stale_builds(root.path());
        assert_eq!(swept.removed, std::slice::from_ref(&stale));
        assert!(!stale.exists() && live.exists() && mine.exists() && done.exists());
    }
}
