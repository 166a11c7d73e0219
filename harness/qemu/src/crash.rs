//! Crash states on disk: a qcow2 overlay over the input image holding the
//! writes a cut kept, written through `qemu-nbd` (so any format QEMU
//! reads works, and the input stays untouched); and the root filesystem
//! of such a state copied out, journal replayed and checked by e2fsck.

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::unix::fs::FileExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use airboot_core::cut::FsFindings;
use airboot_core::cut::writelog::CrashState;
use airboot_model::DiskFormat;

use crate::disk::{DiskError, create_overlay};
use crate::process::{require, run_supervised};

#[derive(Debug, thiserror::Error)]
pub enum CrashError {
    #[error(transparent)]
    Disk(#[from] DiskError),
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: io::Error,
    },
    #[error("{0}")]
    Tool(String),
}

fn io_err(what: impl Into<String>) -> impl FnOnce(io::Error) -> CrashError {
    let what = what.into();
    move |source| CrashError::Io { what, source }
}

const NBD_MAGIC: &[u8; 8] = b"NBDMAGIC";
const IHAVEOPT: u64 = 0x4948_4156_454F_5054;
const OPT_EXPORT_NAME: u32 = 1;
const FLAG_FIXED_NEWSTYLE: u16 = 1;
const FLAG_NO_ZEROES: u16 = 2;
const REQUEST_MAGIC: u32 = 0x2560_9513;
const REPLY_MAGIC: u32 = 0x6744_6698;
const CMD_WRITE: u16 = 1;
const CMD_DISC: u16 = 2;
const CMD_FLUSH: u16 = 3;
/// qemu-nbd refuses requests over 32 MiB.
pub const MAX_REQUEST: u64 = 32 << 20;

/// A minimal NBD client (fixed newstyle handshake, simple replies): enough
/// to write into an export served by `qemu-nbd`.
pub struct NbdClient {
    s: UnixStream,
    handle: u64,
    pub size: u64,
}

impl NbdClient {
    pub fn connect(path: &Path) -> io::Result<NbdClient> {
        let mut s = UnixStream::connect(path)?;
        s.set_read_timeout(Some(Duration::from_secs(60)))?;
        let mut hello = [0u8; 18];
        s.read_exact(&mut hello)?;
        if &hello[..8] != NBD_MAGIC || u64::from_be_bytes(hello[8..16].try_into().expect("8")) != IHAVEOPT {
            return Err(io::Error::other("not an NBD newstyle server"));
        }
        let server_flags = u16::from_be_bytes([hello[16], hello[17]]);
        let no_zeroes = server_flags & FLAG_NO_ZEROES != 0;
        let client_flags = u32::from(FLAG_FIXED_NEWSTYLE | if no_zeroes { FLAG_NO_ZEROES } else { 0 });
        let mut msg = Vec::new();
        msg.extend(client_flags.to_be_bytes());
        msg.extend(IHAVEOPT.to_be_bytes());
        msg.extend(OPT_EXPORT_NAME.to_be_bytes());
        msg.extend(0u32.to_be_bytes()); // the default (empty) export name
        s.write_all(&msg)?;
        let mut reply = vec![0u8; if no_zeroes { 10 } else { 134 }];
        s.read_exact(&mut reply)?;
        let size = u64::from_be_bytes(reply[..8].try_into().expect("8"));
        Ok(NbdClient { s, handle: 0, size })
    }

    fn request(&mut self, kind: u16, offset: u64, data: &[u8], len: u32) -> io::Result<()> {
        self.handle += 1;
        let mut h = Vec::with_capacity(28);
        h.extend(REQUEST_MAGIC.to_be_bytes());
        h.extend(0u16.to_be_bytes());
        h.extend(kind.to_be_bytes());
        h.extend(self.handle.to_be_bytes());
        h.extend(offset.to_be_bytes());
        h.extend(len.to_be_bytes());
        self.s.write_all(&h)?;
        self.s.write_all(data)?;
        if kind == CMD_DISC {
            return Ok(());
        }
        let mut r = [0u8; 16];
        self.s.read_exact(&mut r)?;
        let magic = u32::from_be_bytes(r[..4].try_into().expect("4"));
        let err = u32::from_be_bytes(r[4..8].try_into().expect("4"));
        let handle = u64::from_be_bytes(r[8..16].try_into().expect("8"));
        if magic != REPLY_MAGIC || handle != self.handle {
            return Err(io::Error::other("NBD reply out of step"));
        }
        if err != 0 {
            return Err(io::Error::other(format!("NBD server error {err} at offset {offset}")));
        }
        Ok(())
    }

