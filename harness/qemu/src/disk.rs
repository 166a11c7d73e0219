//! Disk images: format detection, content hashes, throwaway overlays.
//!
//! The input image is never written: QEMU only ever opens a qcow2 overlay
//! whose backing file is the input, read-only.

use std::fs::File;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use airboot_model::DiskFormat;
use sha2::{Digest, Sha256};

use crate::process::{RunError, require, run_supervised};

#[derive(Debug, thiserror::Error)]
pub enum DiskError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{path} looks like a {found} image, but the scenario says format = \"{said}\"")]
    FormatMismatch { path: PathBuf, found: &'static str, said: &'static str },
    #[error("could not create the overlay for {path}: {source}")]
    Overlay {
        path: PathBuf,
        #[source]
        source: RunError,
    },
}

/// qcow2 files start with "QFI\xfb".
pub fn detect_format(path: &Path) -> Result<DiskFormat, DiskError> {
    let mut f = File::open(path).map_err(|source| DiskError::Read { path: path.into(), source })?;
    let mut magic = [0u8; 4];
    let n = f.read(&mut magic).map_err(|source| DiskError::Read { path: path.into(), source })?;
    Ok(if n == 4 && &magic == b"QFI\xfb" { DiskFormat::Qcow2 } else { DiskFormat::Raw })
}

/// The format to use: detected, and checked against what the scenario said.
pub fn resolve_format(path: &Path, said: Option<DiskFormat>) -> Result<DiskFormat, DiskError> {
    let found = detect_format(path)?;
    match said {
        Some(s) if s != found => {
            Err(DiskError::FormatMismatch { path: path.into(), found: found.as_str(), said: s.as_str() })
        }
        _ => Ok(found),
    }
}

/// Why the file at `path` cannot be booted as a disk of `format`, found
/// before anything boots: it is empty, or a qcow2 this reader cannot
/// open (truncated, corrupt) or whose backing file is missing. `None`:
/// nothing against it (a qcow2 over a backing file that is there is left
/// to QEMU).
pub fn unusable(path: &Path, format: DiskFormat) -> Option<String> {
    let f = match File::open(path) {
        Ok(f) => f,
        Err(e) => return Some(format!("cannot open {}: {e}", path.display())),
    };
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    if len == 0 {
        return Some(format!("{} is empty (0 bytes): not a disk image; was the build interrupted?", path.display()));
    }
    if format != DiskFormat::Qcow2 {
        return None;
    }
    let Err(e) = File::open(path).and_then(airboot_core::disk::qcow2::Qcow2::open) else {
        return None;
    };
    // The reader checks the version before the backing file: a header
    // that names one is a real overlay, left to QEMU if its base is there.
    if let Ok(Some(b)) = airboot_core::disk::qcow2::backing_file(&f) {
        let backing = path.parent().unwrap_or(Path::new(".")).join(&b);
        return (!backing.exists()).then(|| {
            format!(
                "{} is a qcow2 overlay whose backing file {b} is missing (looked for {}): give the base image, or `qemu-img convert` the chain into one file",
                path.display(),
                backing.display()
            )
        });
    }
    Some(format!(
        "{} is not a readable qcow2 ({e}): truncated or corrupt? `qemu-img check {}` says more",
        path.display(),
        path.display()
    ))
}

/// Open an image file as a view of its virtual disk (qcow2 or raw).
pub fn open_image(path: &Path) -> std::io::Result<Box<dyn airboot_core::disk::ReadAt>> {
    airboot_core::disk::disk_view(std::fs::File::open(path)?)
}

/// What a direct-boot kernel file says about its architecture (`None`
/// when it cannot be read or says nothing).
pub fn kernel_evidence(path: &Path) -> Option<airboot_core::disk::detect::Evidence> {
    let f = std::fs::File::open(path).ok()?;
    airboot_core::disk::detect::kernel_evidence(path, &f)
}

/// sha256 of a whole file, hex.
pub fn sha256_file(path: &Path) -> Result<String, DiskError> {
    let mut f = File::open(path).map_err(|source| DiskError::Read { path: path.into(), source })?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).map_err(|source| DiskError::Read { path: path.into(), source })?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(hex(&h.finalize()))
}

/// What the filesystem says of a file's contents: device, inode, size,
/// and the modification and change times to the nanosecond. Any write
/// changes the change time, which no user tool can set back, so a hash
/// kept under this stamp holds while the stamp does.
pub fn file_stamp(path: &Path) -> io::Result<String> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(path)?;
    Ok(format!(
        "{:x}-{}-{}-{}.{:09}-{}.{:09}",
        m.dev(),
        m.ino(),
        m.size(),
        m.mtime(),
        m.mtime_nsec(),
        m.ctime(),
        m.ctime_nsec()
    ))
}

/// The sha256 of `path` kept in `cache` under its current stamp
/// ([`file_stamp`]), if one was.
pub fn cached_sha256(path: &Path, cache: &Path) -> Option<String> {
    let stamp = file_stamp(path).ok()?;
    let text = std::fs::read_to_string(cache.join(stamp)).ok()?;
    let h = text.trim();
    (h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit())).then(|| h.to_string())
}

