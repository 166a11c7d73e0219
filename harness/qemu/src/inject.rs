//! Writing the probe into a qcow2 layer over the user's image, never the
//! image itself: the root filesystem is copied out of the layer, written
//! with `debugfs -w` (a kept tool: no hand-written ext4 writer), checked
//! with `e2fsck -fn`, read back and compared with the plan, and only the
//! blocks that changed go back into the layer through `qemu-nbd`.

use std::fs::File;
use std::io::Write;
use std::os::unix::fs::{FileExt, PermissionsExt};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use airboot_core::disk::ext4::{Ext4, Kind};
use airboot_core::inject::{Content, Injected, Plan, debugfs_script};
use sha2::{Digest, Sha256};

use crate::crash::{self, CrashError, MAX_REQUEST};
use crate::process::{require, run_supervised};

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Write `plan` into the ext4 filesystem at bytes `start..start+len` of
/// the qcow2 `layer` (over the input image), the probe binary from
/// `probe`; `work` holds the temporary copies. Returns what was added,
/// read back from the filesystem.
pub fn inject(
    layer: &Path,
    start: u64,
    len: u64,
    plan: &Plan,
    probe: &Path,
    work: &Path,
) -> Result<Vec<Injected>, String> {
    let debugfs = require("debugfs").map_err(|e| e.to_string())?;
    let root = work.join("root.raw");
    let orig = work.join("root.orig");
    crash::extract(layer, start, len, &root).map_err(|e| e.to_string())?;
    let (code, text) = e2fsck_n(&root)?;
    if code != 0 {
        return Err(format!(
            "the filesystem to write into (at byte {start}) is not clean (e2fsck -fn exit {code}: {}): airboot writes into a clean filesystem only",
            first_lines(&text, 3)
        ));
    }
    let o = Command::new("cp").arg("--sparse=always").arg(&root).arg(&orig).stdin(Stdio::null()).output();
    match o {
        Ok(o) if o.status.success() => {}
        Ok(o) => {
            return Err(format!(
                "cannot copy the filesystem to write into in {} ({}): free space there (or point TMPDIR elsewhere)",
                work.display(),
                String::from_utf8_lossy(&o.stderr).trim()
            ));
        }
        Err(e) => return Err(format!("cannot run cp: {e}")),
    }
    // The bytes of each planned file, in host files debugfs reads.
    let files = work.join("files");
    std::fs::create_dir_all(&files).map_err(|e| format!("{}: {e}", files.display()))?;
    let host = |f: &airboot_core::inject::PlannedFile| files.join(f.path.trim_start_matches('/').replace('/', "_"));
    let mut wanted = Vec::new();
    for f in &plan.files {
        let p = host(f);
        let sum = write_host_file(&p, &f.content, probe)?;
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(f.mode)).ok();
        wanted.push((f.clone(), sum));
    }
    // Files the image already has are replaced (debugfs will not write
    // over one); directories it has are not made again.
    let mut plan = plan.clone();
    let mut have_dirs = Vec::new();
    {
        let img = File::open(&root).map_err(|e| format!("{}: {e}", root.display()))?;
        let fs = Ext4::open(&img).map_err(|e| format!("the filesystem to write into: {e}"))?;
        for f in &mut plan.files {
            if fs.lookup(&f.path, false).map_err(|e| e.to_string())?.is_some() {
                f.replaces = true;
            }
        }
        let paths = plan.files.iter().map(|f| f.path.clone()).chain(plan.symlinks.iter().map(|(l, _)| l.clone()));
        for p in paths {
            let mut d = std::path::Path::new(&p).parent();
            while let Some(dir) = d.and_then(|x| x.to_str()).filter(|x| *x != "/" && !x.is_empty()) {
                // Following links: /etc/systemd/system may be one.
                if fs.lookup(dir, true).map_err(|e| e.to_string())?.is_some_and(|i| i.kind() == Kind::Dir) {
                    have_dirs.push(dir.to_string());
                }
                d = std::path::Path::new(dir).parent();
            }
        }
    }
    let script = work.join("inject.debugfs");
    let text = debugfs_script(&plan, &|f| host(f).display().to_string(), &|d| have_dirs.iter().any(|h| h == d));
    std::fs::write(&script, &text).map_err(|e| format!("{}: {e}", script.display()))?;
    let mut cmd = Command::new(&debugfs);
    cmd.arg("-w").arg("-f").arg(&script).arg(&root).stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null());
    run_supervised(&mut cmd, Some(Duration::from_secs(120))).map_err(|e| format!("debugfs -w: {e}"))?;
    // Read back what is there now: every file with its bytes and mode,
    // every link with its target.
    let mut out = Vec::new();
    {
        let img = File::open(&root).map_err(|e| format!("{}: {e}", root.display()))?;
        let fs = Ext4::open(&img).map_err(|e| format!("the filesystem written into, after debugfs: {e}"))?;
        for (f, sum) in &wanted {
            let ino = fs
                .lookup(&f.path, false)
                .map_err(|e| e.to_string())?
                .filter(|i| i.kind() == Kind::File)
                .ok_or_else(|| format!("debugfs did not write {} (script {})", f.path, script.display()))?;
            let mut sha = Sha256::new();
            std::io::copy(&mut fs.reader(&ino).map_err(|e| e.to_string())?, &mut sha)
                .map_err(|e| format!("reading {} back: {e}", f.path))?;
            let got = hex(&sha.finalize());
            if &got != sum || u32::from(ino.mode) & 0o7777 != f.mode || ino.uid != 0 {
                return Err(format!(
                    "{} reads back wrong after debugfs (sha256 {}, mode {:o}, uid {})",
                    f.path,
                    &got[..12],
                    ino.mode & 0o7777,
                    ino.uid
                ));
            }
            let what = format!("file {:04o}{}", f.mode, if f.replaces { " (replaces the image's)" } else { "" });
            out.push(Injected { path: f.path.clone(), sha256: got, what });
        }
        for (link, target) in &plan.symlinks {
            let ino = fs
                .lookup(link, false)
                .map_err(|e| e.to_string())?
                .filter(|i| i.kind() == Kind::Symlink)
                .ok_or_else(|| format!("debugfs did not make the link {link}"))?;
            let got = fs.read(&ino, 4096).map_err(|e| e.to_string())?;
            if got != target.as_bytes() {
                return Err(format!("{link} points at {:?}, not {target}", String::from_utf8_lossy(&got)));
            }
            out.push(Injected {
                path: link.clone(),
                sha256: hex(&Sha256::digest(&got)),
                what: format!("symlink -> {target}"),
            });
        }
    }
    let (code, text) = e2fsck_n(&root)?;
    if code != 0 {
        return Err(format!(
            "the filesystem written into is not clean after debugfs (e2fsck -fn exit {code}: {})",
            first_lines(&text, 3)
        ));
    }
    // Only the blocks that changed go into the layer.
    let changed = changed_ranges(&orig, &root)?;
    let new = File::open(&root).map_err(|e| format!("{}: {e}", root.display()))?;
    crash::through_nbd(layer, |nbd| {
        let mut buf = Vec::new();
        for (off, n) in &changed {
            let mut done = 0;
            while done < *n {
                let k = (*n - done).min(MAX_REQUEST);
                buf.resize(k as usize, 0);
                new.read_exact_at(&mut buf, off + done)
                    .map_err(|e| CrashError::Tool(format!("reading {}: {e}", root.display())))?;
                nbd.write(start + off + done, &buf)
                    .map_err(|e| CrashError::Tool(format!("writing the probe into the layer: {e}")))?;
                done += k;
            }
        }
        Ok(())
    })
    .map_err(|e| e.to_string())?;
    let _ = std::fs::remove_file(&root);
    let _ = std::fs::remove_file(&orig);
    Ok(out)
}