    pub fn write(&mut self, offset: u64, data: &[u8]) -> io::Result<()> {
        self.request(CMD_WRITE, offset, data, data.len() as u32)
    }
    pub fn flush(&mut self) -> io::Result<()> {
        self.request(CMD_FLUSH, 0, &[], 0)
    }
    pub fn disconnect(mut self) -> io::Result<()> {
        self.request(CMD_DISC, 0, &[], 0)
    }
}

/// Write `state` (pieces of `log`) into a new qcow2 `out` over `base`.
pub fn materialize(
    base: &Path,
    format: DiskFormat,
    log: &Path,
    state: &CrashState,
    out: &Path,
) -> Result<(), CrashError> {
    create_overlay(base, format, out)?;
    let logf = File::open(log).map_err(io_err(format!("cannot open the write log {}", log.display())))?;
    through_nbd(out, |nbd| {
        let mut buf = Vec::new();
        for p in &state.pieces {
            let mut done = 0;
            while done < p.len {
                let n = (p.len - done).min(MAX_REQUEST);
                buf.resize(n as usize, 0);
                match p.data_at {
                    Some(at) => logf
                        .read_exact_at(&mut buf, at + done)
                        .map_err(io_err(format!("reading the write log {}", log.display())))?,
                    None => buf.fill(0),
                }
                nbd.write(p.offset + done, &buf).map_err(io_err("writing the crash state through qemu-nbd"))?;
                done += n;
            }
        }
        Ok(())
    })
}

