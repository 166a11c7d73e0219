//! Crash states judged in place, for an exploration: one raw working copy
//! of the root filesystem is moved forward along the write log, and each
//! state is the copy plus a few extra writes. Nothing is copied per state:
//! the extra writes are applied with the bytes under them kept, e2fsck
//! replays the journal (and repairs, if it must) with an undo file, the
//! caller reads the result, then `e2undo` and the kept bytes put the copy
//! back exactly as it was.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use airboot_core::cut::FsFindings;
use airboot_core::cut::writelog::{EntryKind, Piece, WriteLog};

use crate::crash::{CrashError, clean_after_replay, e2fsck, extract, repaired};
use crate::process::require;

/// Where working copies go: RAM (`/dev/shm`) when it has room for
/// `bytes` with a margin, else `fallback` (a folder on disk).
pub fn scratch_dir(bytes: u64, fallback: &Path) -> PathBuf {
    let shm = Path::new("/dev/shm");
    match free_bytes(shm) {
        Some(free) if free / 2 > bytes => shm.to_path_buf(),
        _ => fallback.to_path_buf(),
    }
}

/// Free bytes of the filesystem holding `path`.
pub fn free_bytes(path: &Path) -> Option<u64> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).ok()?;
    // SAFETY: statvfs is plain old data (all-zero is valid); statvfs(3)
    // fills the struct we own from a NUL-terminated path.
    #[allow(unsafe_code)]
    unsafe {
        let mut st: libc::statvfs = std::mem::zeroed();
        if libc::statvfs(c.as_ptr(), &mut st) != 0 {
            return None;
        }
        Some(st.f_bavail as u64 * st.f_frsize as u64)
    }
}

/// A working copy of the filesystem at bytes `region` of a disk.
pub struct Workspace {
    path: PathBuf,
    file: File,
    region: (u64, u64),
    log: File,
    log_path: PathBuf,
    /// Log entries applied so far.
    applied: usize,
    /// e2fsck runs (journal replay, check, repair).
    pub fsck_runs: u64,
    spoilt: Option<String>,
}

/// The bytes a state's extra writes covered, kept to put them back.
struct Kept {
    at: u64,
    bytes: Vec<u8>,
}