/// The bytes of one planned file, in the host file debugfs copies from
/// (streamed: a filler may be as big as the filesystem); their sha256.
fn write_host_file(p: &Path, content: &Content, probe: &Path) -> Result<String, String> {
    let open = |f: &Path, what: &str| -> Result<Box<dyn std::io::Read>, String> {
        File::open(f).map(|f| Box::new(f) as Box<dyn std::io::Read>).map_err(|e| format!("{what}{}: {e}", f.display()))
    };
    let (mut src, from): (Box<dyn std::io::Read>, String) = match content {
        Content::Probe => (open(probe, "the guest probe ")?, probe.display().to_string()),
        Content::Text(t) => (Box::new(std::io::Cursor::new(t.clone().into_bytes())), "text".into()),
        Content::Copy(f) => (open(f, "")?, f.display().to_string()),
        Content::Fill { byte, len } => {
            (Box::new(std::io::Read::take(std::io::repeat(*byte), *len)), format!("{len} bytes of {byte:#04x}"))
        }
    };
    let out = File::create(p).map_err(|e| format!("{}: {e}", p.display()))?;
    let mut w = HashingWriter { inner: std::io::BufWriter::with_capacity(1 << 20, out), sha: Sha256::new() };
    std::io::copy(&mut src, &mut w)
        .and_then(|_| w.inner.flush())
        .map_err(|e| format!("writing {} from {from}: {e}", p.display()))?;
    Ok(hex(&w.sha.finalize()))
}