/// Write into the qcow2 `disk` through `qemu-nbd` (so its backing chain
/// stays untouched): `f` gets the connection, then it is flushed and
/// closed and qemu-nbd is gone, whatever `f` did.
pub fn through_nbd(disk: &Path, f: impl FnOnce(&mut NbdClient) -> Result<(), CrashError>) -> Result<(), CrashError> {
    let qemu_nbd = require("qemu-nbd").map_err(|e| CrashError::Tool(e.to_string()))?;
    // qemu-nbd wants an absolute socket path, and a unix socket's path
    // must fit in 108 bytes: a bundle under a relative or deep report
    // directory gives neither, so the socket lives in a private temp dir.
    let sock_dir =
        crate::scratch::temp_dir("nbd").map_err(io_err("cannot create a directory for qemu-nbd's socket"))?;
    let sock = sock_dir.path().join("nbd.sock");
    let mut child = Command::new(qemu_nbd)
        .args(["-f", "qcow2", "--cache=writeback", "-k"])
        .arg(&sock)
        .arg(disk)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(io_err("cannot start qemu-nbd"))?;
    let result = (|| {
        let until = Instant::now() + Duration::from_secs(20);
        let mut nbd = loop {
            match NbdClient::connect(&sock) {
                Ok(c) => break c,
                Err(e) if Instant::now() > until => return Err(io_err("qemu-nbd did not come up")(e)),
                Err(_) => {
                    if let Ok(Some(st)) = child.try_wait() {
                        let mut said = String::new();
                        if let Some(mut e) = child.stderr.take() {
                            let _ = e.read_to_string(&mut said);
                        }
                        return Err(CrashError::Tool(format!(
                            "qemu-nbd exited ({st}) serving {}: {}",
                            disk.display(),
                            said.trim()
                        )));
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
            }
        };
        f(&mut nbd)?;
        nbd.flush().map_err(io_err("flushing the writes through qemu-nbd"))?;
        nbd.disconnect().map_err(io_err("closing the NBD connection"))?;
        Ok(())
    })();
    // qemu-nbd exits once its only client has gone.
    let until = Instant::now() + Duration::from_secs(30);
    loop {
        match child.try_wait() {
            Ok(Some(_)) => break,
            _ if Instant::now() > until || result.is_err() => {
                let _ = child.kill();
                let _ = child.wait();
                break;
            }
            _ => std::thread::sleep(Duration::from_millis(20)),
        }
    }
    drop(sock_dir);
    result
}

/// Copy the root filesystem (bytes `start..start+len` of the virtual
/// disk `disk`, any format with its backing chain) to a sparse raw file.
pub fn extract(disk: &Path, start: u64, len: u64, out: &Path) -> Result<(), CrashError> {
    let qemu_img = require("qemu-img").map_err(|e| CrashError::Tool(e.to_string()))?;
    let abs = std::path::absolute(disk).map_err(io_err(disk.display().to_string()))?;
    let spec = format!(
        "driver=raw,offset={start},size={len},file.driver={},file.file.driver=file,file.file.filename={}",
        crate::disk::detect_format(disk)?.as_str(),
        abs.display()
    );
    let mut cmd = Command::new(qemu_img);
    cmd.args(["convert", "-U", "-O", "raw", "--image-opts", &spec]).arg(out).stdout(Stdio::null());
    run_supervised(&mut cmd, Some(Duration::from_secs(600)))
        .map_err(|e| CrashError::Tool(format!("copying the root filesystem out of {}: {e}", disk.display())))?;
    Ok(())
}

/// Run e2fsck with `args` (then `undo`, the file for `-z`, when given)
/// on `fs`. Any exit status is a finding (8, "operational error", is a
/// filesystem e2fsck cannot even open: damaged).
pub(crate) fn e2fsck(args: &[&str], undo: Option<&Path>, fs: &Path) -> Result<(i32, String), CrashError> {
    let bin = require("e2fsck").map_err(|e| CrashError::Tool(e.to_string()))?;
    let mut cmd = Command::new(bin);
    cmd.args(args);
    if let Some(u) = undo {
        cmd.arg(u);
    }
    let out = cmd.arg(fs).stdin(Stdio::null()).output().map_err(io_err("cannot run e2fsck"))?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    Ok((out.status.code().unwrap_or(-1), text))
}

/// Replay the journal of the ext4 image `fs` (a copy: it is modified),
/// then check it read-only; if it is not clean, repair it as a boot-time
/// fsck would so the store can still be read.
pub fn fsck(fs: &Path) -> Result<FsFindings, CrashError> {
    let (replay, _) = e2fsck(&["-E", "journal_only", "-y"], None, fs)?;
    let (code, text) = e2fsck(&["-f", "-n"], None, fs)?;
    if code == 0 {
        return Ok(clean_after_replay(replay));
    }
    let (fixed, _) = e2fsck(&["-f", "-y"], None, fs)?;
    Ok(repaired(code, &text, fixed))
}

/// The findings when the check after journal replay (exit `replay`) was clean.
pub(crate) fn clean_after_replay(replay: i32) -> FsFindings {
    FsFindings { clean: true, summary: format!("e2fsck -E journal_only exit {replay}, then -fn exit 0") }
}

/// The findings when `e2fsck -fn` exited `code` saying `text`, and the
/// repair exited `fixed`.
pub(crate) fn repaired(code: i32, text: &str, fixed: i32) -> FsFindings {
    FsFindings {
        clean: false,
        summary: format!(
            "e2fsck -fn exit {code}: {}; repaired (exit {fixed}) before reading the store",
            fsck_problems(text)
        ),
    }
}

/// The first few lines of what e2fsck found, without its banner and pass names.
fn fsck_problems(text: &str) -> String {
    let problems: Vec<&str> = text
        .lines()
        .filter(|l| !l.starts_with("Pass ") && !l.trim().is_empty() && !l.contains("e2fsck 1."))
        .take(4)
        .collect();
    problems.join(" | ")
}

/// A temporary raw copy of a crash state's root filesystem.
pub fn root_copy(dir: &Path, name: &str) -> PathBuf {
    dir.join(format!("{name}-root.raw"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use airboot_core::cut::writelog::Piece;

    /// A bundle under a relative report directory (`reports/…`, the
    /// default) must work: qemu-nbd refuses a relative socket path.
    #[test]
    fn materializes_a_crash_state_under_a_relative_path() {
        // Relative to the test's working directory (the crate's folder).
        let d = tempfile::Builder::new().prefix("crash-rel-").tempdir_in(".").unwrap();
        let rel = PathBuf::from(d.path().file_name().unwrap());
        assert!(rel.is_relative());
        let base = rel.join("base.raw");
        std::fs::write(&base, vec![0xAAu8; 1 << 20]).unwrap();
        let log = rel.join("log");
        std::fs::write(&log, [b"0123456789".as_slice(), &[0x55u8; 512]].concat()).unwrap();
        let state = CrashState {
            pieces: vec![
                Piece { offset: 4096, len: 512, data_at: Some(10) },
                Piece { offset: 8192, len: 512, data_at: None },
            ],
            lost_writes: 0,
            lost_bytes: 0,
            torn_writes: 0,
            last_flush: None,
            durable_end: 0,
            extras_from: 0,
        };
        let out = rel.join("deep").join("crash.qcow2");
        std::fs::create_dir_all(out.parent().unwrap()).unwrap();
        materialize(&base, DiskFormat::Raw, &log, &state, &out).unwrap();
        let raw = rel.join("out.raw");
        let st = Command::new("qemu-img").args(["convert", "-O", "raw"]).arg(&out).arg(&raw).status().unwrap();
        assert!(st.success());
        let got = std::fs::read(&raw).unwrap();
        assert_eq!(got.len(), 1 << 20);
        assert!(got[..4096].iter().all(|&b| b == 0xAA), "untouched bytes come from the base");
        assert!(got[4096..4608].iter().all(|&b| b == 0x55), "a kept write's data comes from the log");
        assert!(got[8192..8704].iter().all(|&b| b == 0), "a zeroed piece is zero");
        assert!(got[8704..].iter().all(|&b| b == 0xAA));
        assert_eq!(std::fs::read(&base).unwrap(), vec![0xAAu8; 1 << 20], "the base is never written");
    }
}
