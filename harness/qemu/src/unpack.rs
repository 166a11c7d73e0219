//! Unpack an input image once (`airboot_core::disk::packed` tells how it
//! is packed): into `<cache>/inputs/<sha256 of the input>/`, by the kept
//! tool for its format, with progress. The input is only read. A later run
//! on the same input finds the copy by that hash and reuses it.

use std::fs::{self, File};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use airboot_core::disk::packed::{self, Packing};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::disk::hex;
use crate::process::{GroupGuard, harden, interrupted, require, run_supervised};

/// An unpacked input, as recorded in its cache folder (`unpacked.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Unpacked {
    pub packing: String,
    /// The input file and its sha256 (the cache key).
    pub input: PathBuf,
    pub input_sha256: String,
    /// The unpacked disk, its sha256 when written, and its size.
    pub path: PathBuf,
    pub sha256: String,
    pub size: u64,
    /// Found in the cache rather than unpacked now.
    #[serde(skip)]
    pub reused: bool,
}

/// How `path` is packed, from its first bytes.
pub fn packing_of(path: &Path) -> io::Result<Option<Packing>> {
    let mut head = [0u8; 16];
    let mut f = File::open(path)?;
    let mut n = 0;
    while n < head.len() {
        match f.read(&mut head[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(packed::detect(&head[..n]))
}

/// Unpack `input` under `cache` (`Ok(None)` when it is not packed).
/// `progress` gets a line every few seconds.
pub fn unpack(input: &Path, cache: &Path, progress: &mut dyn FnMut(String)) -> Result<Option<Unpacked>, String> {
    let what = input.display();
    let Some(packing) = packing_of(input).map_err(|e| format!("cannot read {what}: {e}"))? else {
        return Ok(None);
    };
    let (program, args, package) = packing.tool();
    let tool = require(program).map_err(|_| {
        format!(
            "{what} is {} packed: unpacking it needs {program} (install the Debian package `{package}`)",
            packing.as_str()
        )
    })?;
    let total = fs::metadata(input).map_err(|e| format!("cannot read {what}: {e}"))?.len();
    progress(format!("{what} is {}-packed: hashing it ({})", packing.as_str(), mib(total)));
    let input_sha256 = hash_with_progress(input, total, progress)?;
    let dir = cache.join("inputs").join(&input_sha256);
    let name = input.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "image".into());
    let out = dir.join(packed::unpacked_name(&name, packing));
    let record = dir.join("unpacked.json");
    if let Some(mut u) = fs::read(&record).ok().and_then(|b| serde_json::from_slice::<Unpacked>(&b).ok())
        && u.path == out
        && fs::metadata(&out).is_ok_and(|m| m.len() == u.size)
    {
        progress(format!("reusing {} (unpacked before from an input with this sha256)", out.display()));
        u.input = input.to_path_buf();
        u.reused = true;
        return Ok(Some(u));
    }
    fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let partial = dir.join(format!("{}.partial", out.file_name().unwrap().to_string_lossy()));
    let _ = fs::remove_file(&partial);
    let _ = fs::remove_file(&record);
    progress(format!("unpacking {what} with {program} into {}", dir.display()));
    let result = match packing {
        Packing::Vmdk => convert(&tool, args, input, &partial),
        _ => decompress(&tool, args, input, total, &partial, progress),
    };
    let (sha256, size) = match result {
        Ok(x) => x,
        Err(e) => {
            let _ = fs::remove_file(&partial);
            return Err(format!("cannot unpack {what} ({} packed) with {program}: {e}", packing.as_str()));
        }
    };
    fs::rename(&partial, &out).map_err(|e| format!("cannot rename {}: {e}", partial.display()))?;
    let u = Unpacked {
        packing: packing.as_str().into(),
        input: input.to_path_buf(),
        input_sha256,
        path: out,
        sha256,
        size,
        reused: false,
    };
    let json = serde_json::to_vec_pretty(&u).expect("plain data");
    fs::write(&record, json).map_err(|e| format!("cannot write {}: {e}", record.display()))?;
    progress(format!("unpacked {} ({})", u.path.display(), mib(size)));
    Ok(Some(u))
}

fn mib(n: u64) -> String {
    format!("{:.1} MiB", n as f64 / (1u64 << 20) as f64)
}

/// A line at most every 5 s.
struct Ticker(Instant);

impl Ticker {
    fn due(&mut self) -> bool {
        let due = self.0.elapsed() >= Duration::from_secs(5);
        if due {
            self.0 = Instant::now();
        }
        due
    }
}

fn hash_with_progress(path: &Path, total: u64, progress: &mut dyn FnMut(String)) -> Result<String, String> {
    let mut f = File::open(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let (mut done, mut tick) = (0u64, Ticker(Instant::now()));
    loop {
        if interrupted() {
            return Err("interrupted".into());
        }
        let n = f.read(&mut buf).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
        done += n as u64;
        if tick.due() {
            progress(format!("hashing: {}%", done * 100 / total.max(1)));
        }
    }
    Ok(hex(&h.finalize()))
}

/// Feed `input` to `tool args` and write what it prints to `out`, sparse
/// (a disk image is mostly zeros), hashing it on the way.
fn decompress(
    tool: &Path,
    args: &[&str],
    input: &Path,
    total: u64,
    out: &Path,
    progress: &mut dyn FnMut(String),
) -> Result<(String, u64), String> {
    let mut cmd = Command::new(tool);
    cmd.args(args).stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
    harden(&mut cmd);
    let mut child = cmd.spawn().map_err(|e| format!("cannot start it: {e}"))?;
    let _guard = GroupGuard::new(child.id(), tool.display().to_string());
    let fed = Arc::new(AtomicU64::new(0));
    let mut stdin = child.stdin.take().expect("piped");
    let mut src = File::open(input).map_err(|e| format!("cannot read {}: {e}", input.display()))?;
    let feeder = {
        let fed = fed.clone();
        std::thread::spawn(move || -> io::Result<()> {
            let mut buf = vec![0u8; 1 << 20];
            loop {
                let n = src.read(&mut buf)?;
                if n == 0 {
                    return Ok(());
                }
                // A tool that stopped reading (bad data) closes the pipe: its exit status says why.
                if stdin.write_all(&buf[..n]).is_err() {
                    return Ok(());
                }
                fed.fetch_add(n as u64, Ordering::Relaxed);
            }
        })
    };
    let mut stderr = child.stderr.take().expect("piped");
    let errs = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = (&mut stderr).take(8192).read_to_string(&mut s);
        s
    });
    let mut stdout = child.stdout.take().expect("piped");
    let mut f = File::create(out).map_err(|e| format!("cannot create {}: {e}", out.display()))?;
    let mut h = Sha256::new();
    const BLOCK: usize = 1 << 16;
    let mut buf = vec![0u8; 1 << 20];
    let (mut size, mut tick) = (0u64, Ticker(Instant::now()));
    loop {
        if interrupted() {
            return Err("interrupted".into());
        }
        let mut n = 0;
        // Fill whole blocks so the zero test works on aligned blocks.
        while n < buf.len() {
            match stdout.read(&mut buf[n..]).map_err(|e| format!("reading its output: {e}"))? {
                0 => break,
                k => n += k,
            }
        }
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
        for chunk in buf[..n].chunks(BLOCK) {
            if chunk.iter().all(|b| *b == 0) {
                f.seek(SeekFrom::Current(chunk.len() as i64)).map_err(|e| format!("writing {}: {e}", out.display()))?;
            } else {
                f.write_all(chunk).map_err(|e| format!("writing {}: {e}", out.display()))?;
            }
        }
        size += n as u64;
        if tick.due() {
            let pct = fed.load(Ordering::Relaxed) * 100 / total.max(1);
            progress(format!("unpacking: {pct}% of the input read, {} written", mib(size)));
        }
    }
    f.set_len(size).map_err(|e| format!("writing {}: {e}", out.display()))?;
    f.sync_all().map_err(|e| format!("writing {}: {e}", out.display()))?;
    let status = child.wait().map_err(|e| format!("waiting for it: {e}"))?;
    let _ = feeder.join();
    let said = errs.join().unwrap_or_default();
    if !status.success() {
        return Err(format!("{status}: {}", said.trim()));
    }
    Ok((hex(&h.finalize()), size))
}

/// `qemu-img convert` to qcow2 (it reads the input, writes `out`).
fn convert(tool: &Path, args: &[&str], input: &Path, out: &Path) -> Result<(String, u64), String> {
    let mut cmd = Command::new(tool);
    cmd.args(args).arg(input).arg(out).stdout(Stdio::null()).stderr(Stdio::null());
    run_supervised(&mut cmd, None).map_err(|e| e.to_string())?;
    let size = fs::metadata(out).map_err(|e| e.to_string())?.len();
    let sha = crate::disk::sha256_file(out).map_err(|e| e.to_string())?;
    Ok((sha, size))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A raw disk with data and long runs of zeros, packed by each real
    /// tool: unpacked byte for byte (sparse), reused by hash, and a
    /// damaged input is an error naming it, leaving no partial file.
    #[test]
    fn each_packing_unpacks_to_the_same_bytes_and_is_reused() {
        let d = tempfile::tempdir().unwrap();
        let raw = d.path().join("disk.img");
        let mut data = vec![0u8; 3 << 20];
        data[..512].copy_from_slice(&[0x55; 512]);
        data[(2 << 20) + 7..(2 << 20) + 4000].fill(0xa7);
        fs::write(&raw, &data).unwrap();
        let want = hex(&Sha256::digest(&data));
        let cache = d.path().join("cache");
        for (tool, suffix) in [("gzip", "gz"), ("xz", "xz"), ("zstd", "zst"), ("bzip2", "bz2")] {
            if crate::process::which(tool).is_none() {
                panic!("{tool} is needed (scripts/setup.sh installs it)");
            }
            let packed = d.path().join(format!("disk.img.{suffix}"));
            let st = Command::new(tool).arg("-c").arg(&raw).stdout(File::create(&packed).unwrap()).status().unwrap();
            assert!(st.success());
            let mut lines = Vec::new();
            let u = unpack(&packed, &cache, &mut |l| lines.push(l)).unwrap().expect("packed");
            assert_eq!((u.packing.as_str(), u.sha256.as_str(), u.size), (tool, want.as_str(), data.len() as u64));
            assert!(u.path.ends_with("disk.img"), "{}", u.path.display());
            assert_eq!(fs::read(&u.path).unwrap(), data);
            assert!(!u.reused && lines.iter().any(|l| l.contains("unpacking")), "{lines:?}");
            let again = unpack(&packed, &cache, &mut |_| {}).unwrap().unwrap();
            assert!(again.reused);
            assert_eq!(again.path, u.path);
        }
        // A VMware disk: converted to qcow2, the same disk inside.
        let vmdk = d.path().join("appliance.vmdk");
        let st = Command::new("qemu-img").args(["convert", "-q", "-O", "vmdk"]).arg(&raw).arg(&vmdk).status().unwrap();
        assert!(st.success());
        let u = unpack(&vmdk, &cache, &mut |_| {}).unwrap().expect("a vmdk is converted");
        assert_eq!(u.packing, "vmdk");
        assert!(u.path.ends_with("appliance.qcow2"), "{}", u.path.display());
        assert_eq!(crate::disk::detect_format(&u.path).unwrap(), airboot_model::DiskFormat::Qcow2);
        let st = Command::new("qemu-img").args(["compare", "-q"]).arg(&raw).arg(&u.path).status().unwrap();
        assert!(st.success(), "the converted disk differs from the original");
        // Not packed: nothing to do.
        assert!(unpack(&raw, &cache, &mut |_| {}).unwrap().is_none());
        // A truncated xz: the tool's error, no file left behind.
        let bad = d.path().join("broken.img.xz");
        let full = fs::read(d.path().join("disk.img.xz")).unwrap();
        fs::write(&bad, &full[..full.len() / 2]).unwrap();
        let e = unpack(&bad, &cache, &mut |_| {}).unwrap_err();
        assert!(e.contains("broken.img.xz") && e.contains("xz"), "{e}");
        for entry in fs::read_dir(cache.join("inputs")).unwrap().flatten() {
            for f in fs::read_dir(entry.path()).unwrap().flatten() {
                assert!(!f.file_name().to_string_lossy().ends_with(".partial"), "{}", f.path().display());
            }
        }
    }
}