/// A writer that hashes what it passes on: the hash recorded for an
/// injected file is of the bytes written, whatever their source.
struct HashingWriter<W: Write> {
    inner: W,
    sha: Sha256,
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.sha.update(&buf[..n]);
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

fn e2fsck_n(fs: &Path) -> Result<(i32, String), String> {
    let bin = require("e2fsck").map_err(|e| e.to_string())?;
    let out = Command::new(bin)
        .args(["-f", "-n"])
        .arg(fs)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run e2fsck: {e}"))?;
    Ok((
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
    ))
}

fn first_lines(t: &str, n: usize) -> String {
    t.lines().filter(|l| !l.trim().is_empty() && !l.starts_with("Pass ")).take(n).collect::<Vec<_>>().join(" | ")
}

/// Where `new` differs from `old` (same size), in 64 KiB steps, as
/// (offset, length) runs; only the parts of `new` that hold data are read.
pub fn changed_ranges(old: &Path, new: &Path) -> Result<Vec<(u64, u64)>, String> {
    const STEP: u64 = 64 << 10;
    let a = File::open(old).map_err(|e| format!("{}: {e}", old.display()))?;
    let b = File::open(new).map_err(|e| format!("{}: {e}", new.display()))?;
    let size = b.metadata().map_err(|e| e.to_string())?.len();
    let mut out: Vec<(u64, u64)> = Vec::new();
    let (mut x, mut y) = (vec![0u8; STEP as usize], vec![0u8; STEP as usize]);
    for (from, to) in data_regions(&b, size) {
        let mut off = from - from % STEP;
        while off < to {
            let n = STEP.min(size - off) as usize;
            b.read_exact_at(&mut y[..n], off).map_err(|e| format!("{}: {e}", new.display()))?;
            // A short read of the old copy reads as zeros (it is the same size).
            x[..n].fill(0);
            let _ = a.read_at(&mut x[..n], off);
            if x[..n] != y[..n] {
                match out.last_mut() {
                    Some((o, l)) if *o + *l == off => *l += n as u64,
                    _ => out.push((off, n as u64)),
                }
            }
            off += STEP;
        }
    }
    Ok(out)
}

/// The (start, end) byte ranges of `f` that hold data (SEEK_DATA/SEEK_HOLE),
/// or the whole file where the filesystem cannot tell.
fn data_regions(f: &File, size: u64) -> Vec<(u64, u64)> {
    use std::os::fd::AsRawFd;
    let fd = f.as_raw_fd();
    let mut out = Vec::new();
    let mut pos: i64 = 0;
    while (pos as u64) < size {
        #[allow(unsafe_code)]
        // SAFETY: lseek on a descriptor we own; no memory is passed.
        let data = unsafe { libc::lseek(fd, pos, libc::SEEK_DATA) };
        if data < 0 {
            if pos == 0 && std::io::Error::last_os_error().raw_os_error() != Some(libc::ENXIO) {
                return vec![(0, size)]; // SEEK_DATA unsupported: read everything
            }
            break;
        }
        #[allow(unsafe_code)]
        // SAFETY: as above.
        let hole = unsafe { libc::lseek(fd, data, libc::SEEK_HOLE) };
        let end = if hole < 0 { size as i64 } else { hole };
        out.push((data as u64, end as u64));
        pos = end;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_kind_of_content_is_written_and_hashed_as_written() {
        let d = tempfile::tempdir().unwrap();
        let (probe, src) = (d.path().join("probe"), d.path().join("src"));
        std::fs::write(&probe, b"\x7fELF probe").unwrap();
        let big: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
        std::fs::write(&src, &big).unwrap();
        let cases: Vec<(Content, Vec<u8>)> = vec![
            (Content::Probe, b"\x7fELF probe".to_vec()),
            (Content::Text("[Unit]\n".into()), b"[Unit]\n".to_vec()),
            (Content::Copy(src.clone()), big.clone()),
            (Content::Fill { byte: 0xa5, len: 2_500_001 }, vec![0xa5; 2_500_001]),
            (Content::Fill { byte: 0, len: 0 }, vec![]),
        ];
        for (i, (c, want)) in cases.into_iter().enumerate() {
            let out = d.path().join(format!("out{i}"));
            let hash = write_host_file(&out, &c, &probe).unwrap();
            assert_eq!(std::fs::read(&out).unwrap(), want, "{c:?}");
            assert_eq!(hash, hex(&Sha256::digest(&want)), "{c:?}");
        }
        let e = write_host_file(&d.path().join("x"), &Content::Copy(d.path().join("absent")), &probe).unwrap_err();
        assert!(e.contains("absent"), "{e}");
        let e = write_host_file(&d.path().join("no/such/dir/x"), &Content::Text("t".into()), &probe).unwrap_err();
        assert!(e.contains("no/such/dir/x"), "{e}");
    }

    #[test]
    fn only_changed_steps_of_data_regions_are_found() {
        let d = tempfile::tempdir().unwrap();
        let (a, b) = (d.path().join("a"), d.path().join("b"));
        let f = File::create(&a).unwrap();
        f.set_len(8 << 20).unwrap();
        f.write_all_at(&[1u8; 4096], 1 << 20).unwrap();
        drop(f);
        std::fs::copy(&a, &b).unwrap();
        let g = std::fs::OpenOptions::new().write(true).open(&b).unwrap();
        g.write_all_at(b"changed", (1 << 20) + 10).unwrap();
        g.write_all_at(&[7u8; 100], (5 << 20) + 65_500).unwrap(); // straddles two steps
        drop(g);
        let r = changed_ranges(&a, &b).unwrap();
        assert_eq!(r, [(1 << 20, 64 << 10), (5 << 20, 128 << 10)], "5 MiB is a multiple of the 64 KiB step");
        assert!(changed_ranges(&a, &a).unwrap().is_empty());
    }
}
