//! Every parser airboot runs over bytes it does not control, behind one
//! entry point per fuzz target: a guest's serial console, status blocks,
//! the probe protocol (answers, with their statuses and load events),
//! HTTP from the engine's socket, mountinfo, image archive manifests,
//! scenario files, the disk readers (qcow2, MBR/GPT, ext4, erofs, FAT, ELF/PE)
//! and the write log.
//!
//! Each target must return without panicking, within bounded memory and
//! time, whatever the bytes; where a parser has an invariant (a console
//! line split anywhere reads the same, a cleaned line has no escape, an
//! HTTP body stays under its cap) the target asserts it.
//!
//! `tests/corpus.rs` replays `corpus/<target>/` on stable (CI);
//! `libfuzzer/` holds the cargo-fuzz targets (nightly), one file per
//! target calling [`run`].

use airboot_core::console::{self, LineSplitter};
use airboot_core::cut::writelog::WriteLog;
use airboot_core::disk::{ReadAt, detect, erofs::Erofs, exe, ext4::Ext4, fat::Fat, part, qcow2::Qcow2};
use airboot_core::status::Assembler;
use airboot_model::Arch;
use airboot_proto::{http, load, mounts, probe};

/// The targets, by name (the folder of each one's corpus).
pub const TARGETS: &[&str] =
    &["console", "status", "probe", "http", "mounts", "archive", "scenario", "disk", "qcow2", "exe", "writelog"];

/// Run target `name` over `data`. Panics on an unknown name, or when a
/// parser breaks an invariant (what a fuzzer reports).
pub fn run(name: &str, data: &[u8]) {
    match name {
        "console" => console_target(data),
        "status" => status_target(data),
        "probe" => probe_target(data),
        "http" => http_target(data),
        "mounts" => {
            let text = String::from_utf8_lossy(data);
            let m = mounts::parse(&text);
            let _ = mounts::holding(&m, "/var/lib/docker");
        }
        "archive" => archive_target(data),
        "scenario" => {
            let text = String::from_utf8_lossy(data);
            let _ = airboot_core::scenario::parse(&text, std::path::Path::new("scenarios/fuzz.toml"), &|_| true);
        }
        "disk" => exercise_disk(&data.to_vec()),
        "qcow2" => qcow2_target(data),
        "exe" => {
            let _ = exe::elf(data);
            let _ = exe::pe(data);
            let _ = exe::kernel(data);
        }
        "writelog" => {
            // The first 8 bytes choose the disk size the log is read against.
            let (size, log) = split_u64(data);
            let _ = WriteLog::parse(&log.to_vec(), log.len() as u64, size);
        }
        other => panic!("no fuzz target {other:?} (targets: {})", TARGETS.join(", ")),
    }
}

/// The first 8 bytes as a number (zero-padded), and the rest.
fn split_u64(data: &[u8]) -> (u64, &[u8]) {
    let n = data.len().min(8);
    let mut b = [0u8; 8];
    b[..n].copy_from_slice(&data[..n]);
    (u64::from_le_bytes(b), &data[n..])
}

/// The console: the bytes split at points the first byte chooses read the
/// same lines as whole, no line longer than the cap, and a cleaned line
/// carries no escape or control character.
fn console_target(data: &[u8]) {
    const MAX: usize = 256;
    let (step, data) = match data.split_first() {
        Some((s, rest)) => (usize::from(*s).max(1), rest),
        None => (1, data),
    };
    let mut whole = Vec::new();
    let mut s = LineSplitter::new(MAX);
    s.push(data, &mut whole);
    let last = s.finish();
    let mut pieces = Vec::new();
    let mut s2 = LineSplitter::new(MAX);
    for chunk in data.chunks(step) {
        s2.push(chunk, &mut pieces);
        assert!(s2.pending() <= MAX, "the splitter holds {} bytes, over its {MAX}", s2.pending());
    }
    let last2 = s2.finish();
    assert_eq!(whole.len(), pieces.len(), "split every {step} bytes");
    for (a, b) in whole.iter().zip(&pieces) {
        assert_eq!(a.bytes, b.bytes);
        assert!(a.bytes.len() <= MAX);
    }
    assert_eq!(last.map(|l| l.bytes), last2.map(|l| l.bytes));
    for l in &whole {
        let c = console::clean_line(&l.bytes);
        assert!(!c.chars().any(|c| c == '\u{1b}' || (c.is_control() && c != '\t')), "{c:?}");
    }
    let text = String::from_utf8_lossy(data);
    for line in text.lines().take(64) {
        let _ = console::parse_log_line(line);
    }
}