impl Workspace {
    /// Copy bytes `region` of `disk` (any format QEMU reads) to a raw file
    /// in `dir`, named `name`. `log` is the write log the states come from.
    pub fn create(disk: &Path, region: (u64, u64), log: &Path, dir: &Path, name: &str) -> Result<Self, CrashError> {
        let path = dir.join(format!("{name}.raw"));
        extract(disk, region.0, region.1, &path)?;
        let file = OpenOptions::new().read(true).write(true).open(&path).map_err(|source| CrashError::Io {
            what: format!("cannot open the working copy {}", path.display()),
            source,
        })?;
        let logf = File::open(log).map_err(|source| CrashError::Io {
            what: format!("cannot open the write log {}", log.display()),
            source,
        })?;
        Ok(Workspace {
            path,
            file,
            region,
            log: logf,
            log_path: log.to_path_buf(),
            applied: 0,
            fsck_runs: 0,
            spoilt: None,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn applied(&self) -> usize {
        self.applied
    }

    /// Write the part of `p` that falls in the region; `keep` collects the
    /// bytes it replaces.
    fn write_piece(&self, p: &Piece, keep: Option<&mut Vec<Kept>>) -> Result<(), CrashError> {
        let (start, len) = self.region;
        let from = p.offset.max(start);
        let to = (p.offset + p.len).min(start + len);
        if from >= to {
            return Ok(());
        }
        let n = (to - from) as usize;
        let mut data = vec![0u8; n];
        if let Some(at) = p.data_at {
            self.log.read_exact_at(&mut data, at + (from - p.offset)).map_err(|source| CrashError::Io {
                what: format!("reading the write log {}", self.log_path.display()),
                source,
            })?;
        }
        let io = |source| CrashError::Io { what: format!("writing the working copy {}", self.path.display()), source };
        if let Some(keep) = keep {
            let mut old = vec![0u8; n];
            self.file.read_exact_at(&mut old, from - start).map_err(io)?;
            keep.push(Kept { at: from - start, bytes: old });
        }
        self.file.write_all_at(&data, from - start).map_err(io)
    }

    /// Apply the log's entries `applied..to` (writes and discards): the
    /// copy then holds the disk as it was when entry `to` started. Only
    /// forward: a state before `applied` needs a new workspace.
    pub fn advance(&mut self, log: &WriteLog, to: usize) -> Result<(), CrashError> {
        if to < self.applied {
            return Err(CrashError::Tool(format!(
                "the working copy is at entry {}, past {to}: it only moves forward",
                self.applied
            )));
        }
        for e in &log.entries[self.applied..to.min(log.entries.len())] {
            if e.kind == EntryKind::Flush {
                continue;
            }
            let p = Piece { offset: e.offset, len: e.len, data_at: (e.kind == EntryKind::Write).then_some(e.data_at) };
            self.write_piece(&p, None)?;
        }
        self.applied = to.max(self.applied);
        Ok(())
    }

    /// Judge the copy with `extras` written over it: replay the journal and
    /// check it; hand the filesystem to `read` (when it is not clean, a
    /// throwaway copy repaired as a boot-time fsck would), then put the
    /// copy back. When e2undo cannot (e2fsck found no superblock to
    /// record against), the copy is marked spoilt: `spoilt()` says why,
    /// and the caller builds a new one.
    pub fn judge<T>(
        &mut self,
        extras: &[Piece],
        scratch: &Path,
        read: impl FnOnce(&File, FsFindings) -> T,
    ) -> Result<T, CrashError> {
        if let Some(why) = &self.spoilt {
            return Err(CrashError::Tool(format!("the working copy is spoilt: {why}")));
        }
        let mut kept = Vec::new();
        let applied = extras.iter().try_for_each(|p| self.write_piece(p, Some(&mut kept)));
        let undo = scratch.join(format!("{}.e2undo", self.path.file_name().unwrap_or_default().to_string_lossy()));
        let _ = std::fs::remove_file(&undo);
        let result = applied.and_then(|()| self.check(&undo, scratch, read));
        // Back the way it came: the replay's changes, then the bytes under
        // the extra writes.
        if let Err(e) = e2undo(&undo, &self.path) {
            self.spoilt = Some(e.to_string());
        }
        let _ = std::fs::remove_file(&undo);
        for k in kept.iter().rev() {
            if let Err(e) = self.file.write_all_at(&k.bytes, k.at) {
                self.spoilt = Some(format!("restoring {}: {e}", self.path.display()));
            }
        }
        result
    }

    /// Why the copy can no longer be trusted, if it cannot.
    pub fn spoilt(&self) -> Option<&str> {
        self.spoilt.as_deref()
    }

    fn check<T>(
        &mut self,
        undo: &Path,
        scratch: &Path,
        read: impl FnOnce(&File, FsFindings) -> T,
    ) -> Result<T, CrashError> {
        let (replay, _) = e2fsck(&["-E", "journal_only", "-y", "-z"], Some(undo), &self.path)?;
        let (code, text) = e2fsck(&["-f", "-n"], None, &self.path)?;
        self.fsck_runs += 2;
        if code == 0 {
            return Ok(read(&self.file, clean_after_replay(replay)));
        }
        // Damaged: repair a throwaway copy (a repair rewrites too much,
        // and from backup superblocks, for an undo file to be trusted).
        let copy = scratch.join(format!("{}.repair", self.path.file_name().unwrap_or_default().to_string_lossy()));
        let st = Command::new("cp")
            .arg("--sparse=always")
            .arg(&self.path)
            .arg(&copy)
            .status()
            .map_err(|source| CrashError::Io { what: "cannot run cp".into(), source })?;
        if !st.success() {
            let _ = std::fs::remove_file(&copy);
            return Err(CrashError::Tool(format!("could not copy {} to repair it ({st})", self.path.display())));
        }
        let result = (|| {
            let (fixed, _) = e2fsck(&["-f", "-y"], None, &copy)?;
            self.fsck_runs += 1;
            let f = File::open(&copy)
                .map_err(|source| CrashError::Io { what: format!("cannot open {}", copy.display()), source })?;
            Ok(read(&f, repaired(code, &text, fixed)))
        })();
        let _ = std::fs::remove_file(&copy);
        result
    }
}

impl Drop for Workspace {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Roll back what an e2fsck run recorded in `undo` (no file: it changed nothing).
fn e2undo(undo: &Path, fs: &Path) -> Result<(), CrashError> {
    if !undo.exists() {
        return Ok(());
    }
    let bin = require("e2undo").map_err(|e| CrashError::Tool(e.to_string()))?;
    let out = Command::new(bin)
        .arg(undo)
        .arg(fs)
        .stdin(Stdio::null())
        .output()
        .map_err(|source| CrashError::Io { what: "cannot run e2undo".into(), source })?;
    if !out.status.success() {
        return Err(CrashError::Tool(format!(
            "e2undo {} could not put the working copy back: {}",
            undo.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use airboot_core::cut::writelog::{EntryKind::Flush as F, EntryKind::Write as W, encode_log};

    /// A real ext4 image (mkfs.ext4 -d) behind 1 MiB of other bytes, a log
    /// of writes into it, and a judge that must leave the copy exactly as
    /// it found it, however damaged the state it judged.
    #[test]
    fn states_are_judged_in_place_and_the_copy_comes_back_byte_for_byte() {
        let d = tempfile::tempdir().unwrap();
        let tree = d.path().join("tree");
        std::fs::create_dir_all(tree.join("etc")).unwrap();
        std::fs::write(tree.join("etc/marker"), b"here").unwrap();
        let fs = d.path().join("fs.raw");
        let st = Command::new("mkfs.ext4")
            .args(["-q", "-F", "-b", "1024", "-d"])
            .arg(&tree)
            .arg(&fs)
            .arg("16M")
            .status()
            .unwrap();
        assert!(st.success());
        // The disk: 1 MiB of 0xAA, then the filesystem.
        let disk = d.path().join("disk.raw");
        let mut bytes = vec![0xAAu8; 1 << 20];
        bytes.extend(std::fs::read(&fs).unwrap());
        std::fs::write(&disk, &bytes).unwrap();
        let start = 1u64 << 20;
        let len = bytes.len() as u64 - start;
        // Log (512-byte sectors): a write before the filesystem (outside
        // the region), a flush, then 4 KiB of 0x55 over the superblock's
        // block (sector 2048 is the filesystem's first byte).
        let raw = encode_log(&[(W, false, 8, 1, 0x11), (F, false, 0, 0, 0), (W, false, 2048, 8, 0x55)], 0);
        let log = d.path().join("writes.log");
        std::fs::write(&log, &raw).unwrap();
        let wl = WriteLog::parse(&raw, raw.len() as u64, bytes.len() as u64).unwrap();
        let mut ws = Workspace::create(&disk, (start, len), &log, d.path(), "root").unwrap();
        assert_eq!(std::fs::read(ws.path()).unwrap(), std::fs::read(&fs).unwrap(), "the region, copied out");
        ws.advance(&wl, 2).unwrap();
        assert!(ws.spoilt().is_none());
        assert_eq!(ws.applied(), 2);
        let before = std::fs::read(ws.path()).unwrap();
        assert_eq!(before, std::fs::read(&fs).unwrap(), "a write outside the region is not applied");
        // A clean state: no extras.
        let clean = ws.judge(&[], d.path(), |f, fs| (fs, f.metadata().unwrap().len())).unwrap();
        assert!(clean.0.clean, "{:?}", clean.0);
        // The superblock overwritten: damaged, and e2fsck's repair is undone too.
        let e = &wl.entries[2];
        let smash = Piece { offset: e.offset, len: e.len, data_at: Some(e.data_at) };
        let (found, seen) = ws
            .judge(&[smash], d.path(), |f, fs| {
                let mut b = [0u8; 4];
                f.read_exact_at(&mut b, 1024 + 56).unwrap();
                (fs, b)
            })
            .unwrap();
        assert!(!found.clean, "{found:?}");
        assert_ne!(seen, [0x55; 4], "the state was read after e2fsck repaired it from a backup superblock");
        assert_eq!(std::fs::read(ws.path()).unwrap(), before, "the copy is back byte for byte");
        assert!(ws.fsck_runs >= 5);
        assert!(ws.spoilt().is_none() || std::fs::read(ws.path()).unwrap() == before);
        // Forward only.
        assert!(ws.advance(&wl, 1).is_err());
        ws.advance(&wl, 3).unwrap();
        assert_eq!(&std::fs::read(ws.path()).unwrap()[..8], &[0x55; 8]);
        let p = ws.path().to_path_buf();
        drop(ws);
        assert!(!p.exists(), "the working copy goes with the workspace");
        assert_eq!(std::fs::read(&disk).unwrap(), bytes, "the disk is never written");
    }
}
