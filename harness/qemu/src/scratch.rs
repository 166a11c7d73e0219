//! Temporary folders that a killed run does not leave for ever.
//!
//! Every temporary folder airboot makes is named `airboot-<pid>-<kind>-…`
//! ([`temp_dir`]). A run that ends, however it ends short of SIGKILL,
//! removes its own. One killed outright cannot; the next airboot command
//! that boots, cuts, repros or builds removes those whose process is gone
//! ([`sweep_stale`]), unless something is still mounted under them.

use std::io;
use std::path::{Path, PathBuf};

/// The prefix of this process's temporary folders of `kind`.
pub fn prefix(kind: &str) -> String {
    format!("airboot-{}-{kind}-", std::process::id())
}

/// A temporary folder of `kind` in the system's temporary folder.
pub fn temp_dir(kind: &str) -> io::Result<tempfile::TempDir> {
    tempfile::Builder::new().prefix(&prefix(kind)).tempdir()
}

/// A temporary folder of `kind` in `dir`.
pub fn temp_dir_in(kind: &str, dir: &Path) -> io::Result<tempfile::TempDir> {
    tempfile::Builder::new().prefix(&prefix(kind)).tempdir_in(dir)
}

/// The pid a temporary folder's name says made it: `airboot-<pid>-…`.
pub fn owner_pid(name: &str) -> Option<u32> {
    let rest = name.strip_prefix("airboot-")?;
    let (pid, _) = rest.split_once('-')?;
    if pid.is_empty() || !pid.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    pid.parse().ok()
}

/// Whether process `pid` is gone (a reused pid counts as alive: the
/// folder waits for a later sweep).
pub fn process_gone(pid: u32) -> bool {
    !Path::new("/proc").join(pid.to_string()).exists()
}

/// The mount points at or under `path`, from `/proc/self/mountinfo`
/// (octal escapes decoded).
pub fn mounts_under(path: &Path) -> Vec<PathBuf> {
    let text = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    airboot_proto::mounts::parse(&text)
        .into_iter()
        .map(|m| PathBuf::from(m.point))
        .filter(|m| m.starts_with(path))
        .collect()
}

/// What a sweep did.
#[derive(Debug, Default, PartialEq)]
pub struct Swept {
    pub removed: Vec<PathBuf>,
    /// Left because something is mounted under them (never deleted
    /// through a mount).
    pub mounted: Vec<PathBuf>,
}

impl Swept {
    /// `path`, left by process `pid`: removed if that process is gone
    /// (not this one, not a live one), kept and noted if something is
    /// mounted under it.
    pub fn sweep(&mut self, path: PathBuf, pid: u32) {
        if pid == std::process::id() || !process_gone(pid) {
            return;
        }
        if !mounts_under(&path).is_empty() {
            self.mounted.push(path);
            return;
        }
        let dir = std::fs::symlink_metadata(&path).is_ok_and(|m| m.is_dir());
        let gone = if dir { std::fs::remove_dir_all(&path) } else { std::fs::remove_file(&path) };
        if gone.is_ok() {
            self.removed.push(path);
        }
    }
}

/// Remove the temporary folders in `dirs` whose airboot process is gone.
pub fn sweep_stale(dirs: &[PathBuf]) -> Swept {
    let mut swept = Swept::default();
    let mut seen = Vec::new();
    for dir in dirs {
        let Ok(canon) = dir.canonicalize() else { continue };
        if seen.contains(&canon) {
            continue;
        }
        seen.push(canon.clone());
        let Ok(entries) = std::fs::read_dir(&canon) else { continue };
        for e in entries.flatten() {
            let name = e.file_name();
            let Some(pid) = owner_pid(&name.to_string_lossy()) else { continue };
            swept.sweep(e.path(), pid);
        }
    }
    swept
}

/// Where airboot makes temporary folders: the system's temporary folder,
/// /tmp (short socket paths) and /dev/shm (an exploration's copies).
pub fn scratch_roots() -> Vec<PathBuf> {
    vec![std::env::temp_dir(), PathBuf::from("/tmp"), PathBuf::from("/dev/shm")]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_carry_their_owner() {
        assert!(prefix("cut").starts_with(&format!("airboot-{}-cut-", std::process::id())));
        assert_eq!(owner_pid("airboot-1234-cut-a8Xk"), Some(1234));
        assert_eq!(owner_pid("airboot-1234-"), Some(1234));
        for other in
            ["airboot-cut-1234", "airboot--x", "airboot-12a-x", "airboot-1234", "xairboot-1-y", "airboot-99999999999-x"]
        {
            assert_eq!(owner_pid(other), None, "{other}");
        }
    }

    /// A folder of a pid that is gone goes; one of a live process, one of
    /// this process, one not airboot's and one with a mount stay.
    #[test]
    fn a_sweep_removes_only_what_a_gone_process_left() {
        let root = tempfile::tempdir().unwrap();
        // A pid that is surely gone: a child that has exited and been reaped.
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let dead = child.id();
        child.wait().unwrap();
        let make = |name: &str| {
            let p = root.path().join(name);
            std::fs::create_dir_all(p.join("inside")).unwrap();
            std::fs::write(p.join("inside/f"), b"x").unwrap();
            p
        };
        let stale = make(&format!("airboot-{dead}-cut-x"));
        let stale_file = root.path().join(format!("airboot-{dead}-nbd.sock"));
        std::fs::write(&stale_file, b"").unwrap();
        let live = make("airboot-1-cut-x"); // init never goes
        let mine = make(&format!("airboot-{}-cut-x", std::process::id()));
        let other = make(&format!("somebody-{dead}-x"));
        let swept = sweep_stale(&[root.path().to_path_buf(), root.path().to_path_buf()]);
        assert_eq!(swept.removed.len(), 2, "{swept:?}");
        assert!(!stale.exists() && !stale_file.exists());
        assert!(live.exists() && mine.exists() && other.exists());
        assert!(sweep_stale(&[root.path().join("missing")]).removed.is_empty());
    }
}