/// Status blocks: every line of the input fed to one assembler.
fn status_target(data: &[u8]) {
    let mut a = Assembler::new();
    for (i, line) in String::from_utf8_lossy(data).lines().enumerate() {
        let _ = a.push(i as f64, line);
    }
}

/// The probe protocol, both directions: each line an answer (the host's
/// side, with statuses and load events) and a request (the probe's side).
fn probe_target(data: &[u8]) {
    for line in data.split(|b| *b == b'\n').take(64) {
        let line = &line[..line.len().min(probe::MAX_LINE)];
        if let Ok(r) = serde_json::from_slice::<probe::Response>(line.trim_ascii()) {
            // What was read writes back and reads the same.
            let again = serde_json::to_vec(&r).expect("an answer serialises");
            let back: probe::Response = serde_json::from_slice(&again).expect("and reads back");
            assert_eq!(back.id, r.id);
        }
        let _ = serde_json::from_slice::<probe::Request>(line);
    }
}

/// HTTP from the engine's socket: the first byte chooses the body cap,
/// which a body read never exceeds.
fn http_target(data: &[u8]) {
    let (max, rest) = match data.split_first() {
        Some((m, rest)) => (usize::from(*m) * 16, rest),
        None => (0, data),
    };
    if let Ok(r) = http::read_response(rest, max) {
        assert!(r.body.len() <= max, "a body of {} bytes over its cap {max}", r.body.len());
    }
}

/// `docker save` / OCI archive manifests: the input up to the first NUL is
/// the manifest, the rest every config file it names.
fn archive_target(data: &[u8]) {
    let (manifest, config) = match data.iter().position(|b| *b == 0) {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &[][..]),
    };
    let manifest = String::from_utf8_lossy(manifest);
    let config = String::from_utf8_lossy(config).to_string();
    let _ = load::archive_images(&manifest, &|_| Some(config.clone()));
    let _ = load::archive_images(&manifest, &|_| None);
}

/// A qcow2 image, then reads at offsets from its own trailing bytes.
fn qcow2_target(data: &[u8]) {
    let Ok(q) = Qcow2::open(data.to_vec()) else {
        return;
    };
    let size = q.size();
    for chunk in data.rchunks(8).take(8) {
        let (off, _) = split_u64(chunk);
        let off = if size == 0 { 0 } else { off % size };
        let _ = q.read_vec(off, (chunk.len() * 512).min(8192));
    }
    exercise_disk(&q);
}

/// Read everything a disk reader offers from `disk`: the boot evidence,
/// the partitions, a file system's root listing and a few lookups.
fn exercise_disk(disk: &dyn ReadAt) {
    let _ = detect::disk_evidence(disk);
    let _ = detect::root_partition(disk, Arch::X86_64);
    let _ = detect::loader_root(disk);
    let _ = part::partitions(disk);
    if let Ok(fs) = Ext4::open(disk) {
        let _ = fs.free_bytes();
        for p in ["/", "/sbin/init", "/etc/os-release", "/var/lib/docker/image/overlay2/repositories.json"] {
            if let Ok(Some(i)) = fs.lookup(p, true) {
                let _ = fs.list(&i);
                let _ = fs.read(&i, 1 << 16);
            }
        }
    }
    if let Ok(fs) = Erofs::open(disk) {
        let _ = airboot_core::inject::stack_units(&fs);
        for p in ["/", "/sbin/init", "/etc/os-release", "/etc/fstab", "/usr/lib/systemd"] {
            if let Ok(Some(i)) = fs.lookup(p, true) {
                let _ = fs.list(&i);
                let _ = fs.read(&i, 1 << 16);
            }
        }
    }
    if let Ok(f) = Fat::open(disk)
        && let Ok(root) = f.list(None)
    {
        for e in root.iter().take(8) {
            let _ = f.read(e, 1 << 16);
            let _ = f.list(Some(e));
        }
        let _ = f.find("/EFI/BOOT/BOOTX64.EFI");
    }
}