/// Keep `sha256` as `path`'s hash under `stamp`, taken before it was
/// computed: kept only if the file still has that stamp (nothing wrote
/// to it meanwhile). Best effort: a cache that cannot be written only
/// costs the next run a hash.
pub fn remember_sha256(path: &Path, stamp: &str, sha256: &str, cache: &Path) {
    if file_stamp(path).ok().as_deref() != Some(stamp) || std::fs::create_dir_all(cache).is_err() {
        return;
    }
    let tmp = cache.join(format!("{stamp}.{}", std::process::id()));
    if std::fs::write(&tmp, sha256).is_ok() {
        let _ = std::fs::rename(&tmp, cache.join(stamp));
    }
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Create `overlay` (qcow2) backed by `base` (absolute path, opened
/// read-only by QEMU).
pub fn create_overlay(base: &Path, format: DiskFormat, overlay: &Path) -> Result<(), DiskError> {
    let base_abs = std::path::absolute(base).map_err(|source| DiskError::Read { path: base.into(), source })?;
    let err = |source| DiskError::Overlay { path: base.into(), source };
    let qemu_img = require("qemu-img").map_err(err)?;
    let mut cmd = Command::new(qemu_img);
    cmd.args(["create", "-q", "-f", "qcow2", "-F", format.as_str(), "-b"])
        .arg(&base_abs)
        .arg(overlay)
        .stdout(std::process::Stdio::null());
    run_supervised(&mut cmd, Some(Duration::from_secs(60))).map_err(err)?;
    Ok(())
}

/// Point the qcow2 `overlay` at `base` (absolute path) without touching
/// its data (`qemu-img rebase -u`): for a copy of a crash state whose
/// backing image now lives elsewhere.
pub fn rebase(overlay: &Path, base: &Path, format: DiskFormat) -> Result<(), DiskError> {
    let base_abs = std::path::absolute(base).map_err(|source| DiskError::Read { path: base.into(), source })?;
    let err = |source| DiskError::Overlay { path: base.into(), source };
    let qemu_img = require("qemu-img").map_err(err)?;
    let mut cmd = Command::new(qemu_img);
    cmd.args(["rebase", "-q", "-u", "-f", "qcow2", "-F", format.as_str(), "-b"])
        .arg(&base_abs)
        .arg(overlay)
        .stdout(std::process::Stdio::null());
    run_supervised(&mut cmd, Some(Duration::from_secs(60))).map_err(err)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detects_formats_and_hashes() {
        let d = tempfile::tempdir().unwrap();
        let raw = d.path().join("a.raw");
        std::fs::write(&raw, b"abc").unwrap();
        assert_eq!(detect_format(&raw).unwrap(), DiskFormat::Raw);
        assert_eq!(sha256_file(&raw).unwrap(), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
        let q = d.path().join("a.qcow2");
        std::fs::write(&q, b"QFI\xfbrest").unwrap();
        assert_eq!(detect_format(&q).unwrap(), DiskFormat::Qcow2);
        let e = resolve_format(&q, Some(DiskFormat::Raw)).unwrap_err();
        assert!(e.to_string().contains("qcow2"), "{e}");
        assert!(matches!(sha256_file(&d.path().join("nope")), Err(DiskError::Read { .. })));
    }

    /// A cached hash is found while the file is untouched, and lost by any
    /// write, even one that keeps the size and puts the mtime back.
    #[test]
    fn a_cached_hash_holds_only_while_the_file_is_untouched() {
        let d = tempfile::tempdir().unwrap();
        let (f, cache) = (d.path().join("disk.raw"), d.path().join("hashes"));
        std::fs::write(&f, b"abc").unwrap();
        assert_eq!(cached_sha256(&f, &cache), None, "nothing kept yet");
        let stamp = file_stamp(&f).unwrap();
        let h = sha256_file(&f).unwrap();
        remember_sha256(&f, &stamp, &h, &cache);
        assert_eq!(cached_sha256(&f, &cache).as_deref(), Some(h.as_str()));
        let mtime = std::fs::metadata(&f).unwrap().modified().unwrap();
        std::thread::sleep(Duration::from_millis(20));
        std::fs::write(&f, b"abd").unwrap();
        std::fs::File::options().write(true).open(&f).unwrap().set_modified(mtime).unwrap();
        assert_eq!(std::fs::metadata(&f).unwrap().modified().unwrap(), mtime, "same size, same mtime");
        assert_eq!(cached_sha256(&f, &cache), None, "the change time gave the write away");
        // A stamp taken before a write is not kept after it.
        let old = file_stamp(&f).unwrap();
        std::thread::sleep(Duration::from_millis(20));
        std::fs::write(&f, b"xyz").unwrap();
        remember_sha256(&f, &old, "0".repeat(64).as_str(), &cache);
        assert_eq!(cached_sha256(&f, &cache), None);
        // A damaged cache entry is no hash.
        std::fs::write(cache.join(file_stamp(&f).unwrap()), b"not a hash").unwrap();
        assert_eq!(cached_sha256(&f, &cache), None);
    }
}
